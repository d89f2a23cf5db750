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


def _flat(text: str) -> str:
    return " ".join(text.split())


def texts_differ_from_system_prompt(rules: RuleSet) -> bool:
    """The saved system prompt is what the compile rendered; a hand edit of a rule's text leaves it behind.
    Only when the system prompt shows the task text at all (a custom adapter may render it otherwise)."""
    prompt = _flat(rules.system_prompt)
    shown = bool(prompt) and _flat(rules.base_instructions) in prompt
    return shown and _flat(rules.render_instructions()) not in prompt


def stale_score(rules: RuleSet) -> str | None:
    """Why rules.json's dev macro F1 is not the score of its rules as they are now, or None: it was measured
    on a prompt the file records (`scored_prompt`); files written before that field are judged by their saved
    system prompt and the search's records."""
    if rules.dev_macro_f1 is None:
        return None
    if rules.scored_prompt is not None:
        if rules.scored_prompt == rules.prompt_digest():
            return None
        return "its rules, wordings, order or worked examples changed after the dev macro F1 was measured"
    if texts_differ_from_system_prompt(rules):
        return "its rule texts differ from the system prompt the compile saved"
    if edited_since_search(rules):
        return "its selection is not one the search scored"
    return None


def render_report(rules: RuleSet, *, title: str = "PLD compile", context: dict | None = None) -> str:
    return render("report.md.j2", title=title, context=context or {}, rules=rules, active=active_rules(rules),
                  edited=stale_score(rules))
