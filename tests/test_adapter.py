from typing import Literal

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from pld_optim.adapter import CHAT_FORMAT_SCHEMA, LabelAdapter, output_schema
from pld_optim.testing import ScriptedEngine


class Sig(dspy.Signature):
    """Classify."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


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
    assert LabelAdapter().parse(Sig, completion) == {"label": label}


def test_unrecoverable_answers_still_raise():
    with pytest.raises(AdapterParseError):
        LabelAdapter().parse(Sig, "gender or race, hard to say")


def test_recovers_json_lists_and_text_fields():
    out = LabelAdapter().parse(Mined, '{"rationale": "because", "rules": ["r1", "r2"]}')
    assert out == {"rationale": "because", "rules": ["r1", "r2"]}


def test_schema_covers_labels_text_and_lists():
    schema = output_schema(Mined)["json_schema"]
    assert schema["name"] == CHAT_FORMAT_SCHEMA
    assert schema["schema"]["properties"]["rules"] == {"type": "array", "items": {"type": "string"}}
    assert output_schema(Sig)["json_schema"]["schema"]["properties"]["label"]["enum"] == ["gender", "race", "religion"]


class FormatAwareEngine(ScriptedEngine):
    supports_response_format = True


def test_schema_is_sent_only_to_backends_that_honour_it():
    seen = []

    def respond(system, user):
        return {"label": "race"}

    aware = FormatAwareEngine(respond)
    plain = ScriptedEngine(respond)
    for engine in (aware, plain):
        lm = dspy.LM("local/x", engine=engine, cache=False)
        with dspy.context(lm=lm, adapter=LabelAdapter()):
            assert dspy.Predict(Sig)(sentence="s").label == "race"
        seen.append(engine.requests[-1].config.response_format)
    assert seen[0]["name"] == CHAT_FORMAT_SCHEMA and seen[1] is None


def test_system_prompt_is_byte_identical_to_chat_adapter():
    assert LabelAdapter().format_system_message(Sig) == dspy.ChatAdapter().format_system_message(Sig)
