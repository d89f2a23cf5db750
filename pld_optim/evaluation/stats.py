"""Uncertainty of macro F1 on a finite test split: bootstrap intervals, scipy's, over sklearn's metric.

A difference between two programs is judged on the same examples (a paired bootstrap): each resample
draws one set of example indices and scores both programs on it, so the interval reflects how much the
two differ, not how hard the examples happen to be. Every resample is scored as the point estimate is
(`pld_optim.evaluation.scoring`): macro over the labels its gold answers contain.
"""

from __future__ import annotations

import numpy as np
import sklearn
from scipy.stats import bootstrap
from sklearn.metrics import f1_score

from pld_optim.evaluation.coverage import MIN_INTERVAL_EXAMPLES
from pld_optim.evaluation.scoring import Outcome

N_RESAMPLES = 2000


def _encode(outcomes: list[Outcome], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[o.gold] for o in outcomes])
    pred = np.array([index.get(o.pred, len(labels)) for o in outcomes])  # invalid: an extra, unscored class
    return gold, pred


def _macro_f1(gold, pred) -> float:
    # The arrays are ours: skipping sklearn's validation makes 2,000 resamples take a second, not twenty.
    with sklearn.config_context(skip_parameter_validation=True):
        return f1_score(gold, pred, labels=np.unique(gold), average="macro", zero_division=0)


def _interval(data: tuple, statistic, seed: int, n_resamples: int, where: str) -> tuple[float, float]:
    n = len(data[0])
    if n < MIN_INTERVAL_EXAMPLES:  # scipy's own message ("each sample in `data` must contain ...") names no split
        raise ValueError(f"{where}: a bootstrap interval needs at least {MIN_INTERVAL_EXAMPLES} examples, got {n}")
    result = bootstrap(data, statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                       method="percentile", rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return float(ci.low), float(ci.high)


def macro_f1_interval(outcomes: list[Outcome], labels: list[str], *, seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """95% percentile-bootstrap interval of one program's macro F1."""
    gold, pred = _encode(outcomes, labels)
    return _interval((gold, pred), _macro_f1, seed, n_resamples, "macro F1 interval")


def paired_difference(a: list[Outcome], b: list[Outcome], labels: list[str], *, seed: int = 0,
                      n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """95% interval of macro F1(a) - macro F1(b) over the same resampled examples."""
    if [o.example_id for o in a] != [o.example_id for o in b]:
        raise ValueError("paired comparison needs the same examples in the same order")
    (gold, pred_a), (_, pred_b) = _encode(a, labels), _encode(b, labels)
    return _interval((gold, pred_a, pred_b), lambda g, x, y: _macro_f1(g, x) - _macro_f1(g, y), seed, n_resamples,
                     "paired difference")
