"""report.md for a compile: what was distilled, how well it did, and what it cost; recomputed from the
rules as they are (a reviewer may have edited rules.json since)."""

from __future__ import annotations

from pld_optim.rules import RuleSet
from pld_optim.run.templating import render


def active_rules(rules: RuleSet) -> list[dict]:
    """The prompt's rules in order, each with its text and the demo it shows (if any)."""
    return [{"rule": rule, "text": rule.variants()[sel.variant], "demos": [rule.examples[d] for d in sel.demos],
             "selection": sel} for rule, sel in rules.selected()]


def edited_since_search(rules: RuleSet) -> bool:
    return rules.search is not None and rules.selection is not None and \
        [s.model_dump() for s in rules.selection] != [s.model_dump() for s in rules.search.best.selection] and \
        not any([s.model_dump() for s in c.selection] == [s.model_dump() for s in rules.selection]
                for c in rules.search.pareto)


def render_report(rules: RuleSet, *, title: str = "PLD compile", context: dict | None = None) -> str:
    return render("report.md.j2", title=title, context=context or {}, rules=rules, active=active_rules(rules),
                  edited=edited_since_search(rules))
