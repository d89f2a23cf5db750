"""List outputs from the teacher (merge phrasings, refined rule lists) parse item by item whatever the items
hold, and an output that does not parse is a counted failure, never a list of fragments or characters."""

import json

import dspy
import numpy as np
import pytest
from conftest import Classify, make_examples

from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import MinedRule
from pld_optim.cluster import TfidfEmbedder, consolidate
from pld_optim.gates import Gate
from pld_optim.refine import refine_rules
from pld_optim.scoring import Outcome, Score
from pld_optim.task import resolve_task
from pld_optim.testing import ScriptedEngine

TASK = resolve_task(dspy.Predict(Classify))
GATE = Gate(labels=TASK.labels)
TRICKY = [
    'If the sentence quotes a word such as "she" or "her", answer gender.',
    "If the text names a faith, a rite, or a holy book (a scripture, a hymnal), answer religion.",
    "If the sentence mentions [a country] or its people, answer race.",
    "If the sentence describes a mother,\nwife or daughter, answer gender.",
]


def _raw(field: str, value: str) -> str:
    return f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]"


def _refine(answer: str):
    train = make_examples(4)
    outcomes = [Outcome(example_id=e.id, gold=e.label, pred="race") for e in train]
    refusals = []
    teacher = dspy.LM("local/t", engine=ScriptedEngine(lambda s, u: answer), cache=False, num_retries=0)
    with dspy.context(adapter=LabelAdapter()):  # what PLD.compile runs every stage under
        return _refine_with(teacher, train, outcomes, refusals)


def _refine_with(teacher, train, outcomes, refusals):
    rules, history, _ = refine_rules(
        [_rule("If the sentence mentions a church, answer religion.")], TASK, teacher=teacher, train=train,
        evaluate_train=lambda r: outcomes, evaluate_dev=lambda r: Score(
            macro_f1=0.5 if TRICKY[0] in r else 0.1, accuracy=0, per_class_f1={}, n=1, failures=0, invalid=0),
        embed=TfidfEmbedder(), gate=GATE, inputs={}, max_iters=1, refusals=refusals)
    return rules, history, refusals


def _rule(text):
    from pld_optim.artifact import Rule

    return Rule(id="R1", text=text)


def test_refined_items_with_quotes_commas_brackets_and_newlines_stay_whole():
    rules, history, refusals = _refine(_raw("revised_rules", json.dumps(TRICKY)))
    assert history[1].accepted and not refusals
    assert [r.text for r in rules] == [" ".join(t.split()) for t in TRICKY]


@pytest.mark.parametrize("answer", [
    _raw("revised_rules", json.dumps("If the sentence mentions a church, answer religion. Also a mosque.")),
    _raw("revised_rules", '["If the sentence says \\"she\\", answer gender.", "unterminated'),
    _raw("revised_rules", "1. If a church, answer religion.\n2. If she, answer gender."),
])
def test_a_revision_that_is_not_a_list_is_a_counted_failure(answer):
    rules, history, refusals = _refine(answer)
    assert len(history) == 2 and not history[1].accepted and history[1].note.startswith("teacher call failed")
    assert [r.text for r in rules] == ["If the sentence mentions a church, answer religion."]


def test_fragments_in_a_revised_list_are_refused_one_by_one():
    answer = _raw("revised_rules", json.dumps([TRICKY[0], 'If there is … answer ",', ".", "In this case"]))
    rules, history, refusals = _refine(answer)
    assert [r.text for r in rules] == [TRICKY[0]]
    assert len(refusals) == 3 and all("fragment" in r.reason for r in refusals)


def _merge(answer: str):
    mined = [MinedRule(example_id=f"ex{i}", gold="gender", rule=f"If the sentence mentions {w}, answer gender.")
             for i, w in enumerate(["she", "a wife", "a mother"])]
    vectors = TfidfEmbedder()([m.rule for m in mined])
    teacher = dspy.LM("local/t", engine=ScriptedEngine(lambda s, u: answer), cache=False, num_retries=0)
    with dspy.context(adapter=LabelAdapter()):
        return consolidate(mined, np.zeros(3, dtype=int), vectors, TASK, teacher, gate=GATE, inputs={},
                           n_phrasings=2, n_member_variants=0)


def test_merge_phrasings_with_tricky_items_parse_whole():
    answer = (f"[[ ## instruction ## ]]\n{TRICKY[3]}\n\n[[ ## phrasings ## ]]\n{json.dumps(TRICKY[:1])}"
              "\n\n[[ ## completed ## ]]")
    (rule,), failures, refusals = _merge(answer)
    assert failures == 0 and rule.text == " ".join(TRICKY[3].split()) and rule.phrasings == [TRICKY[0]]


def test_merge_phrasings_given_as_one_string_are_a_counted_failure():
    answer = (f"[[ ## instruction ## ]]\n{TRICKY[3]}\n\n[[ ## phrasings ## ]]\n"
              f"{json.dumps('If she, answer gender.')}\n\n[[ ## completed ## ]]")
    (rule,), failures, _ = _merge(answer)
    assert failures == 1 and rule.text == "If the sentence mentions she, answer gender."
    assert all(len(p) > 1 for p in rule.phrasings)


def test_the_embedded_grammar_accepts_json_lists_with_escapes():
    llama_cpp = pytest.importorskip("llama_cpp")
    from pld_optim.models import chat_grammar

    schema = {"properties": {"revised_rules": {"type": "array", "items": {"type": "string"}}}}
    prefix, grammar, suffix = chat_grammar(schema)
    assert "\\\\" in grammar and "char" in grammar
    llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)  # raises on a malformed grammar
