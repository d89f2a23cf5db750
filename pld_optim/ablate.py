"""After compile: what each rule in the final prompt is worth, measured by leaving it out.

A reviewer signs rules one by one, so each needs its own evidence: the dev macro F1 of the final prompt
minus the F1 of the same prompt without that rule. A negative contribution means the prompt scores better
without the rule, and the report flags it. The cost is one dev pass per active rule; prompts the search
already scored are DSPy cache hits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pld_optim.artifact import RuleSet

logger = logging.getLogger(__name__)


def rule_contributions(rules: RuleSet, score: Callable[[list[str]], float],
                       full: float | None = None) -> dict[str, float]:
    """{rule id: F1(final prompt) - F1(final prompt without it)} for every active rule. `score` maps the
    prompt's rule texts to dev macro F1; `full` is the final prompt's F1 if already known."""
    texts = rules.active_rules()
    ids = [s.rule_id for s in rules.selection] if rules.selection is not None else [r.id for r in rules.rules]
    full = score(texts) if full is None else full
    out = {}
    for k, rule_id in enumerate(ids):
        out[rule_id] = round(full - score(texts[:k] + texts[k + 1:]), 6)
        if out[rule_id] < 0:
            logger.warning("ablate: dev macro F1 rises by %.4f without rule %s", -out[rule_id], rule_id)
    return out


def with_contributions(rules: RuleSet, contributions: dict[str, float]) -> RuleSet:
    updated = [r.model_copy(update={"contribution": contributions.get(r.id)}) for r in rules.rules]
    return rules.model_copy(update={"rules": updated})
