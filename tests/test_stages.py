import json

import dspy
import numpy as np
import pytest
from conftest import Classify, make_examples, teacher_respond

from pld_optim import PLD
from pld_optim.artifact import MinedRule, Rule
from pld_optim.cluster import TfidfEmbedder, cluster_vectors, dedupe
from pld_optim.gates import Gate, copies, loops
from pld_optim.mine import mine_rules
from pld_optim.refine import refine_rules
from pld_optim.scoring import Outcome, Score
from pld_optim.task import resolve_task
from pld_optim.testing import ScriptedEngine


def _task():
    return resolve_task(dspy.Predict(Classify))


GATE = Gate(labels=["gender", "race", "religion"])


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
    engine = ScriptedEngine(respond)
    mined = mine_rules(examples, _task(), dspy.LM("local/t", engine=engine, cache=False, num_retries=0),
                       gate=GATE, num_threads=2)
    assert [m.example_id for m in mined] == [e.id for e in examples]
    assert all(f"[[ ## gold_label ## ]]\n{e.label}" in next(c for c in calls if f"Item {i}:" in c)
               for i, e in enumerate(examples))
    assert "teacher went away" in mined[4].error
    assert mined[5].error == "teacher returned no rule"
    assert sum(m.error is None for m in mined) == 4
    assert "mentions a gender cue such as she" in mined[0].rule and mined[0].rationale


def test_mining_resumes_from_its_checkpoint(tmp_path):
    examples = make_examples(6)
    checkpoint = tmp_path / "mined.jsonl"
    first = ScriptedEngine(teacher_respond)
    mine_rules(examples[:4], _task(), dspy.LM("local/t", engine=first, cache=False), gate=GATE, checkpoint=checkpoint)
    with checkpoint.open("a") as fh:
        fh.write('{"example_id": "ex5", "gold": "rel')  # a write cut off by kill -9
    second = ScriptedEngine(teacher_respond)
    mined = mine_rules(examples, _task(), dspy.LM("local/t", engine=second, cache=False), gate=GATE,
                       checkpoint=checkpoint)
    assert first.calls == 4 and second.calls == 2  # only the two unmined examples cost a call
    assert [m.example_id for m in mined] == [e.id for e in examples] and all(m.error is None for m in mined)


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
    labels, report = cluster_vectors(vectors, "kmeans", n_clusters=3, min_cluster_size=2)
    assert report.n_clusters == 2 and report.n_noise == 1 and report.noise_share == pytest.approx(1 / 11, abs=1e-4)
    assert labels[-1] == -1 and len(set(labels[:5])) == 1 and labels[0] != labels[5]


def test_kmeans_picks_k_by_silhouette():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:4] * 5
    vectors = np.vstack([c + rng.normal(0, 0.1, (6, 8)) for c in centers])
    _, report = cluster_vectors(vectors, "kmeans")
    assert report.n_clusters == 4 and report.params["chosen_by"] == "silhouette"


def test_dbscan_collapse_is_reported(caplog):
    vectors = np.ones((12, 4)) + np.random.default_rng(0).normal(0, 0.01, (12, 4))
    _, report = cluster_vectors(vectors, "dbscan", eps=0.4, min_samples=6)
    assert report.n_clusters == 1 and report.cluster_sizes == [12]
    assert "one cluster" in caplog.text


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


def _score(f1):
    return Score(macro_f1=f1, accuracy=f1, per_class_f1={}, n=1, failures=0, invalid=0)


def _refine(teacher_rules, dev_f1):
    task = _task()
    train = make_examples(4)
    rules = [Rule(id="R1", text="If cats purr loudly, answer gender."),
             Rule(id="R2", text="If dogs bark loudly, answer race.")]
    prompts = []

    def respond(system, user):
        prompts.append(user)
        return {"revised_rules": teacher_rules}

    outcomes = [Outcome(example_id=e.id, gold=e.label, pred="race") for e in train]
    return prompts, refine_rules(
        rules, task, teacher=dspy.LM("local/t", engine=ScriptedEngine(respond), cache=False), train=train,
        evaluate_train=lambda r: outcomes, evaluate_dev=lambda r: _score(dev_f1(r)),
        embed=TfidfEmbedder(), gate=GATE, inputs={}, max_iters=3)


def test_refine_shows_failures_and_successes_and_keeps_improvements():
    soft = "If dogs bark softly, answer race."
    prompts, (rules, history, best) = _refine(["If cats purr loudly, answer gender.", soft],
                                              lambda r: 0.5 if soft in r else 0.4)
    failures = json.loads(json.dumps(prompts[0]))
    assert "[[ ## failures ## ]]" in failures and "predicted: race" in failures
    assert "[[ ## successes ## ]]" in prompts[0] and "gold: race" in prompts[0].split("[[ ## successes ## ]]")[1]
    assert [r.text for r in rules] == ["If cats purr loudly, answer gender.", soft]
    assert rules[0].id == "R1" and rules[1].origin.startswith("refine 1 from R2")
    assert best.macro_f1 == 0.5 and history[1].accepted
    assert not history[2].accepted and len(history) == 3  # the second revision did not improve: stop


def test_refine_stops_at_first_non_improvement():
    worse = "If anything at all happens, answer religion."
    _, (rules, history, best) = _refine([worse], lambda r: 0.1 if r == [worse] else 0.4)
    assert [r.text for r in rules] == ["If cats purr loudly, answer gender.", "If dogs bark loudly, answer race."]
    assert best.macro_f1 == 0.4
    assert [h.accepted for h in history] == [True, False]


def test_mined_rule_model_forbids_unknown_keys():
    with pytest.raises(ValueError):
        MinedRule(example_id="1", gold="a", typo="x")
