"""The search's default pruner: a trial stops once the dev examples it has answered show it behind the best
prompt so far, by more than chance on that many examples explains.

Optuna's median pruner compares a trial's running F1 with other trials' at the same step, so it waits for
`n_startup_trials` finished trials and cannot tell a bad prompt from a hard first minibatch. Every trial here
answers the same dev examples in the same order (`PromptSearch.chunks`), so the comparison can be paired:
on the examples this trial has answered, macro F1 of the incumbent (the best finished trial) minus this
trial's, with a one-sided paired bootstrap (scipy's, over the same examples for both). A trial whose lower
bound is above zero is behind; it is pruned, and its remaining examples are never asked. A trial the data
cannot yet judge goes on, so a prompt that would have won is lost only when the examples it answered are
`confidence` sure it would not.

Each trial keeps its answers as the user attribute `answers` (label indices, -1 for an answer outside the
labels, in chunk order), so workers sharing a storage, and a resumed study, compare against the same
incumbent.
"""

from __future__ import annotations

import numpy as np
import optuna
from scipy.stats import bootstrap

ANSWERS = "answers"  # the trial user attribute the search writes and this pruner reads


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int, axis: int = -1) -> np.ndarray:
    """Macro F1 over the labels present in `gold`, along `axis` (scipy passes a batch of resamples): as
    `pld_optim.evaluation.scoring` scores a split, without sklearn's per-call cost."""
    gold, pred = np.moveaxis(np.asarray(gold), axis, -1), np.moveaxis(np.asarray(pred), axis, -1)
    total = np.zeros(gold.shape[:-1])
    present = np.zeros(gold.shape[:-1])
    for k in range(n_labels):
        is_gold, is_pred = gold == k, pred == k
        tp = (is_gold & is_pred).sum(-1)
        denominator = is_gold.sum(-1) + is_pred.sum(-1)
        has = is_gold.any(-1)
        total += np.where(has, 2 * tp / np.maximum(denominator, 1), 0.0)
        present += has
    return total / np.maximum(present, 1)


class IncumbentPruner(optuna.pruners.BasePruner):
    """Prune when the incumbent is ahead with `confidence` on the examples answered so far.

    Args:
        gold: the dev examples' gold label indices, in the order trials answer them.
        n_labels: size of the label set (indices 0..n_labels-1; -1 is an invalid answer).
        confidence: one-sided level of the paired bootstrap; higher prunes later and less.
        min_examples: no judgement on fewer answered examples than this.
        n_resamples, seed: the bootstrap's; fixed, so a decision is reproducible.
    """

    def __init__(self, gold: list[int], n_labels: int, *, confidence: float = 0.9, min_examples: int = 16,
                 n_resamples: int = 1000, seed: int = 0):
        if not 0.5 <= confidence < 1:
            raise ValueError(f"IncumbentPruner: confidence={confidence} must be in [0.5, 1)")
        self.gold, self.n_labels = np.asarray(gold), n_labels
        self.confidence, self.min_examples = confidence, min_examples
        self.n_resamples, self.seed = n_resamples, seed

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        answers = trial.user_attrs.get(ANSWERS) or []
        best = _incumbent(study, len(answers))
        if best is None or len(answers) < self.min_examples:
            return False
        n = len(answers)
        gold, mine, theirs = self.gold[:n], np.asarray(answers), np.asarray(best.user_attrs[ANSWERS][:n])
        if (mine == theirs).all():
            return False
        k = self.n_labels

        def behind(g, a, b, axis=-1):
            return macro_f1(g, b, k, axis) - macro_f1(g, a, k, axis)

        result = bootstrap((gold, mine, theirs), behind, paired=True, vectorized=True, method="percentile",
                           n_resamples=self.n_resamples, confidence_level=self.confidence,
                           alternative="greater", rng=np.random.default_rng(self.seed))
        return bool(result.confidence_interval.low > 0)


def _incumbent(study: optuna.Study, n: int) -> optuna.trial.FrozenTrial | None:
    """The best completed trial that answered at least the first `n` examples (every completed one has)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.values and len(t.user_attrs.get(ANSWERS) or []) >= n]
    return max(done, key=lambda t: (t.values[0], -t.user_attrs.get("prompt_tokens", 0)), default=None)
