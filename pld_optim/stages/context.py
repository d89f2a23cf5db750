"""What every stage of one compile shares, built once by PLD's prepare step."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import dspy
import numpy as np

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import Task, example_id, format_inputs
from pld_optim.params import PLDParams
from pld_optim.rules import DemoExample
from pld_optim.stages.gates import Gate, common_words
from pld_optim.stages.worked_examples import vocabulary


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

    @classmethod
    def build(cls, task: Task, train: list[dspy.Example], teacher: dspy.BaseLM, scorer: Scorer,
              params: PLDParams, embed: Callable[[list[str]], np.ndarray], progress: bool = False) -> StageContext:
        inputs = {example_id(ex, task.input_fields): format_inputs(ex, task.input_fields) for ex in train}
        pool = {example_id(ex, task.input_fields): DemoExample(
            id=example_id(ex, task.input_fields), inputs={k: str(ex[k]) for k in task.input_fields},
            label=str(ex[task.label_field])) for ex in train}
        data_words = {w.lower() for text in inputs.values() for w in re.findall(r"[A-Za-z][A-Za-z'-]+", text)}
        known = data_words | {w.lower() for label in task.labels for w in re.findall(r"[A-Za-z]+", label)}
        gate = Gate(labels=task.labels, task_text=task.signature.instructions,
                    common_words=common_words(list(inputs.values())),
                    borrowed=vocabulary() - known - set(re.findall(r"[a-z]+", task.signature.instructions.lower())))
        return cls(task=task, teacher=teacher, scorer=scorer, gate=gate, params=params, inputs=inputs,
                   demo_pool=pool, embed=embed, progress=progress)

    def example_id(self, example: dspy.Example) -> str:
        return example_id(example, self.task.input_fields)
