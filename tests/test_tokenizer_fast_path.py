"""build_sequence writes the sequence in place; it must equal the sequence composed from the
building blocks (point_features, ray_features, assemble) with the same draws and orders."""

import numpy as np
import pytest

from nepa3d.token.ordering import morton_order, ray_order
from nepa3d.token.tokenizer import (TokenizerConfig, assemble, build_sequence, point_features,
                                    ray_features)


def composed(pools, cfg, rng, ray_available):
    """The reference: draws, orders and features composed from the building blocks."""
    def choose(size, k):
        if k <= 0 or size <= 0:
            return np.zeros(0, np.int64)
        return rng.choice(size, k, replace=size < k)
    pi = choose(len(pools["pt_xyz_pool"]), cfg.n_point)
    ri = choose(len(pools["ray_o_pool"]), cfg.n_ray)
    pxyz, pdist = pools["pt_xyz_pool"][pi], pools["pt_dist_pool"][pi]
    po = morton_order(pxyz, cfg.order_dtype)
    d = pools["ray_d_pool"][ri]
    ro = ray_order(d, cfg.order_dtype)
    rf = ray_features(pools["ray_o_pool"][ri][ro], d[ro], pools["ray_hit_pool"][ri][ro],
                      pools["ray_t_pool"][ri][ro], pools["ray_n_pool"][ri][ro])
    missing = (not ray_available) or (cfg.drop_ray_prob > 0 and rng.rand() < cfg.drop_ray_prob)
    return assemble(point_features(pxyz[po], pdist[po]), rf, qa_tokens=cfg.qa_tokens,
                    add_eos=cfg.add_eos, ray_missing=missing)


def pools(rng, P, M):
    f = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)  # noqa: E731
    return {"pt_xyz_pool": f(P, 3), "pt_dist_pool": np.abs(f(P)), "ray_o_pool": f(M, 3),
            "ray_d_pool": f(M, 3), "ray_hit_pool": (f(M) > 0).astype(np.float32),
            "ray_t_pool": np.abs(f(M)) * 3, "ray_n_pool": f(M, 3)}


@pytest.mark.parametrize("qa", [True, False])
@pytest.mark.parametrize("eos", [True, False])
@pytest.mark.parametrize("order_dtype", ["float64", "float32"])
def test_in_place_sequence_equals_the_composed_one(qa, eos, order_dtype):
    rng = np.random.default_rng(0)
    for P, M, n, m, drop, avail in [(500, 300, 64, 32, 0.0, True), (500, 300, 64, 32, 0.5, True),
                                    (40, 10, 64, 32, 0.0, True), (500, 300, 16, 0, 0.0, True),
                                    (500, 300, 0, 16, 0.0, True), (500, 300, 32, 32, 0.0, False)]:
        pl = pools(rng, P, M)
        cfg = TokenizerConfig(n_point=n, n_ray=m, qa_tokens=qa, add_eos=eos, drop_ray_prob=drop,
                              order_dtype=order_dtype)
        for seed in range(6):
            want = composed(pl, cfg, np.random.RandomState(seed), avail)
            r = np.random.RandomState(seed)
            got = build_sequence(pl, cfg, r, ray_available=avail)
            assert got[0].dtype == np.float32 and got[1].dtype == np.int64
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            r2 = np.random.RandomState(seed)
            composed(pl, cfg, r2, avail)
            assert r.rand() == r2.rand(), "the same number of draws"
