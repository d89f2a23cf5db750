"""What every stage of one compile shares, built once per compile when PLD runs it (`PLD._execute`, through
`PLD._context`); and the checks that hold text the teacher did not write (train rows shown as worked examples,
rules a reviewer edited) to the gates that teacher text passes."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dspy
import numpy as np

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import Task, example_id, format_inputs
from pld_optim.params import PLDParams
from pld_optim.records import Refusal
from pld_optim.rules import DemoExample
from pld_optim.stages.gates import Gate, Verdict, addresses_model, common_words
from pld_optim.stages.worked_examples import vocabulary

logger = logging.getLogger("pld_optim")
SHOWN_CHARS = 200  # of a screened row's field, in its refusal


def screen_demo(inputs: dict[str, str]) -> tuple[str, Verdict] | None:
    """(field, verdict) for the first input that speaks to the model ("Ignore all previous instructions"):
    a worked example is shown to the student as it is, so it passes the gate that refuses such teacher
    text. Train rows are screened out of the demo pool with it; an edited rules.json's examples too."""
    for name, value in inputs.items():
        reason = addresses_model(str(value))
        if reason:
            return name, Verdict(gate="addresses_model", reason=reason)
    return None


def rule_text_verdict(text: str, labels: Sequence[str], task_text: str) -> Verdict | None:
    """The gates that judge a rule's text alone, against the task's labels and text (no train data): what an
    edited rule must pass as teacher text does, from the one list a compile's own rules pass inside
    `Gate.check` (`Gate.text_gates`). The gates that need the rule's examples or the train data (copies,
    names_entity, borrows, wrong_label) are the compile's alone. One difference, deliberate: a reviewer who
    names one cue ("If the target is a job, answer profession.") has written a rule, so `no_cue` asks for one
    content word; the teacher's text needs two, since it pads restatements of the task with one."""
    return Gate(labels=list(labels), task_text=task_text).check_text(text, min_content=1)


@dataclass
class StageContext:
    task: Task
    teacher: dspy.BaseLM
    scorer: Scorer
    gate: Gate
    params: PLDParams
    inputs: dict[str, str]  # example id -> the inputs as the teacher sees them (and the gates check against)
    demo_pool: dict[str, DemoExample]  # example id -> the train example as a worked example
    embed: Callable[[list[str]], np.ndarray]
    progress: bool = False
    screened: list[Refusal] = field(default_factory=list)  # train rows kept out of `demo_pool`, and why

    @classmethod
    def build(cls, task: Task, train: list[dspy.Example], teacher: dspy.BaseLM, scorer: Scorer,
              params: PLDParams, embed: Callable[[list[str]], np.ndarray], progress: bool = False) -> StageContext:
        inputs = {example_id(ex, task.input_fields): format_inputs(ex, task.input_fields) for ex in train}
        pool, screened = demo_pool(task, train)
        data_words = {w.lower() for text in inputs.values() for w in re.findall(r"[A-Za-z][A-Za-z'-]+", text)}
        known = data_words | {w.lower() for label in task.labels for w in re.findall(r"[A-Za-z]+", label)}
        gate = Gate(labels=task.labels, task_text=task.signature.instructions,
                    common_words=common_words(list(inputs.values())),
                    borrowed=vocabulary() - known - set(re.findall(r"[a-z]+", task.signature.instructions.lower())))
        return cls(task=task, teacher=teacher, scorer=scorer, gate=gate, params=params, inputs=inputs,
                   demo_pool=pool, embed=embed, progress=progress, screened=screened)

    def example_id(self, example: dspy.Example) -> str:
        return example_id(example, self.task.input_fields)


def demo_pool(task: Task, train: list[dspy.Example]) -> tuple[dict[str, DemoExample], list[Refusal]]:
    """Every train row as a worked example, except the rows `screen_demo` refuses: those are recorded (rules.json
    lists them with the gates' refusals, stage "demos") and counted in the log, and still teach the teacher."""
    pool, screened = {}, []
    for ex in train:
        eid = example_id(ex, task.input_fields)
        demo = DemoExample(id=eid, inputs={k: str(ex[k]) for k in task.input_fields}, label=str(ex[task.label_field]))
        found = screen_demo(demo.inputs)
        if found is None:
            pool[eid] = demo
            continue
        name, verdict = found
        value = demo.inputs[name]
        shown = value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + " ..."
        screened.append(verdict.refusal("demos", eid, f"{name}: {shown}"))
    if screened:
        logger.warning("PLD: %d train rows are kept out of the worked examples (demos), since their inputs speak to "
                       "the model (first: %s, %s); they still teach the teacher, and rules.json lists them under "
                       "refusals (stage 'demos')", len(screened), screened[0].source, screened[0].reason)
    return pool, screened
