import dspy
import pytest
from conftest import Classify
from dspy.utils.exceptions import AdapterParseError

from pld_optim.lm.adapter import LabelAdapter, output_schema
from pld_optim.lm.engine import CHAT_FORMAT_SCHEMA
from pld_optim.testing import ScriptedEngine

REMINDER = "Respond with the corresponding output fields"


class Mined(dspy.Signature):
    """Explain."""

    example: str = dspy.InputField()
    rationale: str = dspy.OutputField()
    rules: list[str] = dspy.OutputField()


@pytest.mark.parametrize("completion, label", [
    ("[[ ## label ## ]]\nRace\n\n[[ ## completed ## ]]", "race"),
    ("The label is religion.", "religion"),
    ('{"label": "gender"}', "gender"),
    ("[[ ## label ## ]]\n  'race'  ", "race"),
])
def test_forgiving_parse_recovers_labels(completion, label):
    assert LabelAdapter().parse(Classify, completion) == {"label": label}


def test_unrecoverable_answers_still_raise():
    with pytest.raises(AdapterParseError):
        LabelAdapter().parse(Classify, "gender or race, hard to say")


def test_recovers_json_lists_and_text_fields():
    out = LabelAdapter().parse(Mined, '{"rationale": "because", "rules": ["r1", "r2"]}')
    assert out == {"rationale": "because", "rules": ["r1", "r2"]}


def test_schema_covers_labels_text_and_lists():
    schema = output_schema(Mined)["json_schema"]
    assert schema["name"] == CHAT_FORMAT_SCHEMA
    assert schema["schema"]["properties"]["rules"] == {"type": "array", "items": {"type": "string"}}
    assert output_schema(Classify)["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "gender", "race", "religion"]


class FormatAwareEngine(ScriptedEngine):
    supports_response_format = True


def _respond(system, user):
    return {"label": "race"}


def test_schema_is_sent_only_to_backends_that_honour_it():
    seen = []
    aware = FormatAwareEngine(_respond)
    plain = ScriptedEngine(_respond)
    for engine in (aware, plain):
        lm = dspy.LM("local/x", engine=engine, cache=False)
        with dspy.context(lm=lm, adapter=LabelAdapter()):
            assert dspy.Predict(Classify)(sentence="s").label == "race"
        seen.append(engine.requests[-1].config.response_format)
    assert seen[0]["name"] == CHAT_FORMAT_SCHEMA and seen[1] is None


def _sent(adapter: dspy.Adapter, engine: ScriptedEngine) -> tuple[str, list[tuple[str, str]]]:
    """The system text and the turns the engine received for one prediction."""
    lm = dspy.LM("local/x", engine=engine, cache=False)
    with dspy.context(lm=lm, adapter=adapter):
        dspy.Predict(Classify)(sentence="The mosque was full.")
    request = engine.requests[-1]
    return request.system, [(m.role, m.text) for m in request.messages]


def test_the_student_receives_chat_adapters_prompt_without_the_reminder_only_when_constrained():
    """What reaches the engine, not the method LabelAdapter inherits: the system message is ChatAdapter's byte
    for byte; the user turn is ChatAdapter's, minus its closing format reminder when a schema constrains it."""
    chat_system, chat_turns = _sent(dspy.ChatAdapter(), ScriptedEngine(_respond))
    assert chat_system == dspy.ChatAdapter().format_system_message(Classify)
    (role, chat_user), = chat_turns
    assert role == "user" and REMINDER in chat_user

    # Unconstrained (no schema support): everything the student sees is ChatAdapter's.
    assert _sent(LabelAdapter(), ScriptedEngine(_respond)) == (chat_system, chat_turns)
    # Constrained: the same system message; the user turn ends before the reminder.
    system, [(role, user)] = _sent(LabelAdapter(), FormatAwareEngine(_respond))
    assert system == chat_system and role == "user"
    assert REMINDER not in user and chat_user.startswith(user) and chat_user[len(user):].strip().startswith(REMINDER)
    # reminder=True keeps it under a grammar too; constrain=False sends no schema and keeps it.
    assert _sent(LabelAdapter(reminder=True), FormatAwareEngine(_respond)) == (chat_system, chat_turns)
    engine = FormatAwareEngine(_respond)
    assert _sent(LabelAdapter(constrain=False), engine) == (chat_system, chat_turns)
    assert engine.requests[-1].config.response_format is None


def test_the_system_message_of_a_rule_prompt_is_chat_adapters():
    """Scorer.system_prompt (what rules.json records) is the message a constrained student receives."""
    from pld_optim.evaluation.scorer import Scorer
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.rules import Prompt

    engine = FormatAwareEngine(_respond)
    program = dspy.Predict(Classify)
    scorer = Scorer(program, resolve_task(program), lm=dspy.LM("local/x", engine=engine, cache=False))
    prompt = Prompt(rules=["If the sentence mentions a mosque, answer religion."])
    scorer.outcomes(prompt, [dspy.Example(id="1", sentence="The mosque.", label="religion").with_inputs("sentence")])
    sent = engine.requests[-1].system
    assert sent == scorer.system_prompt(prompt)
    assert sent == dspy.ChatAdapter().format_system_message(scorer.build(prompt).predictors()[0].signature)
    assert "1. If the sentence mentions a mosque, answer religion." in sent
