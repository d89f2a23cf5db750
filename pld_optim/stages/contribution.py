"""After compile: what each rule in the final prompt is worth, measured by leaving it out.

A reviewer signs rules one by one, so each needs its own evidence: the dev macro F1 of the final prompt
minus the F1 of the same prompt without that rule (and without the demo that illustrates it). A negative
contribution means the prompt scores better without the rule, and the report flags it. The cost is one
dev pass per active rule; prompts the search already scored are DSPy cache hits.
"""

from __future__ import annotations

import logging

import dspy

from pld_optim.evaluation.scorer import Scorer
from pld_optim.records import Selection
from pld_optim.rules import Rule, prompt_of

logger = logging.getLogger(__name__)


def rule_contributions(scorer: Scorer, rules: list[Rule], selection: list[Selection], label_field: str,
                       dev: list[dspy.Example], full: float | None = None) -> dict[str, float]:
    """{rule id: F1(final prompt) - F1(final prompt without it)} for every rule in `selection`; `full` is the
    final prompt's dev F1 when it is already known."""
    if full is None:
        full = scorer.score(prompt_of(rules, selection, label_field), dev).macro_f1
    out = {}
    for k, sel in enumerate(selection):
        without = prompt_of(rules, selection[:k] + selection[k + 1:], label_field)
        out[sel.rule_id] = round(full - scorer.score(without, dev).macro_f1, 6)
        if out[sel.rule_id] < 0:
            logger.warning("contribution: dev macro F1 rises by %.4f without rule %s", -out[sel.rule_id], sel.rule_id)
    return out


def with_contributions(rules: list[Rule], contributions: dict[str, float] | None) -> list[Rule]:
    """The rules with their measured contribution (None for a rule not in the prompt or not measured)."""
    if contributions is None:
        return list(rules)
    return [r.model_copy(update={"contribution": contributions.get(r.id)}) for r in rules]
