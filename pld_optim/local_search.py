"""An Optuna sampler that searches rule prompts by local moves around the best prompt so far.

Why not TPE alone: the space is 3 parameters per rule (use, rank, phrasing), so 24 rules make 72
dimensions, and TPE learns nothing from 40 trials spread over that. But PLD's search never starts from
nothing: refinement hands it a rule list that is already good, and the best prompt is usually a few edits
away (drop a rule that steals another label's items, put one rule before another, switch a phrasing).
So each trial here is one edit of the incumbent, chosen in this order:

1. an edit that helped before, on an earlier incumbent (effects of edits are close to additive);
2. an untried edit, the most promising first: the incumbent's dev errors say where to look. A rule
   that answers label L is worth dropping or moving down when L has false positives, and worth moving up
   or rephrasing when L has false negatives;
3. never an edit that already scored worse, nor a prompt the study has already scored.

When every edit of the incumbent has been scored it is a local optimum, and the sampler kicks: two random
edits at once. The sampler keeps no state of its own. It reads the study's trials, so resuming a study,
sharing it between workers (each worker proposes an edit not yet running) and mixing it with enqueued
seeds all work as with Optuna's own samplers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from pld_optim.artifact import Rule, Selection
from pld_optim.gates import answered_label

Key = tuple[tuple[str, int], ...]  # a prompt: (rule id, phrasing) in order
Move = tuple  # ("drop", id) | ("add", id) | ("variant", id, from, to) | ("front", id) | ("end", id)


def selection_from_params(params: dict, rules: list[Rule]) -> list[Selection]:
    chosen = [(params.get(f"rank_{i}", i / max(1, len(rules))), i) for i, _ in enumerate(rules)
              if params.get(f"use_{i}", True)]
    return [Selection(rule_id=rules[i].id, variant=int(params.get(f"variant_{i}", 0))) for _, i in sorted(chosen)]


def params_for(selection: list[Selection], rules: list[Rule]) -> dict:
    """The point in the search space that renders `selection` (for enqueue_trial)."""
    order = {s.rule_id: (k, s.variant) for k, s in enumerate(selection)}
    n = max(1, len(rules))
    params = {}
    for i, rule in enumerate(rules):
        params[f"use_{i}"] = rule.id in order
        params[f"rank_{i}"] = (order[rule.id][0] + 0.5) / n if rule.id in order else (i + 0.5) / n
        if len(rule.variants()) > 1:
            params[f"variant_{i}"] = order.get(rule.id, (0, 0))[1]
    return params


def rule_label(rule: Rule, labels: Sequence[str]) -> str | None:
    return answered_label(rule.text, labels) or rule.label


class LocalSearchSampler(optuna.samplers.BaseSampler):
    """Proposes one edit of the incumbent prompt per trial; see the module docstring for the order.

    The parameters are those of `pld_optim.search` (`use_i`, `rank_i`, `variant_i`), so a trial it proposes
    is an ordinary Optuna trial that TPE, the dashboard and `study.best_trial` understand.
    """

    def __init__(self, rules: list[Rule], labels: Sequence[str], *, seed: int | None = None):
        self._rules = rules
        self._index = {r.id: i for i, r in enumerate(rules)}
        self._label = {r.id: rule_label(r, labels) for r in rules}
        self._seed = seed
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return optuna.search_space.intersection_search_space(done) if done else {}

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict:
        if not search_space:
            return {}
        proposal = self._propose(study, trial.number)
        params = params_for(proposal, self._rules)
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only the very first trial of an unseeded study lands here: start from the whole list as given
        # (refinement's order and canonical phrasings), the point PLD's search is meant to improve.
        kind, _, index = param_name.rpartition("_")
        if kind in ("use", "rank", "variant") and index.isdigit():
            return {"use": True, "rank": (int(index) + 0.5) / max(1, len(self._rules)), "variant": 0}[kind]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # -- the walk -------------------------------------------------------------------------------

    def _propose(self, study, number: int) -> list[Selection]:
        trials = study.get_trials(deepcopy=False)
        scored = [t for t in trials if "selection" in t.user_attrs and t.state in (
            TrialState.COMPLETE, TrialState.PRUNED)]
        scored.sort(key=lambda t: t.number)
        seen: set[Key] = {_key(t.user_attrs["selection"]) for t in scored}
        seen |= {self._key_of_params(t.params) for t in trials if t.state == TrialState.RUNNING and t.params}

        # Replay the walk: each trial's edit relative to the incumbent of its time, and what it did.
        effect: dict[Move, list[tuple[float, int]]] = {}  # (F1 change, promise when tried)
        incumbent = None
        for t in scored:
            if incumbent is not None:
                move = _move_between(_key(incumbent.user_attrs["selection"]), _key(t.user_attrs["selection"]))
                if move is not None:
                    delta = (t.values[0] - incumbent.values[0]) if t.state == TrialState.COMPLETE else -1.0
                    errors = incumbent.user_attrs.get("errors", [])
                    effect.setdefault(move, []).append((delta, self._promise(move, errors)))
            # F1 alone, first come first kept: preferring fewer tokens on ties would drop rules that do
            # nothing yet but are needed once another edit lands. The study's best trial still breaks
            # ties by tokens when the search ends.
            if t.state == TrialState.COMPLETE and (incumbent is None or t.values[0] > incumbent.values[0]):
                incumbent = t
        if incumbent is None:
            return [Selection(rule_id=r.id) for r in self._rules]
        current = _key(incumbent.user_attrs["selection"])
        errors = incumbent.user_attrs.get("errors", [])
        rng = random.Random(f"{self._seed}:{number}")
        ranked = []
        for move, key in self._neighbours(current):
            if key in seen:
                continue
            promise = self._promise(move, errors)
            tries = effect.get(move, [])  # this edit on earlier incumbents: effects are close to additive
            if tries and tries[-1][0] > 0:
                weight = 4.0
            elif tries:
                # A try that did nothing says little once the errors it could touch have changed.
                weight = 1.0
                for delta, then in tries:
                    weight *= (0.15 if then == promise else 0.6) * (0.25 if delta < 0 else 1.0)
            elif any(d > 0 for d, _ in effect.get(_inverse(move), [])):
                weight = 0.1  # undoing an edit that helped
            else:
                weight = 1.0
            ranked.append(((1 + promise) * weight, rng.random(), key))
        if ranked:
            return _selection(max(ranked)[2])
        # Local optimum: every single edit has been scored. Kick with two random edits at once.
        for _ in range(50):
            key = current
            for _ in range(2):
                options = [k for _, k in self._neighbours(key)]
                key = rng.choice(options) if options else key
            if key not in seen:
                return _selection(key)
        return _selection(current)

    def _neighbours(self, key: Key):
        """Single edits: drop, switch phrasing, move to the front (in any phrasing), add back."""
        ids = [rid for rid, _ in key]
        for k, (rid, variant) in enumerate(key):
            rest = key[:k] + key[k + 1:]
            yield ("drop", rid), rest
            for v in range(len(self._rules[self._index[rid]].variants())):
                if v != variant:
                    yield ("variant", rid, variant, v), key[:k] + ((rid, v),) + key[k + 1:]
            for v in range(len(self._rules[self._index[rid]].variants())):
                if k > 0:  # to the front, in any wording: it then wins every tie it is in
                    yield ("front", rid, v), ((rid, v),) + rest
        for rule in self._rules:
            if rule.id not in ids:  # back in at its place in the given order
                at = sum(self._index[rid] < self._index[rule.id] for rid in ids)
                for v in range(len(rule.variants())):
                    yield ("add", rule.id), key[:at] + ((rule.id, v),) + key[at:]

    def _promise(self, move: Move, errors: list) -> int:
        """How many of the incumbent's dev errors this edit could touch. A rule answering L causes the
        errors predicted as L (drop it, move it down, reword it) and can fix the items of L answered as
        something else (add it, move it up, reword it)."""
        label = self._label.get(move[1])
        wrongly_l = sum(n for gold, pred, n in errors if pred == label)
        missed_l = sum(n for gold, pred, n in errors if gold == label)
        return {"drop": wrongly_l, "add": missed_l, "front": missed_l, "variant": wrongly_l + missed_l}[move[0]]

    def _key_of_params(self, params: dict) -> Key:
        return tuple((s.rule_id, s.variant) for s in selection_from_params(params, self._rules))


def _key(selection: list[dict]) -> Key:
    return tuple((s["rule_id"], int(s.get("variant", 0))) for s in selection)


def _selection(key: Key) -> list[Selection]:
    return [Selection(rule_id=rid, variant=v) for rid, v in key]


def _inverse(move: Move) -> Move | None:
    kind = move[0]
    if kind in ("drop", "add"):
        return ("add" if kind == "drop" else "drop", move[1])
    if kind == "variant":
        return ("variant", move[1], move[3], move[2])
    return None  # a move to the front has no single inverse


def _move_between(before: Key, after: Key) -> Move | None:
    """The single edit that turns one prompt into the other, if there is one."""
    if len(after) == len(before) - 1:
        for k in range(len(before)):
            if before[:k] + before[k + 1:] == after:
                return ("drop", before[k][0])
    if len(after) == len(before) + 1:
        for k in range(len(after)):
            if after[:k] + after[k + 1:] == before:
                return ("add", after[k][0])
    if len(after) == len(before):
        diff = [k for k in range(len(before)) if before[k] != after[k]]
        if len(diff) == 1 and before[diff[0]][0] == after[diff[0]][0]:
            return ("variant", after[diff[0]][0], before[diff[0]][1], after[diff[0]][1])
        if len(diff) > 1:
            for k in range(len(before)):
                rest = before[:k] + before[k + 1:]
                if after[1:] == rest and after[0][0] == before[k][0]:
                    return ("front", before[k][0], after[0][1])
    return None
