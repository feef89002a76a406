"""Seeded, stratified choices of rows: the train/eval split of one file, and sub-sampling to a row budget.

Both keep every class's share (largest-remainder rounding, at least one row per class where there are rows to
spare), so a file sorted by label never yields a one-class sample, the trap of taking "the first 1,000 rows".
The split moves whole groups of identical texts, so no text is both trained on and scored. Results come back in a
seeded shuffled order: any prefix of them is itself a fair sample.

Pure functions over lists of labels; `random.Random(seed)` makes them the same on every platform.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

from curlora.errors import CurloraError


def allocate(counts: dict[str, int], total: int, *, keep_one: bool = True) -> dict[str, int]:
    """Split `total` over classes in proportion to `counts` (largest remainder); with `keep_one`, every class
    that has rows gets at least one (taken from the largest shares) when `total` allows."""
    n = sum(counts.values())
    total = max(0, min(total, n))
    exact = {k: total * c / n for k, c in counts.items()} if n else {}
    share = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (share[k] - exact[k], k))[: total - sum(share.values())]:
        share[k] += 1
    if keep_one and total >= len(counts):
        for k in sorted(counts):
            if share[k] == 0 and counts[k] > 0:
                donor = max(share, key=lambda d: (share[d], d))
                share[donor] -= 1
                share[k] = 1
    return share


def eval_count(eval_size: float | int, rows: int, *, source: str) -> int:
    """Rows to hold out: a fraction in (0, 1) of `rows`, or a count; at least one, leaving training rows."""
    n = round(rows * eval_size) if isinstance(eval_size, float) else int(eval_size)
    if n < 1:
        raise CurloraError(f"{source}: eval_size {eval_size} of {rows:,} rows holds out no rows; use a larger "
                           "fraction or a count of at least 1.")
    if n > rows - 2:
        raise CurloraError(f"{source}: eval_size {eval_size} holds out {n:,} of {rows:,} rows, leaving too few to "
                           "train on; use a smaller eval_size or a separate eval file.")
    return n


def stratified_split(labels: Sequence[str], keys: Sequence[Hashable], n_eval: int,
                     seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): about `n_eval` rows held out per class share, whole key-groups at a time."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for rows in groups.values():  # insertion order = first appearance, so the split is deterministic
        by_class[labels[rows[0]]].append(rows)
    counts = {c: sum(len(g) for g in gs) for c, gs in by_class.items()}
    quota = allocate(counts, n_eval)
    rng = random.Random(seed)
    train: list[int] = []
    held: list[int] = []
    for c in sorted(by_class):
        gs = by_class[c]
        rng.shuffle(gs)
        taken = 0
        for g in gs:
            # Never hold out a class's last group: a class must stay trainable.
            if taken < quota[c] and g is not gs[-1]:
                held.extend(g)
                taken += len(g)
            else:
                train.extend(g)
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def stratified_sample(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """`n` row indices (all of them, shuffled, if there are fewer), keeping each class's share."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    quota = allocate({c: len(rows) for c, rows in by_class.items()}, n)
    rng = random.Random(seed)
    chosen: list[int] = []
    for c in sorted(by_class):
        chosen.extend(rng.sample(by_class[c], quota[c]))
    rng.shuffle(chosen)
    return chosen
