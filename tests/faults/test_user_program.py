"""Kind 6 of issue 26: the user's program is never changed without a word.

- Demos the program already carries are kept, before PLD's worked examples (a warning says so); PLD replaces
  only the demos it put there itself, so re-applying an edited rules.json to a compiled program leaves no
  stale worked example behind.
- A configured adapter (`dspy.configure(adapter=...)`) is the one the student runs under, and rules.json's
  system prompt is rendered with it; one that cannot render the student's prompt is refused before any call.
- A program PLD already compiled is compiled again from its base instructions (a warning says so), so the
  mined rules are not refused as copies of the old rule block after the teacher was paid for them.

The CLI builds its program from the config (no demos, no rule block, no adapter setting), so these cases
are Python-only; `PLD.prepare` is what `compile --dry-run` runs.
"""

import json
import logging

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond

import pld_optim.plan
from pld_optim import PLD, Prompt, Scorer
from pld_optim.evaluation.task import resolve_task
from pld_optim.program import PLD_DEMO
from pld_optim.records import Selection
from pld_optim.rules import DEFAULT_PREAMBLE
from pld_optim.testing import scripted_lm

USER_DEMO = dspy.Example(sentence="A hand-written example about a mosque.", label="religion").with_inputs("sentence")
PREAMBLE = DEFAULT_PREAMBLE.format(label_field="label")


def with_user_demo() -> dspy.Module:
    program = dspy.Predict(Classify)
    program.demos = [USER_DEMO]
    return program


def demo_texts(program: dspy.Module) -> list[str]:
    return [d["sentence"] for d in program.predictors()[0].demos]


def compile_(program, teacher=None, student=None, **kwargs) -> tuple[dspy.Module, PLD]:
    pld = PLD(teacher=teacher or scripted_lm(teacher_respond, "teacher"),
              **{"n_clusters": 1, "max_refine_iters": 0, "contribution": False, **kwargs})
    with dspy.context(lm=student or scripted_lm(student_respond, "student")):
        return pld.compile(program, trainset=make_examples(30), valset=make_examples(12, offset=100)), pld


# -- demos the program carries --------------------------------------------------------------------------------

def test_the_program_s_own_demos_are_kept_before_pld_s(caplog):
    pld_demo = dspy.Example(sentence="Item 1: the she was mentioned here.", label="gender").with_inputs("sentence")
    program = with_user_demo()
    built = Scorer(program, resolve_task(program)).build(Prompt(rules=[], demos=[pld_demo]))
    assert demo_texts(built) == [USER_DEMO.sentence, pld_demo.sentence]  # old main: the user's demo replaced
    assert program.predictors()[0].demos == [USER_DEMO]  # build works on a copy

    caplog.set_level(logging.WARNING, logger="pld_optim")
    given = with_user_demo()
    own = given.predictors()[0]
    signature, instructions = own.signature, own.signature.instructions
    compiled, pld = compile_(given, max_demos=2, search={"n_trials": 6, "minibatch_size": 6})
    shown = [d["sentence"] for d in (pld.rules_.prompt().demos or [])]
    assert shown and demo_texts(compiled) == [USER_DEMO.sentence, *shown]
    assert PREAMBLE in compiled.predictors()[0].signature.instructions
    assert "carries 1 demo" in caplog.text and "kept" in caplog.text
    # The program given to compile is untouched: its one demo, unmarked (PLD marks only copies of its own),
    # and its signature and instructions (`.instructions =` on the shared class would leak the rule block).
    assert compiled is not given and given.predictors()[0] is own
    assert own.demos == [USER_DEMO] and own.demos[0].get(PLD_DEMO) is None
    assert dict(own.demos[0].items()) == {"sentence": USER_DEMO.sentence, "label": "religion"}
    assert own.signature is signature and own.signature.instructions == instructions == Classify.__doc__.strip()
    assert PREAMBLE not in Classify.instructions


def test_reapplying_rules_replaces_only_the_demos_pld_put_there(tmp_path):
    compiled, pld = compile_(with_user_demo())
    rules = pld.rules_
    rule = next(r for r in rules.rules if r.examples)
    with_demo = rules.model_copy(update={"selection": [Selection(rule_id=rule.id, demos=[0])]})
    shown = pld_optim.plan.apply_rules(compiled, with_demo)
    assert demo_texts(shown) == [USER_DEMO.sentence, rule.examples[0].inputs["sentence"]]
    again = pld_optim.plan.apply_rules(shown, with_demo)  # applied twice: no demo twice
    assert demo_texts(again) == demo_texts(shown)
    # A reviewer drops the worked example: the compiled program keeps the user's demo and loses PLD's (old
    # main kept the dropped worked example, since a prompt without demos left the program's demos alone).
    unshown = with_demo.model_copy(update={"selection": [Selection(rule_id=rule.id)]})
    without = pld_optim.plan.apply_rules(shown, unshown)
    assert demo_texts(without) == [USER_DEMO.sentence]
    # The mark that tells PLD's demos apart survives program.json.
    path = tmp_path / "program.json"
    shown.save(str(path))
    loaded = dspy.Predict(Classify)
    loaded.load(str(path))
    assert demo_texts(pld_optim.plan.apply_rules(loaded, rules)) == [USER_DEMO.sentence]


# -- the adapter the student runs under -----------------------------------------------------------------------

def json_student(system: str, user: str) -> str:
    return json.dumps(student_respond(system, user))


def test_a_configured_adapter_is_used_and_renders_the_system_prompt():
    student = scripted_lm(json_student, "student")
    with dspy.context(adapter=dspy.JSONAdapter()):
        compiled, pld = compile_(dspy.Predict(Classify), student=student)
    signature = compiled.predictors()[0].signature
    assert pld.rules_.system_prompt == dspy.JSONAdapter().format_system_message(signature)
    assert "JSON" in pld.rules_.system_prompt  # old main: LabelAdapter's (ChatAdapter's) system prompt
    sent = {r.system for r in student._engine_spec.requests}
    assert dspy.JSONAdapter().format_system_message(signature) in sent  # the student got what rules.json shows
    assert pld.rules_.context["adapter"] == "JSONAdapter"
    assert pld.score_.macro_f1 == pytest.approx(1.0)


def test_an_adapter_given_to_pld_still_wins_over_the_configured_one():
    with dspy.context(adapter=dspy.JSONAdapter()):
        _, pld = compile_(dspy.Predict(Classify), adapter=dspy.ChatAdapter())
    assert "JSON" not in pld.rules_.system_prompt and pld.rules_.context["adapter"] == "ChatAdapter"


def test_an_adapter_that_cannot_render_the_prompt_is_refused_before_any_call():
    teacher, student = scripted_lm(teacher_respond, "teacher"), scripted_lm(student_respond, "student")
    pld = PLD(teacher=teacher, n_clusters=1, max_refine_iters=0)
    with dspy.context(lm=student, adapter=dspy.TwoStepAdapter(extraction_model=student)):
        with pytest.raises(ValueError, match=r"TwoStepAdapter.*cannot render the student's prompt"):
            pld.prepare(dspy.Predict(Classify), make_examples(30), make_examples(12, offset=100))
        with pytest.raises(ValueError, match=r"TwoStepAdapter"):
            pld.compile(dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))
    assert teacher._engine_spec.calls == 0 and student._engine_spec.calls == 0
    with dspy.context(adapter=object()), pytest.raises(ValueError, match=r"not a dspy\.Adapter"):
        pld.prepare(dspy.Predict(Classify), make_examples(30), make_examples(12, offset=100))


# -- a program PLD already compiled ---------------------------------------------------------------------------

def test_a_program_pld_compiled_is_compiled_again_from_its_base(caplog):
    first, _ = compile_(dspy.Predict(Classify))
    assert PREAMBLE in first.predictors()[0].signature.instructions
    caplog.set_level(logging.WARNING, logger="pld_optim")
    again, pld = compile_(first)
    instructions = again.predictors()[0].signature.instructions
    assert instructions.count(PREAMBLE) == 1 and instructions == pld.rules_.render_instructions()
    assert pld.rules_.base_instructions == Classify.__doc__.strip()
    assert not [r for r in pld.rules_.refusals if r.gate == "copies"]  # old main: every mined rule, a copy
    assert len(pld.rules_.active_rules()) >= 2
    assert "already holds a rule block" in caplog.text


def test_the_dry_run_strips_the_rule_block_with_no_lm_call(caplog):
    first, _ = compile_(dspy.Predict(Classify))
    teacher, student = scripted_lm(teacher_respond, "teacher"), scripted_lm(student_respond, "student")
    caplog.set_level(logging.WARNING, logger="pld_optim")
    with dspy.context(lm=student):
        plan = PLD(teacher=teacher, n_clusters=1).prepare(first, make_examples(30), make_examples(12, offset=100))
    assert plan.task.signature.instructions == Classify.__doc__.strip()
    assert PREAMBLE in first.predictors()[0].signature.instructions  # the user's program is untouched
    assert "already holds a rule block" in caplog.text
    assert f"its {len(first.pld_rules.active_rules())} rules" in caplog.text
    assert teacher._engine_spec.calls == 0 and student._engine_spec.calls == 0
