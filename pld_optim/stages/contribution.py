"""After the search: what each rule in the final prompt is worth, measured by leaving it out, and only the
rules that earn their place ship.

A reviewer signs rules one by one, so each needs its own evidence: the dev macro F1 of the final prompt
minus the F1 of the same prompt without that rule (and without the demo that illustrates it). A negative
contribution means the prompt scores better without the rule, and the report flags it. The cost is one
dev pass per active rule; prompts the search already scored are DSPy cache hits.

`earn_places` drops every rule that adds nothing (contribution <= 0) when the prompt without them scores at
least as well on dev: at equal F1 the shorter prompt wins. It also measures what the rules add beside the
worked examples and the worked examples beside the rules, since with this student the worked examples can
carry the gain while the rules ride along.
"""

from __future__ import annotations

import logging

import dspy
from pydantic import Field

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import Score
from pld_optim.records import Record, Refusal, Selection
from pld_optim.rules import Prompt, Rule, prompt_of

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


class Earned(Record):
    """What ships after the rules that added nothing are dropped, and what rules and worked examples add."""

    selection: list[Selection]
    score: Score = Field(description="dev score of the prompt that ships")
    contributions: dict[str, float] = Field(description="rule id -> its contribution on the prompt that ships")
    dropped: list[Refusal] = Field(default_factory=list, description="rules dropped for adding nothing")
    rules_beside_demos: float | None = Field(None, description="dev F1 of the prompt minus its worked examples "
                                                               "alone (None: it shows no worked example)")
    demos_beside_rules: float | None = Field(None, description="dev F1 of the prompt minus its rules alone")


def earn_places(scorer: Scorer, rules: list[Rule], selection: list[Selection], label_field: str,
                dev: list[dspy.Example], full: Score) -> Earned:
    """Leave-one-out contributions; then, when some rules add nothing and the prompt without them scores at
    least `full` on dev, the shorter prompt, measured again."""
    contributions = rule_contributions(scorer, rules, selection, label_field, dev, full.macro_f1)
    useless = [sel.rule_id for sel in selection if contributions[sel.rule_id] <= 0]
    dropped = []
    if useless:
        kept = [sel for sel in selection if sel.rule_id not in useless]
        shorter = scorer.score(prompt_of(rules, kept, label_field), dev)
        if shorter.macro_f1 >= full.macro_f1:
            by_id = {r.id: r for r in rules}
            dropped = [Refusal(stage="earn", source=i, text=by_id[i].text, gate="no_gain",
                               reason=f"adds nothing on the final prompt (dev macro F1 {contributions[i]:+.4f} "
                                      "with it and its worked examples)") for i in useless]
            logger.info("contribution: %d rules add nothing; dev macro F1 %.4f without them (%.4f with)",
                        len(useless), shorter.macro_f1, full.macro_f1)
            selection, full = kept, shorter
            contributions = rule_contributions(scorer, rules, selection, label_field, dev, full.macro_f1)
    shown = prompt_of(rules, selection, label_field)
    beside_demos = beside_rules = None
    if shown.demos and shown.rules:
        beside_demos = full.macro_f1 - scorer.score(Prompt(demos=shown.demos), dev).macro_f1
        beside_rules = full.macro_f1 - scorer.score(Prompt(rules=shown.rules), dev).macro_f1
    return Earned(selection=selection, score=full, contributions=contributions, dropped=dropped,
                  rules_beside_demos=beside_demos, demos_beside_rules=beside_rules)
