import dspy
import pytest
from conftest import Classify, make_examples

from pld_optim import Scorer
from pld_optim.evaluation.scoring import INVALID, Outcome, run_student, score_outcomes
from pld_optim.evaluation.task import content_key, overlap, resolve_task, validate_examples
from pld_optim.rules import Prompt
from pld_optim.testing import rule_follower, scripted_lm


def test_label_set_comes_from_literal_or_labels_argument():
    assert resolve_task(dspy.Predict(Classify)).labels == ["gender", "race", "religion"]
    assert resolve_task(dspy.Predict("text -> label"), labels=["a", "b"]).labels == ["a", "b"]
    with pytest.raises(ValueError, match="not a Literal"):
        resolve_task(dspy.Predict("text -> label"))
    with pytest.raises(ValueError, match="differ from the Literal"):
        resolve_task(dspy.Predict(Classify), labels=["gender", "race"])


def test_multi_predictor_programs_get_a_clear_error():
    class Two(dspy.Module):
        def __init__(self):
            super().__init__()
            self.a = dspy.Predict(Classify)
            self.b = dspy.Predict(Classify)

    with pytest.raises(ValueError, match="one predictor.*a, b"):
        resolve_task(Two())
    # ChainOfThought holds one predictor; its extra `reasoning` output is not the label.
    assert resolve_task(dspy.ChainOfThought(Classify)).label_field == "label"


@pytest.mark.parametrize("row, message", [
    (dict(id="x", sentence="s", label="politics"), "row 1 has label 'politics'.*not one of"),
    (dict(id="x", label="race"), r"row 1 has no value \(or only whitespace\) for field\(s\) \['sentence'\]"),
    (dict(id="x", sentence=" \n\t", label="race"),
     r"row 1 has no value \(or only whitespace\) for field\(s\) \['sentence'\]"),
])
def test_bad_rows_are_named(row, message):
    task = resolve_task(dspy.Predict(Classify))
    rows = [make_examples(1)[0], dspy.Example(**row).with_inputs("sentence")]
    with pytest.raises(ValueError, match=message):
        validate_examples(rows, task, "train")


def test_empty_split_and_duplicate_ids_are_errors():
    task = resolve_task(dspy.Predict(Classify))
    with pytest.raises(ValueError, match="dev split is empty"):
        validate_examples([], task, "dev")
    ex = make_examples(1)[0]
    with pytest.raises(ValueError, match="rows 0 and 1 share the id"):
        validate_examples([ex, ex], task, "train")


def test_macro_f1_is_corpus_level_not_a_mean_of_examples():
    labels = ["a", "b"]
    outcomes = [Outcome(example_id=str(i), gold="a", pred="a") for i in range(9)]
    outcomes.append(Outcome(example_id="9", gold="b", pred="a"))
    score = score_outcomes(outcomes, labels)
    assert score.accuracy == pytest.approx(0.9)  # what a per-example mean would report
    assert score.macro_f1 == pytest.approx((2 * 9 / 19 + 0) / 2)  # class b has F1 0


def test_out_of_set_answers_count_wrong_and_are_reported():
    score = score_outcomes([Outcome(example_id="1", gold="a", pred="zzz"),
                            Outcome(example_id="2", gold="b", pred="b")], ["a", "b"])
    assert score.invalid == 1 and score.accuracy == 0.5
    assert set(score.per_class_f1) == {"a", "b"}


def test_student_failures_never_abort_the_run():
    def respond(system, user):
        n = int(user.split("Item ")[1].split(":")[0])
        return "no idea" if n % 3 == 0 else {"label": "race"}  # garbage the forgiving parser cannot map

    # Every third of 30 examples fails: well past dspy's default max_errors=10.
    task = resolve_task(dspy.Predict(Classify))
    with dspy.context(lm=scripted_lm(respond)):
        outcomes = run_student(dspy.Predict(Classify), make_examples(30), task, num_threads=2)
    assert len(outcomes) == 30
    assert sum(o.error is not None for o in outcomes) == 10
    assert all(o.pred == "race" for o in outcomes if o.error is None)


def test_overlap_compares_inputs_not_ids():
    a = dspy.Example(id="1", sentence="The  mother cooked.", label="gender").with_inputs("sentence")
    b = dspy.Example(id="2", sentence="The mother cooked. ", label="gender").with_inputs("sentence")
    c = dspy.Example(id="3", sentence="The church was full.", label="religion").with_inputs("sentence")
    assert content_key(a, ["sentence"]) == content_key(b, ["sentence"]) != content_key(c, ["sentence"])
    assert overlap({"train": [a, c], "dev": [b]}, ["sentence"]) == {"train/dev": 1}
    assert overlap({"train": [a], "dev": [c]}, ["sentence"]) == {}


def test_the_scorer_builds_scores_and_counts_one_prompt():
    program = dspy.Predict(Classify)
    task = resolve_task(program)
    lm = scripted_lm(rule_follower(default="race"))
    scorer = Scorer(program, task, lm=lm)
    examples = make_examples(6)  # gender, religion, race, twice
    rule = "If the sentence mentions she or mother, answer gender."
    prompt = Prompt(rules=[rule])
    assert rule in scorer.system_prompt(prompt) and rule not in scorer.system_prompt(Prompt())
    assert scorer.prompt_text(prompt).startswith(scorer.system_prompt(prompt))
    assert program.signature.instructions == Classify.instructions  # every prompt goes to a copy
    zero, ruled = scorer.score(Prompt(), examples), scorer.score(prompt, examples)
    assert zero.per_class_f1["gender"] == 0 and ruled.per_class_f1["gender"] == 1.0
    assert scorer.calls == 12 and scorer.invalid == 0
    # Demos are shown before the example and cost prompt tokens.
    demo = dspy.Example(sentence="Her mother cooked.", label="gender").with_inputs("sentence")
    with_demo = Prompt(rules=[rule], demos=[demo])
    shown = scorer.build(with_demo).predictors()[0].demos  # marked as PLD's, the mark never shown to the model
    assert [d.without("pld_demo") for d in shown] == [demo] and all(d["pld_demo"] for d in shown)
    assert "pld_demo" not in scorer.prompt_text(with_demo)
    assert "Her mother cooked." in scorer.prompt_text(with_demo)
    assert scorer.count_tokens(with_demo) > scorer.count_tokens(prompt) > scorer.count_tokens(Prompt())


def test_answers_outside_the_labels_are_counted_invalid():
    program = dspy.Predict("sentence -> label")
    task = resolve_task(program, labels=["gender", "race"])
    scorer = Scorer(program, task, lm=scripted_lm(lambda s, u: {"label": "politics"}))
    score = scorer.score(Prompt(), [dspy.Example(id="1", sentence="s", label="race").with_inputs("sentence")])
    assert score.invalid == 1 and scorer.invalid == 1 and score.confusion == [[0, 0, 0], [0, 0, 1]]
    assert INVALID not in task.labels
