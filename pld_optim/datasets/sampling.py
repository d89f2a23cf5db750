"""Seeded, label-stratified sampling and stable hashed splits: the one home for both, used by the loaders
(on `datasets.Dataset` rows) and the teleprompter (on `dspy.Example`s). Imports no data library, so
`from pld_optim import PLD` stays light."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def unit_hash(key: str) -> float:
    """sha1(key) mapped to [0, 1): stable across runs, machines and row order."""
    return int(hashlib.sha1(str(key).encode()).hexdigest()[:12], 16) / float(1 << 48)


def stratified_indices(labels: Sequence[str], n: int | None, rng: random.Random) -> list[int]:
    """At most n positions, labels taken in turn from seeded shuffles of each label's positions: a small
    budget still reaches every label (the first rows of a file can hold none of a label, and each label's
    rules are clustered and merged on their own). All positions, in order, when n is None or covers them."""
    if not n or len(labels) <= n:
        return list(range(len(labels)))
    pools: dict[str, list[int]] = {}
    for i in rng.sample(range(len(labels)), len(labels)):
        pools.setdefault(str(labels[i]), []).append(i)
    queues = list(pools.values())  # labels in the order the shuffle first meets them
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def stratified(examples: list, label_field: str, n: int | None, rng: random.Random) -> list:
    """`stratified_indices` over examples, in the order they were drawn."""
    return [examples[i] for i in stratified_indices([str(ex[label_field]) for ex in examples], n, rng)]


def split_off(examples: list, keys: Sequence[str], share: float, salt: str) -> tuple[list, list]:
    """(rest, the hashed `share`): the same data always gives the same split. Salted, since the loaders cut
    train/dev/test by the same hash of the same ids, which would carve nearly all or none of a loader's split."""
    inside = [unit_hash(f"{salt}:{key}") < share for key in keys]
    return ([ex for ex, k in zip(examples, inside) if not k], [ex for ex, k in zip(examples, inside) if k])


def data_digest(examples, ids, label_field: str) -> str:
    """sha1 over (id, gold label) pairs: relabelled or re-split data gets another digest."""
    pairs = sorted(f"{i}\t{ex[label_field]}" for i, ex in zip(ids, examples))
    return hashlib.sha1("\n".join(pairs).encode()).hexdigest()[:16]
