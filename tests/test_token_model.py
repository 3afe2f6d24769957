"""Tokenizer, ordering, model masks and losses against independent references."""

import numpy as np
import pytest
import torch

from nepa3d.models.query_nepa import ModelConfig, QueryNepa, dual_mask
from nepa3d.token import types as tt
from nepa3d.token.ordering import morton_code, ray_order
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.train import losses
from nepa3d.utils.ckpt import resize_pos_emb


def naive_morton(q):
    """Bit-by-bit interleave: bit b of x -> 3b, of y -> 3b+1, of z -> 3b+2."""
    code = 0
    for b in range(10):
        for axis in range(3):
            code |= ((int(q[axis]) >> b) & 1) << (3 * b + axis)
    return code


def test_morton_matches_naive_interleave():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (500, 3))
    q = np.clip((xyz * 0.5 + 0.5) * 1023, 0, 1023).astype(np.int64)
    expect = np.array([naive_morton(r) for r in q])
    assert np.array_equal(morton_code(xyz), expect)
    # corners: origin corner is 0, far corner has all 30 bits set
    assert morton_code(np.array([[-1, -1, -1.0], [1, 1, 1.0]])).tolist() == [0, (1 << 30) - 1]


def test_ray_order_is_theta_then_phi():
    d = np.array([[0, 1, 0.5], [1, 0, 0.0], [1, 0, 0.5], [0, 1, -0.5]], dtype=float)
    theta = np.arctan2(d[:, 1], d[:, 0])
    phi = np.arccos(d[:, 2] / np.linalg.norm(d, axis=1))
    expect = sorted(range(4), key=lambda i: (theta[i], phi[i]))
    assert ray_order(d).tolist() == expect


def _pools(rng, P=50, M=20):
    return dict(pt_xyz_pool=rng.uniform(-1, 1, (P, 3)).astype("f4"), pt_dist_pool=rng.random(P).astype("f4"),
                ray_o_pool=rng.normal(size=(M, 3)).astype("f4"), ray_d_pool=rng.normal(size=(M, 3)).astype("f4"),
                ray_hit_pool=(rng.random(M) > 0.5).astype("f4"), ray_t_pool=rng.random(M).astype("f4"),
                ray_n_pool=rng.normal(size=(M, 3)).astype("f4"), ray_available=True)


def test_qa_layout_channels_and_length():
    pools = _pools(np.random.default_rng(1))
    cfg = TokenizerConfig(n_point=6, n_ray=4, qa_tokens=True, add_eos=True)
    feat, types = build_sequence(pools, cfg, np.random.RandomState(0))
    assert feat.shape == (1 + 12 + 8 + 1, 15) and len(types) == cfg.seq_len
    assert types[0] == tt.BOS and types[-1] == tt.EOS
    assert types[1:13].tolist() == [tt.Q_POINT, tt.A_POINT] * 6
    assert types[13:21].tolist() == [tt.Q_RAY, tt.A_RAY] * 4
    q, a = feat[1:13:2], feat[2:13:2]
    assert np.all(q[:, 3:] == 0) and np.all(a[:, :10] == 0) and np.all(a[:, 11:] == 0)
    # every answer distance is the pool distance of its query point
    pool = {tuple(np.round(x, 6)): d for x, d in zip(pools["pt_xyz_pool"], pools["pt_dist_pool"])}
    for qx, ad in zip(q[:, :3], a[:, 10]):
        assert pool[tuple(np.round(qx, 6))] == pytest.approx(ad)
    # ray answers: hit point = o + t d on hits, zero on misses
    qr, ar = feat[13:21:2], feat[14:21:2]
    x_hit = (qr[:, 3:6] + ar[:, 9:10] * qr[:, 6:9]) * (ar[:, 11:12] > 0.5)
    assert np.allclose(ar[:, :3], x_hit, atol=1e-6)


def test_missing_rays_are_zeroed_slots():
    pools = _pools(np.random.default_rng(2))
    feat, types = build_sequence(pools, TokenizerConfig(4, 3, qa_tokens=False), np.random.RandomState(0),
                                 ray_available=False)
    assert (types[5:8] == tt.MISSING_RAY).all() and np.all(feat[5:8] == 0)


def brute_dual_mask(T, p_near, p_far, window, u, ql=None):
    out = np.zeros((T, T), bool)
    for i in range(T):
        for j in range(T):
            rel = i - j
            if rel <= 0 or (ql is not None and not (ql[i] and ql[j])):
                continue
            p = (p_near if rel <= window else p_far) if window > 0 else p_far
            out[i, j] = u[i, j] < p
    return out


@pytest.mark.parametrize("window", [0, 3])
def test_dual_mask_matches_brute_force(window):
    T = 12
    m = dual_mask(T, 0.4, 0.1, window, generator=torch.Generator().manual_seed(5))
    u = torch.rand(T, T, generator=torch.Generator().manual_seed(5)).numpy()
    assert np.array_equal(m.numpy(), brute_dual_mask(T, 0.4, 0.1, window, u))
    types = torch.tensor([[0, 5, 6, 5, 6, 7, 8, 7, 8, 5, 6, 4]])
    m2 = dual_mask(T, 0.9, 0.9, window, generator=torch.Generator().manual_seed(5), type_id=types,
                   type_aware=True)
    ql = np.isin(types[0].numpy(), tt.QUERY_LIKE_TYPES)
    assert np.array_equal(m2.numpy(), brute_dual_mask(T, 0.9, 0.9, window, u, ql))
    assert dual_mask(T, 0, 0, window) is None


def test_attention_is_causal_and_mask_blocks():
    torch.manual_seed(0)
    m = QueryNepa(ModelConfig(d_model=32, nhead=4, num_layers=2, max_len=16)).eval()
    feat, types = torch.randn(1, 10, 15), torch.randint(0, 9, (1, 10))
    _, _, h = m(feat, types)
    feat2 = feat.clone()
    feat2[:, 6:] = torch.randn(1, 4, 15)  # changing the future leaves the past unchanged
    _, _, h2 = m(feat2, types)
    assert torch.allclose(h[:, :6], h2[:, :6], atol=1e-6) and not torch.allclose(h[:, 6:], h2[:, 6:])
    blocked = torch.zeros(10, 10, dtype=torch.bool)
    blocked[5, 2] = True  # only row 5 (and rows after it, through layer 2) may change
    _, _, h3 = m(feat, types, blocked)
    assert torch.allclose(h[:, :5], h3[:, :5], atol=1e-6) and not torch.allclose(h[:, 5], h3[:, 5])


def test_nepa_loss_hand_case():
    # z: targets; z_hat: predictions. QA types: loss only where the *next* token is an answer.
    types = torch.tensor([[tt.BOS, tt.Q_POINT, tt.A_POINT, tt.EOS]])
    z = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [5, 5]]])
    z_hat = torch.tensor([[[9.0, 9], [1, 0], [3, 3], [0, 0]]])
    # only position 1 -> target 2 counts: 1 - cos([1,0],[1,1]) = 1 - 1/sqrt(2)
    assert losses.nepa_loss(z, z_hat, types).item() == pytest.approx(1 - 2 ** -0.5, abs=1e-6)
    legacy = torch.tensor([[tt.BOS, tt.POINT, tt.POINT, tt.EOS]])
    # legacy: all three targets: [9,9]->[0,1]: 1-1/sqrt2; [1,0]->[1,1]: 1-1/sqrt2; [3,3]->[5,5]: 0
    e = [1 - 2 ** -0.5, 1 - 2 ** -0.5, 0.0]
    assert losses.nepa_loss(z, z_hat, legacy).item() == pytest.approx(np.mean(e), abs=1e-6)


def test_mae_mask_counts():
    types = torch.tensor([[0, 1, 1, 1, 1, 1, 3, 3, 3, 3, 4]] * 3)
    m = losses.mae_mask(types, 0.4, torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [int(9 * 0.4)] * 3
    assert not m[:, 0].any() and not m[:, -1].any()


def test_pos_emb_resize_preserves_positions():
    pos = torch.randn(1, 7, 4)
    assert torch.equal(resize_pos_emb(pos, 7), pos)
    ramp = torch.linspace(0, 1, 8).view(1, 8, 1)  # a linear ramp stays a linear ramp
    up = resize_pos_emb(ramp, 16)[0, :, 0]
    assert up[0] == pytest.approx(0) and up[-1] == pytest.approx(1)
    assert torch.all(up[1:] >= up[:-1])
    # upsample x2 then downsample back recovers interior positions of a linear ramp
    back = resize_pos_emb(resize_pos_emb(ramp, 16), 8)
    assert torch.allclose(back[0, 1:-1], ramp[0, 1:-1], atol=1e-6)
