"""Auxiliary pretraining losses (B-2, B-3, E, C-0/C-1, C-2, D) against hand-computed cases,
and their integration in pretrain (flags, checkpoint ``aux_heads``, resume, teacher)."""

import json
import math

import pytest
import torch
import torch.nn as nn

from nepa3d.token import types as tt
from nepa3d.train import aux_losses as aux
from nepa3d.train import pretrain
from nepa3d.utils.ckpt import load_checkpoint
from planted import write_planted


def _sp(x):
    return math.log1p(math.exp(x))


def _sl1(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _bce(x, y):
    return math.log1p(math.exp(x)) - x * y


def _identity_heads(*names):
    """d_model = 1 heads with weight 1, bias 0: the head output equals the input value."""
    h = nn.ModuleDict({n: nn.Linear(1, 1) for n in names})
    with torch.no_grad():
        for m in h.values():
            m.weight.fill_(1.0)
            m.bias.zero_()
    return h


def _feat(rows):
    """rows: list (per sample) of lists of dicts {ch: value} -> (B, N, 15)"""
    f = torch.zeros(len(rows), len(rows[0]), tt.FEAT_DIM)
    for b, r in enumerate(rows):
        for i, d in enumerate(r):
            for c, v in d.items():
                f[b, i, c] = v
    return f


# ---------------------------------------------------------------- B-2
def test_b2_hand_computed():
    # sample 0: two hit A_RAY (t 1, 2) + an A_POINT; sample 1: a miss A_RAY, a hit RAY (t .5), a Q_RAY
    x = torch.tensor([[0.5, 1.5, 3.0], [-1.0, 0.2, 7.0]])[..., None]
    types = torch.tensor([[tt.A_RAY, tt.A_RAY, tt.A_POINT], [tt.A_RAY, tt.RAY, tt.Q_RAY]])
    feat = _feat([[{tt.CH_HIT: 1, tt.CH_T: 1.0}, {tt.CH_HIT: 1, tt.CH_T: 2.0}, {tt.CH_DIST: 0.3}],
                  [{tt.CH_HIT: 0, tt.CH_T: 0.0}, {tt.CH_HIT: 1, tt.CH_T: 0.5}, {tt.CH_HIT: 1, tt.CH_T: 9}]])
    heads = _identity_heads("ray_hit", "ray_t")
    bce = (_bce(0.5, 1) + _bce(1.5, 1) + _bce(-1.0, 0) + _bce(0.2, 1)) / 4
    t_reg = (_sl1(_sp(0.5), 1.0) + _sl1(_sp(1.5), 2.0) + _sl1(_sp(0.2), 0.5)) / 3
    # only sample 0 has >= 2 hits; both valid orderings give relu(1 - (sp(1.5) - sp(0.5)))
    rank = max(0.0, 1.0 - (_sp(1.5) - _sp(0.5)))
    assert rank > 0.1
    got = aux.b2_ray_loss(x, feat, types, heads, hit_w=0.5, t_w=2.0, rank_w=3.0, rank_pairs=64,
                          margin=1.0, generator=torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(0.5 * bce + 2.0 * t_reg + 3.0 * rank, rel=1e-5)
    # margin 0 and correctly ordered predictions: no rank loss
    got0 = aux.b2_ray_loss(x, feat, types, heads, 0.5, 2.0, 3.0, 64, 0.0, torch.Generator().manual_seed(0))
    assert got0.item() == pytest.approx(0.5 * bce + 2.0 * t_reg, rel=1e-5)
    # inverted order with margin 0: relu(sp(1.5) - sp(0.5))
    xi = x.clone()
    xi[0, 0, 0], xi[0, 1, 0] = 1.5, 0.5
    r = aux.rank_hinge(torch.nn.functional.softplus(xi[..., 0]), feat[..., tt.CH_T],
                       torch.tensor([[True, True, False], [False, True, False]]), 64, 0.0,
                       torch.Generator().manual_seed(1))
    assert r.item() == pytest.approx(_sp(1.5) - _sp(0.5), rel=1e-5)


def test_b2_no_rays_and_no_hits():
    heads = _identity_heads("ray_hit", "ray_t")
    x = torch.tensor([[0.3, -0.2]])[..., None]
    pts = torch.tensor([[tt.A_POINT, tt.Q_POINT]])
    assert aux.b2_ray_loss(x, _feat([[{}, {}]]), pts, heads).item() == 0.0
    miss = torch.tensor([[tt.A_RAY, tt.A_RAY]])
    got = aux.b2_ray_loss(x, _feat([[{tt.CH_HIT: 0}, {tt.CH_HIT: -2}]]), miss, heads, 1.0, 5.0, 5.0)
    assert got.item() == pytest.approx((_bce(0.3, 0) + _bce(-0.2, 0)) / 2, rel=1e-5)


def test_rank_pairs_deterministic_by_generator():
    g = lambda s: torch.Generator().manual_seed(s)
    p, t = torch.randn(3, 20), torch.rand(3, 20)
    hit = torch.rand(3, 20) > 0.3
    a = aux.rank_hinge(p, t, hit, 8, 0.5, g(5))
    assert a.item() == aux.rank_hinge(p, t, hit, 8, 0.5, g(5)).item()
    assert a.item() != aux.rank_hinge(p, t, hit, 8, 0.5, g(6)).item()


# ---------------------------------------------------------------- B-3 / E
def test_b3_and_e_hand_computed():
    x = torch.tensor([[0.1, -0.4, 0.7, 2.0, 0.0]])[..., None]
    types = torch.tensor([[tt.A_POINT, tt.POINT, tt.A_POINT, tt.A_RAY, tt.Q_POINT]])
    feat = _feat([[{tt.CH_DIST: 0.01}, {tt.CH_DIST: 0.2}, {tt.CH_DIST: -0.03}, {tt.CH_DIST: 0.0},
                   {tt.CH_DIST: 0.0}]])
    heads = nn.ModuleDict({"point_dist": _identity_heads("a")["a"], "e_point_dist": _identity_heads("b")["b"]})
    b3 = (_sl1(_sp(0.1), 0.01) + _sl1(_sp(0.7), 0.0)) / 2  # 0.2 > tau is excluded
    assert aux.b3_near_point_loss(x, feat, types, heads, 0.05).item() == pytest.approx(b3, rel=1e-5)
    e = (_sl1(_sp(0.1), 0.01) + _sl1(_sp(-0.4), 0.2) + _sl1(_sp(0.7), 0.0)) / 3
    assert aux.e_point_dist_loss(x, feat, types, heads).item() == pytest.approx(e, rel=1e-5)
    assert aux.b3_near_point_loss(x, feat, types, heads, -1.0).item() == 0.0


def test_aux_heads_only_for_enabled_weights():
    assert set(aux.AuxHeads(8)) == set() and not aux.AuxHeads(8).enabled
    assert set(aux.AuxHeads(8, b2_weight=0.1)) == {"ray_hit", "ray_t"}
    h = aux.AuxHeads(8, 0.1, 0.2, 0.3)
    assert set(h) == {"ray_hit", "ray_t", "point_dist", "e_point_dist"}
    assert all(m.in_features == 8 and m.out_features == 1 for m in h.values())


# ---------------------------------------------------------------- answer drop
def _qa_batch(B=3):
    seq = [tt.BOS] + [tt.Q_POINT, tt.A_POINT] * 4 + [tt.Q_RAY, tt.A_RAY] * 4 + [tt.POINT, tt.RAY, tt.EOS]
    types = torch.tensor([seq] * B)
    feat = torch.rand(B, len(seq), tt.FEAT_DIM) + 0.5  # no zeros anywhere
    return feat, types


def test_answer_drop_channels():
    feat, types = _qa_batch()
    orig = feat.clone()
    assert aux.answer_drop(feat, types, 0.0) is feat
    out = aux.answer_drop(feat, types, 1.0, torch.Generator().manual_seed(0))
    ray_ch = [0, 1, 2, 9, 11, 12, 13, 14]
    for b in range(feat.shape[0]):
        for i, t in enumerate(types[b].tolist()):
            exp = feat[b, i].clone()
            if t in (tt.A_POINT, tt.POINT):
                exp[tt.CH_DIST] = 0
            elif t in (tt.A_RAY, tt.RAY):
                exp[ray_ch] = 0
            assert torch.equal(out[b, i], exp), (b, i, t)
    assert torch.equal(feat, orig)  # input untouched (no in-place)

    part = aux.answer_drop(feat, types, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(part, aux.answer_drop(feat, types, 0.5, torch.Generator().manual_seed(3)))
    changed = (part != feat).any(-1)
    droppable = sum((types == k) for k in (tt.A_POINT, tt.POINT, tt.A_RAY, tt.RAY)).bool()
    assert not (changed & ~droppable).any()  # queries, BOS, EOS never touched
    assert 0 < int(changed.sum()) < int(droppable.sum())
    # query channels kept on every token: point xyz of POINT/A_POINT/Q_POINT, ray o and d
    assert torch.equal(part[..., 3:9], feat[..., 3:9])
    pt = (types == tt.POINT) | (types == tt.A_POINT) | (types == tt.Q_POINT)
    assert torch.equal(part[..., 0:3][pt], feat[..., 0:3][pt])


# ---------------------------------------------------------------- distill / cycle / D
def _manual_masked_cos(a, b, mask):
    vals = []
    for bi in range(a.shape[0]):
        for t in range(a.shape[1]):
            if mask[bi, t]:
                u, v = a[bi, t].double(), b[bi, t].double()
                vals.append(1 - float(u @ v / (u.norm() * v.norm())))
    return sum(vals) / len(vals)


def test_distill_and_cycle_equal_one_minus_cos_over_answer_mask():
    _, types = _qa_batch(2)
    types[1, 3] = tt.MISSING_RAY
    T = types.shape[1]
    s, t = torch.randn(2, T - 1, 6, requires_grad=True), torch.randn(2, T - 1, 6, requires_grad=True)
    tgt = types[:, 1:]
    mask = (tgt == tt.A_POINT) | (tgt == tt.A_RAY)
    exp = _manual_masked_cos(s.detach(), t.detach(), mask)
    d = aux.distill_loss(s, t, types)
    c = aux.cycle_loss(s, t, types)
    assert d.item() == pytest.approx(exp, rel=1e-5) and c.item() == pytest.approx(exp, rel=1e-5)
    c.backward()
    assert t.grad is None and s.grad is not None  # stop-gradient on the target side


def test_d_hard_topk_brute_force():
    torch.manual_seed(0)
    seq0 = [tt.BOS] + [tt.Q_POINT, tt.A_POINT] * 9 + [tt.EOS]           # 9 answers
    seq1 = [tt.BOS] + [tt.Q_POINT, tt.A_POINT] * 3 + [tt.Q_RAY] * 12 + [tt.EOS]  # 3 answers
    seq2 = [tt.BOS] + [tt.MISSING_RAY] * 19                              # none (not counted)
    types = torch.tensor([seq0, seq1, seq2])
    z, zh = torch.randn(3, 20, 5), torch.randn(3, 20, 5)
    for frac, mt in ((0.25, 2), (0.5, 1), (0.1, 32), (1.0, 1)):
        per = []
        for b in range(2):
            vals = sorted((1 - float(torch.nn.functional.cosine_similarity(zh[b, t], z[b, t + 1], dim=0))
                           for t in range(19) if types[b, t + 1] == tt.A_POINT), reverse=True)
            k = min(len(vals), max(math.ceil(frac * len(vals)), mt))
            per.append(sum(vals[:k]) / k)
        got = aux.d_hard_loss(z, zh, types, frac, mt)
        assert got.item() == pytest.approx(sum(per) / 2, rel=1e-5), (frac, mt)
    assert aux.d_hard_loss(z[2:], zh[2:], types[2:]).item() == 0.0


# ---------------------------------------------------------------- pretrain integration
BASE = ["--epochs", "2", "--batch", "4", "--n_point", "16", "--n_ray", "8", "--d_model", "32",
        "--layers", "1", "--heads", "2", "--num_workers", "0", "--qa_tokens", "1",
        "--dual_mask_near", "0.3", "--dual_mask_window", "4", "--seed", "1"]


@pytest.fixture(scope="module")
def run0(tmp_path_factory):
    root = tmp_path_factory.mktemp("aux")
    write_planted(root / "c", "train", 4, seed=0)
    base = ["--cache_root", str(root / "c"), *BASE]
    assert pretrain.main(base + ["--save_dir", str(root / "off")]) == 0
    return root, base


def _log(d):
    return [json.loads(l) for l in (d / "train_log.jsonl").read_text().splitlines()]


def _equal_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flag", ["--aux_b2_weight", "--aux_b3_weight", "--aux_e_weight",
                                  "--cycle_weight", "--d_hard_weight"])
def test_each_aux_flag_changes_loss_and_trains(run0, tmp_path, flag):
    root, base = run0
    assert pretrain.main(base + ["--save_dir", str(tmp_path), flag, "0.5"]) == 0
    off, on = _log(root / "off"), _log(tmp_path)
    term = {"--aux_b2_weight": "b2", "--aux_b3_weight": "b3", "--aux_e_weight": "e",
            "--cycle_weight": "cycle", "--d_hard_weight": "d"}[flag]
    assert len(on) == 2
    for r in on:
        assert all(math.isfinite(r[k]) for k in ("loss", "loss_main", term))
        assert r["loss"] == pytest.approx(r["loss_main"] + 0.5 * r[term], rel=1e-4, abs=1e-6)
    # the first step's main loss is the same model/batch; the total differs by the aux term
    assert on[0]["loss"] != off[0]["loss"]
    ck = load_checkpoint(tmp_path / "last.pt")
    if flag in ("--aux_b2_weight", "--aux_b3_weight", "--aux_e_weight"):
        assert ck["aux_heads"] and all(torch.isfinite(v).all() for v in ck["aux_heads"].values())
    else:
        assert ck["aux_heads"] is None


def test_all_zero_weights_bit_identical(run0, tmp_path):
    root, base = run0
    zeros = ["--aux_b2_weight", "0", "--aux_b3_weight", "0", "--aux_e_weight", "0",
             "--teacher_distill_weight", "0", "--teacher_answer_drop_prob", "0.4",
             "--cycle_weight", "0", "--cycle_answer_drop_prob", "0.3", "--d_hard_weight", "0",
             "--teacher_ckpt", str(root / "off" / "last.pt")]
    assert pretrain.main(base + ["--save_dir", str(tmp_path)] + zeros) == 0
    a, b = load_checkpoint(root / "off" / "last.pt"), load_checkpoint(tmp_path / "last.pt")
    assert _equal_state(a["model"], b["model"]) and b["aux_heads"] is None
    assert [r["loss"] for r in _log(root / "off")] == [r["loss"] for r in _log(tmp_path)]


def test_teacher_distillation_with_answer_drop(run0, tmp_path):
    root, base = run0
    assert pretrain.main(base + ["--save_dir", str(tmp_path), "--teacher_ckpt", str(root / "off" / "last.pt"),
                                 "--teacher_distill_weight", "0.1", "--teacher_answer_drop_prob", "0.4"]) == 0
    log = _log(tmp_path)
    assert all(math.isfinite(r["distill"]) and r["distill"] > 0 for r in log)
    assert log[0]["loss"] == pytest.approx(log[0]["loss_main"] + 0.1 * log[0]["distill"], rel=1e-4)
    assert log[0]["loss"] != _log(root / "off")[0]["loss"]


def test_teacher_n_types_mismatch_names_file(run0, tmp_path, capsys):
    root, base = run0
    legacy = tmp_path / "legacy"
    lbase = list(base)
    lbase[lbase.index("--qa_tokens") + 1] = "0"
    lbase[lbase.index("--epochs") + 1] = "1"
    assert pretrain.main(lbase + ["--save_dir", str(legacy)]) == 0
    rc = pretrain.main(base + ["--save_dir", str(tmp_path / "s"), "--teacher_ckpt", str(legacy / "last.pt"),
                               "--teacher_distill_weight", "0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and "n_types" in err and str(legacy / "last.pt") in err


def test_mae_rejects_aux_flags(run0, tmp_path, capsys):
    root, base = run0
    rc = pretrain.main(base + ["--save_dir", str(tmp_path), "--objective", "mae", "--cycle_weight", "0.1"])
    assert rc == 2 and "--objective nepa" in capsys.readouterr().err


def test_resume_restores_aux_heads_and_optimizer(run0, tmp_path):
    root, base = run0
    flags = ["--aux_b2_weight", "0.2", "--aux_e_weight", "0.2", "--cycle_weight", "0.1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert pretrain.main(base + ["--save_dir", str(full)] + flags) == 0
    one = list(base)
    one[one.index("--epochs") + 1] = "1"
    assert pretrain.main(one + ["--save_dir", str(cut)] + flags) == 0
    assert set(load_checkpoint(cut / "last.pt")["aux_heads"]) == {
        "ray_hit.weight", "ray_hit.bias", "ray_t.weight", "ray_t.bias",
        "e_point_dist.weight", "e_point_dist.bias"}
    assert pretrain.main(base + ["--save_dir", str(cut)] + flags) == 0  # auto-resume epoch 1
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(cut / "last.pt")
    assert b["epoch"] == 1
    for key in ("model", "aux_heads"):
        for k in a[key]:
            assert torch.allclose(a[key][k], b[key][k], atol=1e-6, rtol=0), (key, k)
