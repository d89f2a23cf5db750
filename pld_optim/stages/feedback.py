"""What refinement shows the teacher (failures and successes as text) and what it hands on."""

from __future__ import annotations

from pld_optim.evaluation.scoring import INVALID, Outcome, Score, confusions
from pld_optim.records import RefineIteration, StageResult
from pld_optim.rules import Rule
from pld_optim.stages.context import StageContext


class RefineResult(StageResult):
    rules: list[Rule]  # the refined list: what the prompt holds after refinement
    added: list[Rule] = []  # corrective rules: search candidates the list may leave out
    history: list[RefineIteration]
    score: Score | None = None  # dev score of the refined list, when refinement scored it


def frequent_confusions(outcomes: list[Outcome], min_count: int) -> list[tuple[tuple[str, str], list[Outcome]]]:
    """(gold, answered) pairs of wrong answers seen at least `min_count` times, the most frequent first, each
    with its outcomes."""
    counts = confusions(outcomes)
    return [(pair, [o for o in outcomes if not o.correct and (o.gold, o.pred or INVALID) == pair])
            for pair, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def describe(outcomes: list[Outcome], ctx: StageContext) -> str:
    blocks = []
    for n, o in enumerate(outcomes, 1):
        line = f"[{n}] {ctx.inputs.get(o.example_id, o.example_id)}\ngold: {o.gold}"
        if not o.correct:
            answered = o.pred if o.pred is not None else f"{INVALID} ({o.error or 'no label'})"
            line += f"\npredicted: {answered}"
        blocks.append(line)
    return "\n\n".join(blocks) or "(none)"
