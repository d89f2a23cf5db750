"""List outputs from the teacher (merge phrasings, refined rule lists) parse item by item whatever the items
hold, and an output that does not parse is a counted failure, never a list of fragments or characters."""

import json

import dspy
import pytest
from conftest import PAPER, FixedScorer, make_examples, stage_context

from pld_optim.evaluation.scoring import Outcome
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.records import ClusterReport, MinedRule
from pld_optim.rules import Rule
from pld_optim.stages.cluster import ClusterResult, TfidfEmbedder
from pld_optim.stages.merge import N_MEMBER_VARIANTS, merge_clusters
from pld_optim.stages.refine import refine
from pld_optim.testing import ScriptedEngine

TRICKY = [
    'If the sentence quotes a word such as "she" or "her", answer gender.',
    "If the text names a faith, a rite, or a holy book (a scripture, a hymnal), answer religion.",
    "If the sentence mentions [a country] or its people, answer race.",
    "If the sentence describes a mother,\nwife or daughter, answer gender.",
]
CHURCH = "If the sentence mentions a church, answer religion."


def _raw(field: str, value: str) -> str:
    return f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]"


def _teacher(answer: str) -> dspy.LM:
    return dspy.LM("local/t", engine=ScriptedEngine(lambda s, u: answer), cache=False, num_retries=0)


def _refine(answer: str):
    """The paper's whole-list rewrite, one round, with a teacher that answers `answer` verbatim."""
    train = make_examples(4)
    outcomes = [Outcome(example_id=e.id, gold=e.label, pred="race") for e in train]
    ctx = stage_context(_teacher(answer), [], **PAPER, max_refine_iters=1)  # no inputs: only the list is judged
    ctx.scorer = FixedScorer(lambda rules: 0.5 if TRICKY[0] in rules else 0.1, outcomes)
    with dspy.context(adapter=LabelAdapter()):  # what PLD.compile runs every stage under
        return refine(ctx, [Rule(id="R1", text=CHURCH)], train, make_examples(3, offset=50))


def test_refined_items_with_quotes_commas_brackets_and_newlines_stay_whole():
    result = _refine(_raw("revised_rules", json.dumps(TRICKY)))
    assert result.history[1].accepted and not result.refusals and result.failures == 0
    assert [r.text for r in result.rules] == [" ".join(t.split()) for t in TRICKY]


@pytest.mark.parametrize("answer", [
    _raw("revised_rules", json.dumps("If the sentence mentions a church, answer religion. Also a mosque.")),
    _raw("revised_rules", '["If the sentence says \\"she\\", answer gender.", "unterminated'),
    _raw("revised_rules", "1. If a church, answer religion.\n2. If she, answer gender."),
])
def test_a_revision_that_is_not_a_list_is_a_counted_failure(answer):
    result = _refine(answer)
    history = result.history
    assert len(history) == 2 and not history[1].accepted and history[1].note.startswith("teacher call failed")
    assert [r.text for r in result.rules] == [CHURCH] and result.failures == 1


def test_fragments_in_a_revised_list_are_refused_one_by_one():
    answer = _raw("revised_rules", json.dumps([TRICKY[0], 'If there is … answer ",', ".", "In this case"]))
    result = _refine(answer)
    assert [r.text for r in result.rules] == [TRICKY[0]]
    assert len(result.refusals) == 3 and all("fragment" in r.reason for r in result.refusals)
    assert all(r.stage == "refine" for r in result.refusals)


MINED = [MinedRule(example_id=f"ex{i}", gold="gender", rule=f"If the sentence mentions {w}, answer gender.")
         for i, w in enumerate(["she", "a wife", "a mother"])]


def _merge(answer: str):
    vectors = TfidfEmbedder()([m.rule for m in MINED])
    report = ClusterReport(method="kmeans", n_rules=3, n_clusters=1, n_noise=0, noise_share=0.0, cluster_sizes=[3])
    clusters = ClusterResult(mined=MINED, cluster_ids=[0, 0, 0], vectors=vectors, report=report)
    ctx = stage_context(_teacher(answer), [], n_phrasings=2)
    with dspy.context(adapter=LabelAdapter()):
        return merge_clusters(ctx, clusters)


def test_merge_phrasings_with_tricky_items_parse_whole():
    answer = (f"[[ ## instruction ## ]]\n{TRICKY[3]}\n\n[[ ## phrasings ## ]]\n{json.dumps(TRICKY[:1])}"
              "\n\n[[ ## completed ## ]]")
    result = _merge(answer)
    (rule,) = result.rules
    assert result.failures == 0 and not result.refusals
    assert rule.text == " ".join(TRICKY[3].split()) and rule.phrasings[0] == TRICKY[0]
    # Then the cluster's most central mined rules, as further wordings the search may choose.
    assert len(rule.phrasings) == 1 + N_MEMBER_VARIANTS and set(rule.phrasings[1:]) <= {m.rule for m in MINED}
    assert rule.cluster_size == 3 and sorted(rule.support) == ["ex0", "ex1", "ex2"] and rule.label == "gender"


def test_merge_phrasings_given_as_one_string_are_a_counted_failure():
    answer = (f"[[ ## instruction ## ]]\n{TRICKY[3]}\n\n[[ ## phrasings ## ]]\n"
              f"{json.dumps('If she, answer gender.')}\n\n[[ ## completed ## ]]")
    result = _merge(answer)
    (rule,) = result.rules
    assert result.failures == 1 and rule.origin.startswith("cluster (merge failed")
    assert rule.text in {m.rule for m in MINED}  # the most central mined rule stands in
    assert all(len(p) > 1 for p in rule.phrasings) and set(rule.phrasings) <= {m.rule for m in MINED}
