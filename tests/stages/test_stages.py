import json
import random

import dspy
import numpy as np
import pytest
from conftest import LABELS, PAPER, Classify, FixedScorer, make_examples, stage_context, teacher_respond

from pld_optim import PLD
from pld_optim.evaluation.scoring import Outcome
from pld_optim.files import JsonlLog
from pld_optim.records import MinedRule
from pld_optim.rules import Confusion, Rule
from pld_optim.stages.cluster import TfidfEmbedder, cluster_vectors
from pld_optim.stages.gates import copies
from pld_optim.stages.merge import dedupe
from pld_optim.stages.mine import contrastive_sample, mine
from pld_optim.stages.refine import refine
from pld_optim.stages.rule_form import loops
from pld_optim.testing import ScriptedEngine

CLUSTERING = dict(n_clusters=None, max_clusters=6, eps=0.4, min_samples=6, min_cluster_size=2, seed=0)


def _teacher(respond, **kwargs):
    engine = ScriptedEngine(respond)
    return engine, dspy.LM("local/t", engine=engine, cache=False, **kwargs)


def test_mining_sees_the_gold_label_and_records_failures():
    calls = []

    def respond(system, user):
        calls.append(user)
        if "Item 4:" in user:
            raise ConnectionError("teacher went away")
        if "Item 5:" in user:
            return {"rationale": "hm", "rule": ""}
        return teacher_respond(system, user)

    examples = make_examples(6)
    _, lm = _teacher(respond, num_retries=0)
    result = mine(stage_context(lm, examples, num_threads=2), examples)
    mined = result.mined
    assert [m.example_id for m in mined] == [e.id for e in examples]
    assert all(f"[[ ## gold_label ## ]]\n{e.label}" in next(c for c in calls if f"Item {i}:" in c)
               for i, e in enumerate(examples))
    assert "teacher went away" in mined[4].error and mined[4].refusal is None
    assert mined[5].error == "teacher returned no rule"
    assert len(result.good()) == 4 and result.failures == 2 and not result.refusals
    assert "mentions a gender cue such as she" in mined[0].rule and mined[0].rationale
    assert mined[0].inputs == "sentence: " + examples[0].sentence  # provenance reads without the data


def test_contrastive_mining_shows_the_teacher_the_students_wrong_answer():
    calls = []

    def respond(system, user):
        calls.append((system, user))
        return teacher_respond(system, user)

    examples = make_examples(3)  # gender, religion, race
    _, lm = _teacher(respond)
    result = mine(stage_context(lm, examples), examples, mistakes={"ex0": "race"})
    by_id = {m.example_id: m for m in result.mined}
    assert by_id["ex0"].predicted == "race" and by_id["ex1"].predicted is None
    asked = {next(e.id for e in examples if e.sentence in user): (system, user) for system, user in calls}
    system, user = asked["ex0"]
    assert "It gave this example a wrong label" in system and "[[ ## wrong_label ## ]]\nrace" in user
    assert "wrong_label" not in asked["ex1"][1]  # the others are mined label-conditioned, as the paper does
    assert len(result.good()) == 3
    # One signature's calls after the other (they share a prompt prefix the engine keeps); results in input order.
    assert ["wrong_label" in user for _, user in calls] == [False, False, True]
    assert [m.example_id for m in result.mined] == ["ex0", "ex1", "ex2"]


def test_a_refused_rule_is_kept_with_its_reason():
    examples = make_examples(3)
    _, lm = _teacher(lambda s, u: {"rationale": "r", "rule": "If <cue>, answer <label>."})
    result = mine(stage_context(lm, examples), examples)
    assert all(m.error is None and m.refusal.gate == "placeholder" for m in result.mined)
    assert [r.source for r in result.refusals] == [e.id for e in examples] and result.failures == 0
    assert not result.good()


def test_contrastive_sample_reaches_every_label_then_spends_on_mistakes():
    examples = make_examples(30)
    # The student answers race for everything: gender and religion items are its mistakes.
    outcomes = [Outcome(example_id=e.id, gold=e.label, pred="race") for e in examples]
    chosen, mistakes = contrastive_sample(examples, outcomes, LABELS, 12, random.Random(0))
    assert len(chosen) == 12 and len({e.id for e in chosen}) == 12
    assert {e.label for e in chosen} == set(LABELS)  # race, never a mistake, still gets an example
    assert set(mistakes) == {e.id for e in chosen if e.label != "race"} and set(mistakes.values()) == {"race"}
    assert sum(e.label == "race" for e in chosen) == 2  # the rest of the budget went to the mistakes


def test_mining_resumes_from_its_checkpoint(tmp_path):
    examples = make_examples(6)
    checkpoint = JsonlLog(tmp_path / "mined.jsonl", MinedRule)
    first, lm = _teacher(teacher_respond)
    mine(stage_context(lm, examples), examples[:4], checkpoint=checkpoint)
    with checkpoint.path.open("a") as fh:
        fh.write('{"example_id": "ex5", "gold": "rel')  # a write cut off by kill -9
    second, lm = _teacher(teacher_respond)
    result = mine(stage_context(lm, examples), examples, checkpoint=checkpoint)
    assert first.calls == 4 and second.calls == 2  # only the two unmined examples cost a call
    assert [m.example_id for m in result.mined] == [e.id for e in examples] and len(result.good()) == 6


def test_restated_examples_are_not_rules():
    assert copies("The chess player was asian today.", ["context: The chess player was BLANK.\nsentence: "
                                                         "The chess player was asian today."])
    assert not copies("If a sentence ties a job to a trait, answer profession.", ["sentence: The chess player"])


def test_looping_text_is_not_a_rule():
    assert loops("It is about gender. " * 6)
    assert not loops("If the sentence ties a trait to a job or trade rather than to a person, answer profession.")


def test_kmeans_reports_clusters_and_noise():
    texts = ["mentions she mother wife gender"] * 5 + ["mentions church prayer religion"] * 5 + ["lonely outlier"]
    vectors = TfidfEmbedder()(texts)
    labels, report = cluster_vectors(vectors, "kmeans", **{**CLUSTERING, "n_clusters": 3})
    assert report.n_clusters == 2 and report.n_noise == 1 and report.noise_share == pytest.approx(1 / 11, abs=1e-4)
    assert labels[-1] == -1 and len(set(labels[:5])) == 1 and labels[0] != labels[5]


def test_kmeans_picks_k_by_silhouette():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:4] * 5
    vectors = np.vstack([c + rng.normal(0, 0.1, (6, 8)) for c in centers])
    _, report = cluster_vectors(vectors, "kmeans", **CLUSTERING)
    assert report.n_clusters == 4 and report.params["chosen_by"] == "silhouette"


def test_dbscan_collapse_is_reported(caplog):
    vectors = np.ones((12, 4)) + np.random.default_rng(0).normal(0, 0.01, (12, 4))
    _, report = cluster_vectors(vectors, "dbscan", **CLUSTERING)
    assert report.n_clusters == 1 and report.cluster_sizes == [12]
    assert "one cluster" in caplog.text


def test_clustering_options_must_be_given():
    with pytest.raises(TypeError):
        cluster_vectors(np.eye(4), "kmeans", n_clusters=2)  # the defaults live in PLD alone


def test_all_noise_is_a_clear_error(teacher, student, data):
    train, dev = data
    with pytest.raises(RuntimeError, match="labelled all 30 rules as noise"):
        PLD(teacher=teacher, cluster_method="dbscan", min_samples=40).compile(
            dspy.Predict(Classify), trainset=train, valset=dev)


def test_same_text_clusters_are_merged():
    rules = [Rule(id="R1", text="Rule A.", support=["1"], cluster_size=1),
             Rule(id="R2", text="rule  a.", support=["2"], cluster_size=2)]
    (merged,) = dedupe(rules)
    assert merged.support == ["1", "2"] and merged.cluster_size == 3


def _rewrite(teacher_rules, dev_f1):
    train = make_examples(4)
    rules = [Rule(id="R1", text="If cats purr loudly, answer gender."),
             Rule(id="R2", text="If dogs bark loudly, answer race.")]
    prompts = []

    def respond(system, user):
        prompts.append(user)
        return {"revised_rules": teacher_rules}

    outcomes = [Outcome(example_id=e.id, gold=e.label, pred="race") for e in train]
    ctx = stage_context(_teacher(respond)[1], train, **PAPER, max_refine_iters=3)
    ctx.scorer = FixedScorer(dev_f1, outcomes)
    return prompts, refine(ctx, rules, train, make_examples(3, offset=50))


def test_rewrite_shows_failures_and_successes_and_keeps_improvements():
    soft = "If dogs bark softly, answer race."
    prompts, result = _rewrite(["If cats purr loudly, answer gender.", soft], lambda r: 0.5 if soft in r else 0.4)
    failures = json.loads(json.dumps(prompts[0]))
    assert "[[ ## failures ## ]]" in failures and "predicted: race" in failures
    assert "[[ ## successes ## ]]" in prompts[0] and "gold: race" in prompts[0].split("[[ ## successes ## ]]")[1]
    assert [r.text for r in result.rules] == ["If cats purr loudly, answer gender.", soft]
    assert result.rules[0].id == "R1" and result.rules[1].origin.startswith("refine 1 from R2")
    assert result.score.macro_f1 == 0.5 and result.history[1].accepted and not result.added
    assert not result.history[2].accepted and len(result.history) == 3  # the second revision did not improve: stop


def test_rewrite_stops_at_first_non_improvement():
    worse = "If anything at all happens, answer religion."
    _, result = _rewrite([worse], lambda r: 0.1 if r == [worse] else 0.4)
    assert [r.text for r in result.rules] == ["If cats purr loudly, answer gender.",
                                              "If dogs bark loudly, answer race."]
    assert result.score.macro_f1 == 0.4
    assert [h.accepted for h in result.history] == [True, False]


def test_corrective_refinement_writes_one_rule_per_confusion():
    """The default: the student's frequent confusion (religion answered race) gets a corrective rule, which
    joins the prompt and carries the confused examples as its demo candidates."""
    train, dev = make_examples(30), make_examples(12, offset=100)
    engine, lm = _teacher(teacher_respond)
    ctx = stage_context(lm, train)
    gender = Rule(id="R1", text="If the sentence mentions she or mother or wife, answer gender.", label="gender")
    result = refine(ctx, [gender], train, dev)
    assert [r.id for r in result.added] == ["C1"] and [r.id for r in result.rules] == ["R1", "C1"]
    corrective = result.added[0]
    assert corrective.corrects.model_dump(exclude={"example_ids"}) == Confusion(
        gold="religion", predicted="race").model_dump(exclude={"example_ids"})
    assert corrective.label == "religion" and "answer religion" in corrective.text
    confused = {e.id for e in train if e.label == "religion"}
    assert set(corrective.corrects.example_ids) <= confused and corrective.support == corrective.corrects.example_ids
    assert corrective.examples and {d.id for d in corrective.examples} <= confused
    assert len(corrective.examples) <= ctx.params.n_demo_candidates
    assert engine.calls == 1  # one teacher call for the one confusion
    # Corrective refinement scores train only; dev is left to the search.
    assert result.score is None and all(h.dev_macro_f1 is None for h in result.history)
    assert "train errors 10/30" in result.history[0].note  # the 10 religion items answered race
    assert result.history[1].accepted and result.history[1].rules == [corrective.text]
    assert "religion answered race" in result.history[1].note
    assert "train errors 0/30, no confusion left" in result.history[-1].note  # the next round found nothing
    # The corrective rule does what it was written for, on dev too.
    from pld_optim.rules import Prompt

    assert ctx.scorer.score(Prompt(rules=[gender.text]), dev).macro_f1 < 1.0
    assert ctx.scorer.score(Prompt(rules=[r.text for r in result.rules]), dev).macro_f1 == pytest.approx(1.0)


def test_mined_rule_model_forbids_unknown_keys():
    with pytest.raises(ValueError):
        MinedRule(example_id="1", gold="a", typo="x")


def test_a_refused_corrective_rule_gets_one_more_rollout():
    """A teacher that names the student's wrong label first (refused by the gates) gets a second, new
    rollout; its rule is kept, and the refusal stays on record."""
    train, dev = make_examples(30), make_examples(12, offset=100)
    answers = []

    def respond(system, user):
        if "Find what all the failures share" not in " ".join(system.split()):
            return teacher_respond(system, user)
        answers.append(user)
        if len(answers) == 1:
            return {"rationale": "It looks like race.", "rule": "If the sentence mentions a place, answer race."}
        return teacher_respond(system, user)

    engine, lm = _teacher(respond)
    ctx = stage_context(lm, train)
    gender = Rule(id="R1", text="If the sentence mentions she or mother or wife, answer gender.", label="gender")
    result = refine(ctx, [gender], train, dev)
    assert len(answers) == 2 and [r.id for r in result.added] == ["C1"]
    assert "answer religion" in result.added[0].text
    (refusal,) = result.refusals
    assert refusal.reason == "does not name the correct label 'religion'" and refusal.text.endswith("answer race.")
    assert engine.requests[-1].config.temperature == 1.0  # the retry is a new rollout, not the cached answer


def test_a_corrective_rule_that_repeats_a_rule_of_the_prompt_is_refused():
    train, dev = make_examples(30), make_examples(12, offset=100)
    copy = "If the sentence mentions a temple, answer religion."  # no cue of the data: the confusion stays

    def respond(system, user):
        if "Find what all the failures share" not in " ".join(system.split()):
            return teacher_respond(system, user)
        return {"rationale": "Worship.", "rule": copy.replace("temple", "Temple")}  # the same words

    _, lm = _teacher(respond)
    ctx = stage_context(lm, train)
    religion = Rule(id="R1", text=copy, label="religion")
    gender = Rule(id="R2", text="If the sentence mentions she or mother or wife, answer gender.", label="gender")
    result = refine(ctx, [gender, religion], train, dev)
    assert not result.added
    assert {(r.gate, r.reason) for r in result.refusals} == {("duplicate", "repeats rule R1 word for word")}
