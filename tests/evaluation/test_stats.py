"""Bootstrap intervals for macro F1 and for a paired difference (what compare's "better" and "no difference"
rest on): seeded, exact on a hand-computed case, zero for identical outcomes."""

import pytest

from pld_optim.evaluation.scoring import Outcome, score_outcomes
from pld_optim.evaluation.stats import macro_f1_interval, paired_difference


def _mixed(n=60, seed=1):
    """Outcomes with right, wrong and invalid answers (an invalid answer is an extra, unscored class)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    golds = [labels[k % 3] for k in range(n)]
    preds = [g if rng.random() < 0.6 else ["a", "b", "c", "zzz"][rng.integers(4)] for g in golds]
    return [Outcome(example_id=str(i), gold=g, pred=p) for i, (g, p) in enumerate(zip(golds, preds))], labels


def test_identical_outcomes_are_no_difference():
    outcomes, labels = _mixed()
    assert 0 < score_outcomes(outcomes, labels).macro_f1 < 1  # not a degenerate program
    low, high = paired_difference(outcomes, outcomes, labels)
    assert low == high == 0.0  # each resample scores the same examples for both: exactly zero, zero width


def test_interval_covers_the_point_estimate_and_is_seeded():
    outcomes, labels = _mixed()
    point = score_outcomes(outcomes, labels).macro_f1
    low, high = macro_f1_interval(outcomes, labels, seed=0)
    assert 0 <= low < point < high <= 1
    assert macro_f1_interval(outcomes, labels, seed=0) == (low, high)  # the same seed, the same interval
    assert high - low < 0.5  # 60 examples pin macro F1 down to well under half its range


def test_intervals_of_a_hand_computed_case():
    """Program a answers every item right, program b answers every item outside the labels. On any resample
    that holds both labels (all but about 2 in 10^12 of them at n=40) F1(a) = 1 and F1(b) = 0, so every
    interval is a single point."""
    labels = ["a", "b"]
    golds = [labels[i % 2] for i in range(40)]
    right = [Outcome(example_id=str(i), gold=g, pred=g) for i, g in enumerate(golds)]
    invalid = [Outcome(example_id=str(i), gold=g, pred="maybe") for i, g in enumerate(golds)]
    assert macro_f1_interval(right, labels) == (1.0, 1.0)
    assert macro_f1_interval(invalid, labels) == (0.0, 0.0)
    assert paired_difference(right, invalid, labels) == (1.0, 1.0)
    assert paired_difference(invalid, right, labels) == (-1.0, -1.0)
    with pytest.raises(ValueError, match="same examples in the same order"):
        paired_difference(right, invalid[::-1], labels)
