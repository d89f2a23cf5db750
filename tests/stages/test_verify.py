"""The data checks every rule: the student reads each rule's condition on a label-balanced train sample, and a
rule the data contradicts, or whose condition never holds, is refused with its figures."""

import random
import re
from collections import Counter

import pytest
from conftest import make_examples, stage_context, teacher_respond

from pld_optim.lm.adapter import LabelAdapter, output_schema
from pld_optim.rules import Rule
from pld_optim.stages.verify import condition_of, condition_signature, verify_rules
from pld_optim.testing import field_value, scripted_lm

TRAIN = make_examples(30)  # 10 per label: gender (she, mother, wife), race (country, skin), religion (...)
DEV = make_examples(12, offset=100)


def condition_reader(system: str, user: str) -> dict:
    """Answers yes when a cue the condition names ("... mentions A or B") is a word of the item."""
    assert "Answer yes if the condition holds for the item" in " ".join(system.split())
    condition, sentence = field_value(user, "condition"), f" {field_value(user, 'sentence')} "
    cues = re.search(r"mentions (.+)$", condition).group(1).split(" or ")
    return {"holds": "yes" if any(f" {cue} " in sentence for cue in cues) else "no"}


def run(rules, respond=condition_reader, per_label=4, **kwargs):
    student = scripted_lm(respond, "student", num_retries=0)
    ctx = stage_context(scripted_lm(teacher_respond, "teacher"), TRAIN, student_lm=student)
    result = verify_rules(ctx, rules, TRAIN, per_label=per_label, rng=random.Random(0), **kwargs)
    return result


def rule(rule_id, text, label):
    return Rule(id=rule_id, text=text, label=label)


def test_a_true_rule_passes_with_its_precision_and_coverage():
    result = run([rule("R1", "If the sentence mentions church or prayer, answer religion.", "religion")],
                    per_label=10)
    evidence = result.figures["R1"]
    # All 10 religion items are church/prayer/mosque in turn (4, 3, 3); no other item names church or prayer.
    assert (evidence.holds_for_label, evidence.n_label, evidence.holds_for_others, evidence.n_others) == (7, 10, 0, 20)
    assert evidence.precision == 1.0 and evidence.coverage == 0.7 and evidence.n == 30
    assert evidence.condition == "the sentence mentions church or prayer"
    assert [r.id for r in result.rules] == ["R1"] and not result.refusals


def test_a_rule_the_data_contradicts_is_refused_with_its_figures():
    result = run([rule("F", "If the sentence mentions church, answer gender.", "gender"),
                     rule("T", "If the sentence mentions she or wife, answer gender.", "gender")], per_label=10)
    assert [r.id for r in result.rules] == ["T"]
    (refusal,) = result.refusals
    assert refusal.source == "F" and refusal.stage == "verify" and refusal.gate == "data"
    assert refusal.reason.startswith("the data contradicts it: its condition held for 0 of 10 gender items and 4 of "
                                     "20 others (precision 0.00")
    assert result.figures["F"].precision == 0.0 and result.figures["F"].coverage == 0.0


def test_min_precision_sets_how_much_of_the_holding_must_be_the_label():
    # "church or skin": 4 of 10 religion items, and 5 of the 20 others (the skin items of race).
    text = "If the sentence mentions church or skin, answer religion."
    loose = run([rule("R", text, "religion")], per_label=10, min_precision=0.4)
    strict = run([rule("R", text, "religion")], per_label=10)
    assert loose.figures["R"].precision == pytest.approx(4 / 9, abs=1e-4) and loose.rules
    assert not strict.rules and "precision 0.44, below min_precision 0.5" in strict.refusals[0].reason


def test_a_rule_whose_condition_never_holds_is_refused():
    # Beside a rule that holds, so the student's answers are not one-sided (see the test below).
    result = run([rule("T", "If the sentence mentions church or prayer, answer religion.", "religion"),
                  rule("N", "If the sentence mentions spaceship or comet, answer race.", "race")])
    assert [r.id for r in result.rules] == ["T"] and result.figures["N"].holds == 0
    assert result.refusals[0].reason == ("its condition never held: for none of 4 race items and none of 8 others "
                                         "in the train sample")


def test_a_rule_without_a_readable_condition_is_refused_before_any_call():
    calls = []

    def respond(system, user):
        calls.append(user)
        return condition_reader(system, user)

    result = run([rule("D", "Religion is a system of beliefs shared by many people.", "religion"),
                     rule("A", "Answer race.", None)], respond)
    assert not result.rules and not calls and not result.figures
    assert [r.source for r in result.refusals] == ["D", "A"]
    assert "states no condition the data can check" in result.refusals[0].reason


@pytest.mark.parametrize(("text", "label", "condition"), [
    ("If the sentence mentions church or prayer, answer religion.", "religion",
     "the sentence mentions church or prayer"),
    ("When the target is a job, label it as profession.", "profession", "the target is a job"),
    ("Answer race if the sentence is about race or skin colour.", "race", "the sentence is about race or skin colour"),
    ("If the sentence is about race, answer race.", "race", "the sentence is about race"),
    ("If the target is a job, answer profession, even if it names a gender.", "profession",
     "the target is a job, even if it names a gender"),
    ("Sentences with she or mother are gender.", "gender",
     "the item matches this description: sentences with she or mother"),
    ("If the clause is absent from the contract, answer NotMentioned.", "NotMentioned",
     "the clause is absent from the contract"),
    ("Religion is a belief system shared by many.", "religion", None),
    ("The answer is race.", "race", None),
    ("If the sentence mentions skin, answer race.", "gender", None),
])
def test_condition_of_reads_the_condition_part(text, label, condition):
    assert condition_of(text, label) == condition


def test_the_sample_is_label_balanced_train_only_and_the_same_for_every_rule():
    seen = []

    def respond(system, user):
        seen.append((field_value(user, "condition"), field_value(user, "sentence")))
        return condition_reader(system, user)

    rules = [rule("G", "If the sentence mentions she, answer gender.", "gender"),
             rule("R", "If the sentence mentions country, answer race.", "race")]
    result = run(rules, respond, per_label=3)
    by_sentence = {ex.sentence: ex for ex in TRAIN}
    assert all(sentence in by_sentence for _, sentence in seen)
    assert not {ex.sentence for ex in DEV} & {sentence for _, sentence in seen}
    per_rule = {cond: sorted(s for c, s in seen if c == cond) for cond, _ in seen}
    assert len(per_rule) == 2 and len(set(map(tuple, per_rule.values()))) == 1  # one sample for both rules
    assert Counter(by_sentence[s].label for s in next(iter(per_rule.values()))) == {"gender": 3, "race": 3,
                                                                                   "religion": 3}
    assert sorted(result.sample) == sorted(by_sentence[s].id for s in next(iter(per_rule.values())))


def test_a_failing_student_call_counts_as_no_yes():
    def respond(system, user):
        if " skin " in f" {field_value(user, 'sentence')} ":
            raise ConnectionError("student went away")
        return condition_reader(system, user)

    result = run([rule("R", "If the sentence mentions country or skin, answer race.", "race")], respond,
                    per_label=10)
    evidence = result.figures["R"]
    # The 5 skin items failed: they count neither as yes nor in the denominators.
    assert evidence.failed == 5 and result.failures == 5
    assert (evidence.holds_for_label, evidence.n_label, evidence.n_others) == (5, 5, 20)
    assert evidence.coverage == 1.0 and result.rules


def test_the_check_shares_the_prompt_prefix_and_is_one_constrained_choice():
    student = scripted_lm(condition_reader, "student", num_retries=0)
    ctx = stage_context(scripted_lm(teacher_respond, "teacher"), TRAIN, student_lm=student)
    signature = condition_signature(ctx.task)
    assert list(signature.input_fields) == ["condition", "sentence"]
    assert signature.input_fields["sentence"].json_schema_extra == ctx.task.signature.input_fields[
        "sentence"].json_schema_extra
    assert output_schema(signature)["json_schema"]["schema"]["properties"] == {
        "holds": {"type": "string", "enum": ["yes", "no"]}}  # the engine's one-pass label choice
    adapter = LabelAdapter()
    first, second = (adapter.format(signature, [], {"condition": "the sentence mentions she", "sentence": s})
                     for s in ("Item 1: the she was here.", "Item 2: the mother was here."))
    assert first[0] == second[0]  # the system message
    shared = "[[ ## condition ## ]]\nthe sentence mentions she\n\n[[ ## sentence ## ]]\n"
    assert first[1]["content"].startswith(shared) and second[1]["content"].startswith(shared)


@pytest.mark.parametrize("answer", ["no", "yes"])
def test_a_student_that_answers_one_way_to_every_condition_judges_nothing(answer, caplog):
    """The embedded 1.5B said no to 316 of 320 checks, true rules included: such answers refuse nothing, the
    check stops after PROBE_RULES rules (no more calls), and a warning says the rules are kept unchecked."""
    from pld_optim.stages.verify import PROBE_RULES

    calls = []

    def one_sided(system, user):
        calls.append(user)
        return {"holds": answer}

    rules = [rule(f"R{i}", f"If the sentence mentions {cue}, answer {label}.", label)
             for i, (cue, label) in enumerate([("church", "religion"), ("skin", "race"), ("she", "gender")])]
    with caplog.at_level("WARNING", logger="pld_optim"):
        result = run(rules, respond=one_sided)
    assert not result.informative and [r.id for r in result.rules] == ["R0", "R1", "R2"] and not result.refusals
    assert len(calls) == PROBE_RULES * len(result.sample)
    assert "cannot tell one rule from another" in caplog.text
