"""The search space: which rules, in what order, in which wording, with which worked example.

Per rule i:
- `use_i` (categorical True/False): include the rule.
- `rank_i` (float in [0, 1]): rules are shown sorted by rank. A permutation encoded as independent rank
  keys is something TPE can model: "rule i early" is a one-dimensional preference (low rank_i), whereas a
  categorical over n! orders has no structure a density model can learn.
- `variant_i` (int): which wording; only for rules that have alternatives.
- `show_i_j` (categorical True/False): show the rule's example candidate j as a worked example; only
  when demos are on. Independent switches let a rule show none, one or several of its examples.

A point decodes to a feasible prompt: at most `max_demos` demos (those of the highest-ranked rules), and
under a prompt-token budget the lowest-ranked rules are dropped until it fits (a repair decoder: the
budget is never broken and no trial is wasted on an infeasible point).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from pld_optim.records import Selection
from pld_optim.rules import Rule


@dataclass
class Space:
    rules: list[Rule]
    max_demos: int = 0

    def has_demos(self, i: int) -> bool:
        return self.max_demos > 0 and bool(self.rules[i].examples)

    def suggest(self, trial: optuna.Trial) -> dict:
        params = {}
        for i, rule in enumerate(self.rules):
            params[f"use_{i}"] = trial.suggest_categorical(f"use_{i}", [True, False])
            params[f"rank_{i}"] = trial.suggest_float(f"rank_{i}", 0.0, 1.0)
            if len(rule.variants()) > 1:
                params[f"variant_{i}"] = trial.suggest_int(f"variant_{i}", 0, len(rule.variants()) - 1)
            for j in self.demo_range(i):
                params[f"show_{i}_{j}"] = trial.suggest_categorical(f"show_{i}_{j}", [True, False])
        return params

    def demo_range(self, i: int) -> range:
        return range(len(self.rules[i].examples) if self.has_demos(i) else 0)

    def selection(self, params: dict) -> list[Selection]:
        """The prompt a point stands for, in rank order, its demos capped at `max_demos`."""
        chosen = sorted((params.get(f"rank_{i}", i / max(1, len(self.rules))), i)
                        for i, _ in enumerate(self.rules) if params.get(f"use_{i}", True))
        out, room = [], self.max_demos
        for _, i in chosen:
            shown = [j for j in self.demo_range(i) if params.get(f"show_{i}_{j}", False)][:room]
            room -= len(shown)
            out.append(Selection(rule_id=self.rules[i].id, variant=int(params.get(f"variant_{i}", 0)), demos=shown))
        return out

    def params(self, selection: list[Selection]) -> dict:
        """The point that renders `selection` (for enqueue_trial)."""
        order = {s.rule_id: (k, s) for k, s in enumerate(selection)}
        n = max(1, len(self.rules))
        params = {}
        for i, rule in enumerate(self.rules):
            k, sel = order.get(rule.id, (None, None))
            params[f"use_{i}"] = sel is not None
            params[f"rank_{i}"] = (k + 0.5) / n if sel is not None else (i + 0.5) / n
            if len(rule.variants()) > 1:
                params[f"variant_{i}"] = sel.variant if sel is not None else 0
            for j in self.demo_range(i):
                params[f"show_{i}_{j}"] = sel is not None and j in sel.demos
        return params

    def size(self) -> tuple[int, int, int]:
        """(rules, wordings, demo candidates) the search chooses from."""
        return (len(self.rules), sum(len(r.variants()) for r in self.rules),
                sum(len(self.demo_range(i)) for i in range(len(self.rules))))
