"""An Optuna sampler that searches prompts by local moves around the best prompt so far.

PLD's search never starts from nothing: refinement hands it a rule list that is already good, and the best
prompt is often a few edits away (drop a rule that steals another label's items, put one rule first,
switch a wording, show a worked example). So each trial here is one edit of the incumbent, chosen in this
order:

1. an edit that helped before, on an earlier incumbent (effects of edits are close to additive);
2. an untried edit, the most promising first: the incumbent's dev errors say where to look. A rule that
   answers label L is worth dropping or moving down when L has false positives, and worth moving up,
   rewording or illustrating when L has false negatives;
3. never an edit that already scored worse, nor a prompt the study has already scored.

When every edit of the incumbent has been scored it is a local optimum, and the sampler kicks: two random
edits at once. The sampler keeps no state of its own: it reads the study's trials, so resuming a study,
sharing it between workers and mixing it with enqueued seeds work as with Optuna's own samplers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from pld_optim.records import Selection
from pld_optim.search.space import Space
from pld_optim.stages.rule_form import answered_label

Key = tuple[tuple[str, int, tuple[int, ...]], ...]  # a prompt: (rule id, wording, demos shown) in order
Move = tuple  # ("drop", id) | ("add", id) | ("variant", id, from, to) | ("front", id, to) | ("demo", id, j)


class LocalSearchSampler(optuna.samplers.BaseSampler):
    """Proposes one edit of the incumbent prompt per trial, over `pld_optim.search.space.Space`'s parameters,
    so a trial it proposes is an ordinary Optuna trial that TPE, the dashboard and `study.best_trial` read."""

    def __init__(self, space: Space, labels: Sequence[str], *, seed: int | None = None):
        self._space = space
        self._rules = space.rules
        self._index = {r.id: i for i, r in enumerate(space.rules)}
        self._label = {r.id: answered_label(r.text, labels) or r.label for r in space.rules}
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
        params = self._space.params(_selection(self._propose(study, trial.number)))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only the very first trial of an unseeded study lands here: start from the whole list as given
        # (refinement's order, canonical wordings, no demo), the point PLD's search is meant to improve.
        kind, _, index = param_name.rpartition("_")
        if kind in ("use", "rank", "variant") and index.isdigit():
            return {"use": True, "rank": (int(index) + 0.5) / max(1, len(self._rules)), "variant": 0}[kind]
        if param_name.startswith("show_"):
            return False
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def _propose(self, study, number: int) -> Key:
        trials = study.get_trials(deepcopy=False)
        scored = sorted((t for t in trials if "selection" in t.user_attrs and t.state in (
            TrialState.COMPLETE, TrialState.PRUNED)), key=lambda t: t.number)
        seen: set[Key] = {_key(t.user_attrs["selection"]) for t in scored}
        seen |= {_key([s.model_dump() for s in self._space.selection(t.params)])
                 for t in trials if t.state == TrialState.RUNNING and t.params}
        effect, incumbent = self._replay(scored)
        if incumbent is None:
            return tuple((r.id, 0, ()) for r in self._rules)
        current = _key(incumbent.user_attrs["selection"])
        errors = incumbent.user_attrs.get("errors", [])
        rng = random.Random(f"{self._seed}:{number}")
        ranked = [((1 + self._promise(move, errors)) * _weight(move, effect, self._promise(move, errors)),
                   rng.random(), key) for move, key in self._neighbours(current) if key not in seen]
        if ranked:
            return max(ranked)[2]
        for _ in range(50):  # a local optimum: every single edit was scored; kick with two at once
            key = current
            for _ in range(2):
                options = [k for _, k in self._neighbours(key)]
                key = rng.choice(options) if options else key
            if key not in seen:
                return key
        return current

    def _replay(self, scored: list[FrozenTrial]):
        """Each trial's edit relative to the incumbent of its time, what it did, and the incumbent now."""
        effect: dict[Move, list[tuple[float, int]]] = {}  # (F1 change, promise when tried)
        incumbent = None
        for t in scored:
            if incumbent is not None:
                move = _move_between(_key(incumbent.user_attrs["selection"]), _key(t.user_attrs["selection"]))
                if move is not None:
                    delta = (t.values[0] - incumbent.values[0]) if t.state == TrialState.COMPLETE else -1.0
                    effect.setdefault(move, []).append((delta, self._promise(move, incumbent.user_attrs.get(
                        "errors", []))))
            # F1 alone, first come first kept: preferring fewer tokens on ties would drop rules that do nothing
            # yet but are needed once another edit lands. The study's best trial still breaks ties by tokens.
            if t.state == TrialState.COMPLETE and (incumbent is None or t.values[0] > incumbent.values[0]):
                incumbent = t
        return effect, incumbent

    def _neighbours(self, key: Key):
        """Single edits: drop, switch wording, move to the front (in any wording), show or hide one of its
        examples, add back."""
        ids = [rid for rid, _, _ in key]
        room = self._space.max_demos - sum(len(d) for _, _, d in key)
        for k, (rid, variant, demo) in enumerate(key):
            rule_index = self._index[rid]
            rest = key[:k] + key[k + 1:]
            yield ("drop", rid), rest
            n_variants = len(self._rules[rule_index].variants())
            for v in range(n_variants):
                if v != variant:
                    yield ("variant", rid, variant, v), key[:k] + ((rid, v, demo),) + key[k + 1:]
                if k > 0:  # to the front, in any wording: it then wins every tie it is in
                    yield ("front", rid, v), ((rid, v, demo),) + rest
            for j in self._space.demo_range(rule_index):
                if j in demo or room > 0:
                    shown = tuple(sorted(set(demo) ^ {j}))
                    yield ("demo", rid, j), key[:k] + ((rid, variant, shown),) + key[k + 1:]
        for rule in self._rules:
            if rule.id not in ids:  # back in at its place in the given order
                at = sum(self._index[rid] < self._index[rule.id] for rid in ids)
                for v in range(len(rule.variants())):
                    yield ("add", rule.id), key[:at] + ((rule.id, v, ()),) + key[at:]

    def _promise(self, move: Move, errors: list) -> int:
        """How many of the incumbent's dev errors this edit could touch. A rule answering L causes the
        errors predicted as L (drop it, move it down, reword it) and can fix the items of L answered as
        something else (add it, move it up, reword it, show an example of it)."""
        label = self._label.get(move[1])
        wrongly_l = sum(n for gold, pred, n in errors if pred == label)
        missed_l = sum(n for gold, pred, n in errors if gold == label)
        return {"drop": wrongly_l, "add": missed_l, "front": missed_l, "variant": wrongly_l + missed_l,
                "demo": wrongly_l + missed_l}[move[0]]


def _weight(move: Move, effect: dict, promise: int) -> float:
    tries = effect.get(move, [])  # this edit on earlier incumbents: effects are close to additive
    if tries and tries[-1][0] > 0:
        return 4.0
    if tries:
        # A try that did nothing says little once the errors it could touch have changed.
        weight = 1.0
        for delta, then in tries:
            weight *= (0.15 if then == promise else 0.6) * (0.25 if delta < 0 else 1.0)
        return weight
    if any(d > 0 for d, _ in effect.get(_inverse(move), [])):
        return 0.1  # undoing an edit that helped
    return 1.0


def _key(selection: list[dict]) -> Key:
    return tuple((s["rule_id"], int(s.get("variant", 0)), tuple(sorted(s.get("demos", ())))) for s in selection)


def _selection(key: Key) -> list[Selection]:
    return [Selection(rule_id=rid, variant=v, demos=list(d)) for rid, v, d in key]


def _inverse(move: Move) -> Move | None:
    kind = move[0]
    if kind in ("drop", "add"):
        return ("add" if kind == "drop" else "drop", move[1])
    if kind == "variant":
        return (kind, move[1], move[3], move[2])
    if kind == "demo":
        return move  # showing and hiding one example undo each other
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
    if len(after) != len(before):
        return None
    diff = [k for k in range(len(before)) if before[k] != after[k]]
    if len(diff) == 1 and before[diff[0]][0] == after[diff[0]][0]:
        (rid, v0, d0), (_, v1, d1) = before[diff[0]], after[diff[0]]
        if v0 != v1 and d0 == d1:
            return ("variant", rid, v0, v1)
        if v0 == v1 and len(set(d0) ^ set(d1)) == 1:
            return ("demo", rid, next(iter(set(d0) ^ set(d1))))
    if len(diff) > 1:
        for k in range(len(before)):
            rest = before[:k] + before[k + 1:]
            if after[1:] == rest and after[0][0] == before[k][0] and after[0][2] == before[k][2]:
                return ("front", before[k][0], after[0][1])
    return None
