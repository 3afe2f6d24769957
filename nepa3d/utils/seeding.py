"""Deterministic seeds: per-path RNG streams and global seeding."""

from __future__ import annotations

import hashlib
import random

import numpy as np

MC_VIEW_STRIDE = 1000003


def md5_int(s: str) -> int:
    """First 8 hex digits of md5(s) as an int (the original's per-path key)."""
    return int(hashlib.md5(str(s).encode()).hexdigest()[:8], 16)


def path_seed(path: str, seed: int, view: int = 0) -> int:
    """(md5(path) + seed + 1000003*view) & 0xFFFFFFFF: the eval-mode seed of one view of a file."""
    return (md5_int(path) + int(seed) + MC_VIEW_STRIDE * int(view)) & 0xFFFFFFFF


def path_rng(path: str, seed: int, view: int = 0) -> np.random.RandomState:
    """RandomState(:func:`path_seed`)."""
    return np.random.RandomState(path_seed(path, seed, view))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    import torch
    torch.manual_seed(seed)
