"""--order_dtype: float64 (default, unchanged) and float32 (the original code's token order).

The references here are written independently of nepa3d.token.ordering: a bit-by-bit Morton
interleave in Python integers, float32 numpy arithmetic as the original code does it, and a
float64 brute force that sorts by (key, input index).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from nepa3d.analysis import (baseline_cls, baseline_ucpr, completion_cpac_udf,
                             qualitative_cpac_marching_cubes, retrieval_ucpr)
from nepa3d.token import types as tt
from nepa3d.token.ordering import morton_code, morton_order, ray_order
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.train import finetune_cls, pretrain
from planted import write_planted


def interleave(q) -> int:
    """Bit b of x -> 3b, of y -> 3b+1, of z -> 3b+2."""
    code = 0
    for b in range(10):
        for axis in range(3):
            code |= ((int(q[axis]) >> b) & 1) << (3 * b + axis)
    return code


def original_morton_order(xyz):
    """The original: float32 quantisation, uint32 codes, np.argsort's default kind."""
    x = np.asarray(xyz, dtype=np.float32)
    q = np.clip((x * 0.5 + 0.5) * 1023, 0, 1023).astype(np.uint32)
    codes = np.array([interleave(r) for r in q], dtype=np.uint32)
    return np.argsort(codes)


def brute_morton_order_f64(xyz):
    """float64 quantisation, ties in input order."""
    codes = [interleave([min(max(int((float(v) * 0.5 + 0.5) * 1023), 0), 1023) for v in row])
             for row in np.asarray(xyz, dtype=np.float64)]
    return np.array(sorted(range(len(codes)), key=lambda i: (codes[i], i)), dtype=np.int64)


def ray_angles(d, dtype):
    d = np.asarray(d, dtype=dtype)
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)
    return np.arctan2(d[:, 1], d[:, 0]), np.arccos(np.clip(d[:, 2], -1.0, 1.0))


def original_ray_order(d):
    theta, phi = ray_angles(d, np.float32)
    return np.lexsort((phi, theta))


def brute_ray_order_f64(d):
    theta, phi = ray_angles(d, np.float64)
    return np.array(sorted(range(len(theta)), key=lambda i: (theta[i], phi[i], i)), dtype=np.int64)


#: x = 2 * 600 / 1023 - 1 in float32: (x * 0.5 + 0.5) * 1023 is 600 in float32, 599.99.. in float64
BOUNDARY_X = np.float32(2 * 600 / 1023 - 1)


def test_boundary_point_quantises_differently_and_float32_follows_the_original():
    x32 = (BOUNDARY_X * np.float32(0.5) + np.float32(0.5)) * np.float32(1023)
    x64 = (np.float64(BOUNDARY_X) * 0.5 + 0.5) * 1023
    assert int(x32) == 600 and int(x64) == 599  # the case is real
    # A at the boundary, B inside cell 599: same cell in float64 (input order kept), A after B
    # in float32
    pts = np.array([[BOUNDARY_X, 0, 0], [2 * 599.5 / 1023 - 1, 0, 0]], dtype=np.float32)
    assert morton_order(pts).tolist() == brute_morton_order_f64(pts).tolist() == [0, 1]
    assert morton_order(pts, "float32").tolist() == original_morton_order(pts).tolist() == [1, 0]
    assert morton_code(pts, "float32").dtype == np.uint32
    assert morton_code(pts).dtype == np.int64


def test_ray_tie_in_float32_is_broken_by_phi_as_the_original():
    # theta differs in float64 (row 0 first) but ties in float32, where phi puts row 1 first
    d = np.array([[-1, 2e-7, -0.5], [-1, 1e-7, 0.5]], dtype=np.float32)
    t32, _ = ray_angles(d, np.float32)
    t64, _ = ray_angles(d, np.float64)
    assert t32[0] == t32[1] and t64[0] < t64[1]  # the case is real
    assert ray_order(d).tolist() == brute_ray_order_f64(d).tolist() == [0, 1]
    assert ray_order(d, "float32").tolist() == original_ray_order(d).tolist() == [1, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_pools_both_modes_against_references(seed):
    rng = np.random.default_rng(seed)
    # float32 points including exact duplicates, cell boundaries and out-of-cube values
    xyz = rng.uniform(-1.05, 1.05, (400, 3)).astype(np.float32)
    xyz[1::7] = xyz[::7][: len(xyz[1::7])]  # exact duplicates
    xyz[::11, 0] = (2 * rng.integers(0, 1024, len(xyz[::11])) / 1023 - 1).astype(np.float32)
    assert morton_order(xyz).tolist() == brute_morton_order_f64(xyz).tolist()
    assert morton_order(xyz, "float32").tolist() == original_morton_order(xyz).tolist()
    d = rng.normal(size=(300, 3)).astype(np.float32)
    d[1::5] = d[::5][: len(d[1::5])]  # exact ties
    assert ray_order(d).tolist() == brute_ray_order_f64(d).tolist()
    assert ray_order(d, "float32").tolist() == original_ray_order(d).tolist()


def test_empty_inputs_and_bad_dtype():
    assert morton_order(np.zeros((0, 3)), "float32").tolist() == []
    assert ray_order(np.zeros((0, 3)), "float32").tolist() == []
    with pytest.raises(ValueError):
        morton_order(np.zeros((2, 3)), "float16")
    with pytest.raises(ValueError):
        TokenizerConfig(order_dtype="half")


def _pools(xyz, d):
    n, m = len(xyz), len(d)
    return dict(pt_xyz_pool=xyz, pt_dist_pool=np.arange(n, dtype=np.float32),
                ray_o_pool=np.zeros((m, 3), np.float32), ray_d_pool=d,
                ray_hit_pool=np.ones(m, np.float32), ray_t_pool=np.arange(m, dtype=np.float32),
                ray_n_pool=np.zeros((m, 3), np.float32), ray_available=True)


@pytest.mark.parametrize("order_dtype", ["float64", "float32"])
def test_build_sequence_orders_with_the_config(order_dtype):
    rng = np.random.default_rng(5)
    xyz = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    xyz[:8, 0] = BOUNDARY_X
    d = rng.normal(size=(32, 3)).astype(np.float32)
    cfg = TokenizerConfig(n_point=40, n_ray=20, qa_tokens=True, add_eos=True, order_dtype=order_dtype)
    feat, types = build_sequence(_pools(xyz, d), cfg, np.random.RandomState(3))
    draw = np.random.RandomState(3)
    pi = draw.choice(64, 40, replace=False)
    ri = draw.choice(32, 20, replace=False)
    p_ref = original_morton_order if order_dtype == "float32" else brute_morton_order_f64
    r_ref = original_ray_order if order_dtype == "float32" else brute_ray_order_f64
    qp = feat[types == tt.Q_POINT][:, tt.CH_XYZ]
    assert np.array_equal(qp, xyz[pi][p_ref(xyz[pi])])
    qr = feat[types == tt.Q_RAY][:, tt.CH_D]
    assert np.array_equal(qr, d[ri][r_ref(d[ri])])


PARSERS = {
    "pretrain": (pretrain.build_parser, []),
    "finetune_cls": (finetune_cls.build_parser, ["--ckpt", "x.pt"]),
    "retrieval_ucpr": (retrieval_ucpr.build_parser, ["--cache_root", "c", "--ckpt", "x.pt",
                                                     "--query_backend", "mesh",
                                                     "--gallery_backend", "mesh"]),
    "completion_cpac_udf": (completion_cpac_udf.build_parser, ["--cache_root", "c", "--ckpt", "x"]),
    "qualitative_cpac_marching_cubes": (qualitative_cpac_marching_cubes.build_parser,
                                        ["--cache_root", "c", "--ckpt", "x"]),
    "baseline_cls": (baseline_cls.build_parser, []),
    "baseline_ucpr": (baseline_ucpr.build_parser, ["--cache_root", "c", "--query_backend", "mesh",
                                                   "--gallery_backend", "mesh"]),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_tokenising_cli_has_the_flag(name):
    build, required = PARSERS[name]
    parser: argparse.ArgumentParser = build()
    assert parser.parse_args(required).order_dtype == "float64"
    assert parser.parse_args(required + ["--order_dtype", "float32"]).order_dtype == "float32"
    with pytest.raises(SystemExit):
        parser.parse_args(required + ["--order_dtype", "float16"])


def test_flag_is_not_neutral_and_old_runs_count_as_float64():
    assert "order_dtype" not in pretrain.RESUME_NEUTRAL_ARGS
    assert "order_dtype" not in finetune_cls.RESULT_NEUTRAL_ARGS
    args = pretrain.PretrainConfig.parse([])
    saved = {k: v for k, v in args.record().items() if k != "order_dtype"}  # before the flag
    assert pretrain.auto_resume_refusal(saved, args) is None
    args = dataclasses.replace(args, order_dtype="float32")
    assert "--order_dtype float64 (now float32)" in pretrain.auto_resume_refusal(saved, args)


@pytest.mark.parametrize("order_dtype", ["float64", "float32"])
def test_cpac_context_and_queries_sorted_in_the_chosen_arithmetic(order_dtype, tmp_path):
    write_planted(tmp_path, "eval", 1, seed=4)
    path = sorted(str(p) for p in tmp_path.rglob("*.npz"))[0]
    args = completion_cpac_udf.CompletionCpacConfig.parse(
        ["--cache_root", str(tmp_path), "--ckpt", "x", "--n_context", "200", "--n_query", "200",
         "--query_source", "hybrid", "--order_dtype", order_dtype])
    cfg = completion_cpac_udf.sample_config(args, "mesh", "normal")
    assert cfg.order_dtype == order_dtype
    s = completion_cpac_udf.sample_ctx_query(path, cfg, 0, completion_cpac_udf.ArrayLoader())
    for xyz in (s.ctx_xyz, s.q_xyz):
        assert len(xyz) == 200
        q = np.clip((xyz.astype(order_dtype) * 0.5 + 0.5) * 1023, 0, 1023).astype(np.int64)
        codes = [interleave(r) for r in q]
        assert codes == sorted(codes)
