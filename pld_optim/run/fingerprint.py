"""What an output folder's results depend on, so that resuming requires the same: the data (ids and gold
labels), the task (the signature's instructions, fields and labels, and the adapters that render it), the
teacher, the student, every parameter that changes what a compile finds, and the seed. `RunFolder.claim`
records it and refuses a folder that holds another, naming what differs (an edited signature's
instructions, say): rules mined for one prompt are not resumed under another."""

from __future__ import annotations

import json

from pld_optim.datasets.sampling import data_digest
from pld_optim.evaluation.task import example_id
from pld_optim.lm.factory import lm_identity
from pld_optim.params import PLDParams, neutral_names
from pld_optim.search.config import SearchConfig
from pld_optim.search.storage import task_identity


def fingerprint(plan, teacher, student, embedder) -> dict:
    """`plan` is the teleprompter's `CompilePlan`; `embedder` as the user gave it (a callable by its type)."""
    params = {name: getattr(plan.params, name) for name in PLDParams.model_fields
              if name not in neutral_names(PLDParams)}
    params["embedder"] = embedder if isinstance(embedder, str) else type(embedder).__name__
    if plan.search is not None:
        params["search"] = plan.search.model_dump(exclude=neutral_names(SearchConfig))
    fields, label = plan.task.input_fields, plan.task.label_field
    return {"data": {name: data_digest(rows, [example_id(ex, fields) for ex in rows], label)
                     for name, rows in (("train", plan.train), ("dev", plan.dev))},
            # The teacher's adapter too: PLD(adapter=...) changes it, dspy.configure(adapter=...) only the student's.
            "task": {**task_identity(plan.task, plan.adapter), "teacher_adapter": type(plan.teacher_adapter).__name__},
            "teacher": lm_identity(teacher), "student": lm_identity(student), "params": params,
            "seed": plan.params.seed}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key.sub: old -> new' for every leaf that differs, so a refusal names what changed."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
