"""Analytic rays for the benchmarks' synthetic spheres (shared by bench_eval and bench_gpu_train)."""

from __future__ import annotations

import numpy as np


def sphere_rays(rng: np.random.RandomState, M: int, r: float) -> tuple[np.ndarray, ...]:
    """``M`` rays from radius 2.2 aimed near the centre, intersected with the sphere ``|x| = r``.

    Returns:
        ``(o (M, 3), d (M, 3), hit (M,) bool, t (M,), n (M, 3))`` float64; misses have t = 0,
        n = 0.
    """
    o = rng.normal(size=(M, 3))
    o = o / np.linalg.norm(o, axis=1, keepdims=True) * 2.2
    d = -o / 2.2 + rng.normal(0, 0.2, (M, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = (o * d).sum(1)
    disc = b ** 2 - ((o * o).sum(1) - r * r)
    hit = disc > 0
    t = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), 0.0)
    n = np.where(hit[:, None], (o + t[:, None] * d) / r, 0.0)
    return o, d, hit, t, n
