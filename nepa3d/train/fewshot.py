"""Stratified validation split, K-shot subsets and N-way class subsets (pure functions)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def group_by_class(paths: list[str], labels: list) -> dict:
    groups = defaultdict(list)
    for p, y in zip(paths, labels):
        groups[y].append(p)
    return groups


def stratified_train_val_split(paths: list[str], labels: list, val_ratio: float, seed: int
                               ) -> tuple[list[str], list[str]]:
    """Per class (sorted order, one RandomState(seed)): sort, shuffle, floor(n * ratio) to val
    (at least 1 when n >= 2). val_ratio <= 0: no validation set."""
    if val_ratio <= 0:
        return sorted(paths), []
    rng = np.random.RandomState(seed)
    train, val = [], []
    for y, ps in sorted(group_by_class(paths, labels).items()):
        ps = sorted(ps)
        rng.shuffle(ps)
        n_val = int(np.floor(len(ps) * val_ratio))
        if n_val == 0 and len(ps) >= 2:
            n_val = 1
        val += ps[:n_val]
        train += ps[n_val:]
    return sorted(train), sorted(val)


def stratified_kshot(paths: list[str], labels: list, k: int, seed: int) -> list[str]:
    """K per class (sorted class order, one RandomState(seed)); k = 0 keeps everything."""
    if k <= 0:
        return sorted(paths)
    rng = np.random.RandomState(seed)
    out = []
    for y, ps in sorted(group_by_class(paths, labels).items()):
        ps = sorted(ps)
        rng.shuffle(ps)
        out += ps[: min(len(ps), k)]
    return sorted(out)


def choose_n_way(class_names: list[str], n_way: int, seed: int) -> list[str]:
    """n_way classes drawn without replacement from the sorted names (0 = all)."""
    names = sorted(class_names)
    if n_way <= 0 or n_way >= len(names):
        return names
    idx = np.random.RandomState(seed).choice(len(names), n_way, replace=False)
    return sorted(names[i] for i in idx)
