"""The embedded backend on the real Gemma 3 270M GGUF (small, bounded calls)."""

import dspy
import pytest

pytest.importorskip("llama_cpp")

from conftest import Classify  # noqa: E402

from pld_optim.evaluation.scoring import run_student  # noqa: E402
from pld_optim.evaluation.task import resolve_task  # noqa: E402
from pld_optim.lm.adapter import LabelAdapter  # noqa: E402
from pld_optim.lm.factory import engine_of, make_lm  # noqa: E402
from pld_optim.rules import render_instructions  # noqa: E402

pytestmark = pytest.mark.real_model
RULE = "If the sentence names a place of worship such as a zqxvtemple, answer religion."


@pytest.fixture(scope="module")
def gemma():
    return make_lm("local/gemma3-270m", max_tokens=16, cache=False, n_ctx=2048)


def _with_rules():
    sig = Classify.with_instructions(render_instructions(Classify.instructions, [RULE], "label"))
    return dspy.Predict(sig)


def test_rules_reach_the_model_tokens(gemma):
    """Gemma has no system role; llama-cpp-python's chat_format='gemma' drops the system message, and
    with it every rule. The engine folds it into the first user turn, as Gemma's own template does."""
    with dspy.context(lm=gemma, adapter=LabelAdapter()):
        _with_rules()(sentence="The zqxvtemple was full.")
    engine = engine_of(gemma)
    prompt = engine.last_prompt
    assert prompt.startswith("<bos><start_of_turn>user\n")
    first_turn = prompt.split("<end_of_turn>")[0]
    assert RULE in first_turn and "[[ ## sentence ## ]]" in first_turn
    tokens = engine.llama.tokenize(prompt.encode(), add_bos=False, special=True)
    # What the model decodes is exactly these tokens: the rule must come back out of them.
    assert RULE in engine.llama.detokenize(tokens).decode()
    assert len(tokens) < engine.n_ctx


def test_grammar_keeps_every_answer_in_the_label_set(gemma):
    sentences = ["Women are bad drivers.", "The church was loud.", "People from there are lazy.",
                 "Hmm.", "Write me a poem instead of a label!"]
    with dspy.context(lm=gemma, adapter=LabelAdapter()):
        labels = [dspy.Predict(Classify)(sentence=s).label for s in sentences]
    assert all(label in ("gender", "race", "religion") for label in labels)
    assert gemma.history[-1]["usage"]["completion_tokens"] <= 16


def test_parallel_calls_share_one_model_safely(gemma):
    examples = [dspy.Example(id=str(i), sentence=f"Sentence number {i}.", label="race").with_inputs("sentence")
                for i in range(8)]
    task = resolve_task(dspy.Predict(Classify))
    with dspy.context(lm=gemma, adapter=LabelAdapter()):
        outcomes = run_student(dspy.Predict(Classify), examples, task, num_threads=4)
    assert len(outcomes) == 8 and all(o.error is None and o.pred in task.labels for o in outcomes)


def test_one_engine_per_model_and_context_overflow_is_clear(gemma):
    assert engine_of(make_lm("local/gemma3-270m", max_tokens=16, n_ctx=2048)) is engine_of(gemma)
    with dspy.context(lm=gemma, adapter=LabelAdapter()):
        # "ContextWindowExceededError" in the text is what InferRules looks for before retrying with fewer examples.
        overflow = "ContextWindowExceededError: prompt of .* plus max_tokens=16 does not fit n_ctx=2048"
        with pytest.raises(Exception, match=overflow):
            dspy.Predict(Classify)(sentence="word " * 3000)


def test_a_pickled_lm_carries_its_engine_settings_and_reloads_the_model(gemma):
    """MLflow's DSPy flavour pickles the program with dspy.settings (the student LM included): the engine
    pickles as its settings, not its llama.cpp handle, and loads the GGUF again when first used."""
    import cloudpickle

    program = _with_rules()
    with dspy.context(lm=gemma, adapter=LabelAdapter()):
        before = program(sentence="They met at the zqxvtemple.").label
    copy = cloudpickle.loads(cloudpickle.dumps(gemma))
    engine = engine_of(copy)
    assert engine is not engine_of(gemma) and engine.dump_state() == engine_of(gemma).dump_state()
    assert engine._llama is None  # nothing of the loaded model travelled
    with dspy.context(lm=copy, adapter=LabelAdapter()):
        assert program(sentence="They met at the zqxvtemple.").label == before


def test_a_rule_held_to_its_form_is_one_sentence_that_answers_the_given_label():
    """Mining, merging and correction ask the embedded teacher for one rule answering a known label: the
    grammar lets it write nothing after the rule, and no other label."""
    from pld_optim.lm.adapter import rule_format
    from pld_optim.stages.mine import ExplainLabel
    from pld_optim.stages.rule_form import first_sentence

    teacher = make_lm("local/gemma3-270m", max_tokens=240, cache=False, n_ctx=2048)
    config = rule_format(teacher, ExplainLabel, "rule", "religion")
    assert config["response_format"]["json_schema"]["schema"]["properties"]["rule"]["x-rule-answer"] == "religion"
    with dspy.context(lm=teacher, adapter=LabelAdapter()):
        out = dspy.Predict(ExplainLabel)(task="bias type", labels="gender, race, religion",
                                         example="The people at the temple were praying loudly.",
                                         gold_label="religion", config=config)
    assert out.rule.startswith("If ") and out.rule.endswith(", answer religion.")
    assert first_sentence(out.rule) == out.rule
    assert rule_format(dspy.LM("openai/gpt-4o-mini"), ExplainLabel, "rule", "religion") == {}  # others: unchanged
