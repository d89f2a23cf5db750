"""A run folder's fingerprint holds the task (`task_identity`: the signature's instructions, fields and labels,
and the adapters), as the search's study name does: resuming after the signature was edited is refused before
any LM call, naming what changed, instead of mixing rules mined for one prompt into a run on another."""

import json
from typing import Literal

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond

from pld_optim import PLD
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.run.folder import FINGERPRINT
from pld_optim.search.config import SearchConfig
from pld_optim.search.storage import search_setup, task_identity
from pld_optim.testing import scripted_lm

TRAIN, DEV = make_examples(30), make_examples(12, offset=100)


class Edited(dspy.Signature):
    """Classify the bias type of the sentence; when unsure, answer race."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


class Described(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField(desc="one sentence from a news story")
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


def compile_into(out, signature=Classify, adapter=None, teacher=None) -> int:
    """A scripted compile of the cue task into `out`; the teacher calls it made."""
    teacher = teacher or scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, out_dir=out, seed=0, adapter=adapter).compile(
            dspy.Predict(signature), trainset=TRAIN, valset=DEV)
    return teacher._engine_spec.calls


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".pld.lock"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("fingerprint") / "run"
    assert compile_into(out) > 0
    return out


def test_the_fingerprint_records_the_task_as_task_identity_gives_it(compiled):
    recorded = json.loads((compiled / FINGERPRINT).read_text())["task"]
    task = resolve_task(dspy.Predict(Classify))
    assert recorded == {**task_identity(task, LabelAdapter()), "teacher_adapter": "LabelAdapter"}
    assert recorded["instructions"] == "Classify the bias type of the sentence."
    assert recorded["input_fields"] == ["sentence"] and recorded["labels"] == ["gender", "race", "religion"]
    assert recorded["label_field"] == "label" and recorded["adapter"] == "LabelAdapter"


@pytest.mark.parametrize(("signature", "adapter", "changed"), [
    (Edited, None, 'task.instructions: "Classify the bias type of the sentence." -> "Classify the bias type of '
                   'the sentence; when unsure, answer race."'),
    (Described, None, 'task.fields.sentence: "${sentence}" -> "one sentence from a news story"'),
    (Classify, dspy.JSONAdapter(), 'task.adapter: "LabelAdapter" -> "JSONAdapter"'),
])
def test_resuming_after_the_signature_or_adapter_changed_is_refused_naming_it(compiled, signature, adapter,
                                                                              changed):
    """Old main: the fingerprint had no task, so the edited program resumed on the old one's mined rules."""
    before, teacher = snapshot(compiled), scripted_lm(teacher_respond, "teacher")
    with pytest.raises(ValueError, match="holds another run") as err:
        compile_into(compiled, signature, adapter, teacher)
    assert changed in str(err.value), str(err.value)
    assert "resuming would mix the two" in str(err.value)
    assert snapshot(compiled) == before and teacher._engine_spec.calls == 0  # refused before any write or call


def test_the_same_task_resumes(compiled):
    assert compile_into(compiled) < 10  # mining resumed from mined.jsonl, not paid again


def test_the_search_keys_its_study_by_the_same_task_identity():
    """One helper for both: what refuses a folder also separates the studies of two signatures."""
    config = SearchConfig(n_trials=2)
    setups = []
    for signature in (Classify, Edited):
        program = dspy.Predict(signature)
        task = resolve_task(program)
        scorer = Scorer(program, task, adapter=LabelAdapter(), lm=scripted_lm(student_respond, "student"))
        setup = search_setup(scorer, DEV, config, max_demos=0, demo_field="label")
        assert task_identity(task, scorer.adapter).items() <= setup["task"].items()
        setups.append(setup)
    assert setups[0]["task"]["instructions"] != setups[1]["task"]["instructions"]
