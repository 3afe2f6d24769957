"""Auxiliary pretraining losses for the NEPA objective (B-2, B-3, E, C-0/C-1, C-2, D).

Shapes: z, z_hat, h (B, T, C); type_id (B, T); feat (B, T, 15). The "next-token" views are
``pred_tok = z_hat[:, :-1]`` / ``hid_tok = h[:, :-1]`` (B, T-1, C) with targets read from
``feat_next = feat[:, 1:]`` (B, T-1, 15) and ``type_next = type_id[:, 1:]`` (B, T-1).

Every random draw takes an explicit ``torch.Generator`` (CPU) so that a run is a pure
function of (seed, step) and a killed + resumed run gives identical weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.token import types as tt
from nepa3d.train.losses import _isin, answer_mask, cosine_distance, masked_mean
from nepa3d.cli.groups import model_shape_kwargs

RAY_HEADS = ("ray_hit", "ray_t")
POINT_HEAD = "point_dist"
E_HEAD = "e_point_dist"

_POINT_DROP = (tt.A_POINT, tt.POINT)
_RAY_DROP = (tt.A_RAY, tt.RAY)


def make_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """CPU generator seeded from (seed, step, salt); salt separates the independent streams."""
    s = ((int(seed) * 1000003 + int(step)) * 1315423911 + int(salt) * 2654435761) & 0xFFFFFFFFFFFF
    return torch.Generator().manual_seed(s)


class AuxHeads(nn.ModuleDict):
    """Linear(d_model, 1) heads, created only for the losses whose weight is > 0:
    ``ray_hit``, ``ray_t`` (B-2), ``point_dist`` (B-3), ``e_point_dist`` (E)."""

    def __init__(self, d_model: int, b2_weight: float = 0.0, b3_weight: float = 0.0,
                 e_weight: float = 0.0):
        super().__init__()
        if b2_weight > 0:
            self["ray_hit"] = nn.Linear(d_model, 1)
            self["ray_t"] = nn.Linear(d_model, 1)
        if b3_weight > 0:
            self[POINT_HEAD] = nn.Linear(d_model, 1)
        if e_weight > 0:
            self[E_HEAD] = nn.Linear(d_model, 1)

    @property
    def enabled(self) -> bool:
        return len(self) > 0


def _head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T) float32."""
    return head(x).squeeze(-1).float()


def _zero(x: torch.Tensor) -> torch.Tensor:
    return x.sum().float() * 0.0


def rank_hinge(pred_t: torch.Tensor, gt_t: torch.Tensor, hit: torch.Tensor, n_pairs: int,
               margin: float, generator: torch.Generator | None) -> torch.Tensor:
    """Pairwise ranking hinge on hit targets.

    pred_t, gt_t (B, N) float, hit (B, N) bool. Per sample with >= 2 hits draw ``n_pairs``
    pairs (i, j) uniformly with replacement among its hits (``torch.randint``), drop i == j
    and equal gt t, and take mean(relu(margin - sign(gt_i - gt_j) * (pred_i - pred_j))).
    Returns the mean over the samples that keep at least one pair (0 if none)."""
    per = []
    for b in range(pred_t.shape[0]):
        idx = torch.nonzero(hit[b], as_tuple=False).flatten()
        n = int(idx.numel())
        if n < 2 or n_pairs <= 0:
            continue
        i = torch.randint(0, n, (n_pairs,), generator=generator).to(idx.device)
        j = torch.randint(0, n, (n_pairs,), generator=generator).to(idx.device)
        gi, gj = gt_t[b, idx[i]], gt_t[b, idx[j]]
        keep = (i != j) & (gi != gj)
        if not bool(keep.any()):
            continue
        s = torch.sign(gi - gj)[keep]
        d = (pred_t[b, idx[i]] - pred_t[b, idx[j]])[keep]
        per.append(F.relu(margin - s * d).mean())
    if not per:
        return _zero(pred_t)
    return torch.stack(per).mean()


def b2_ray_loss(pred_tok: torch.Tensor, feat_next: torch.Tensor, type_next: torch.Tensor,
                heads: nn.ModuleDict, hit_w: float = 1.0, t_w: float = 1.0, rank_w: float = 1.0,
                rank_pairs: int = 128, margin: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """B-2 ray-answer loss.

    pred_tok (B, T-1, C); feat_next (B, T-1, 15); type_next (B, T-1). Ray targets are types
    A_RAY / RAY; gt_hit = clamp(ch11, 0, 1), gt_t = max(ch9, 0); predicted t =
    softplus(ray_t(pred)). hit_bce = BCEWithLogits(ray_hit(pred), gt_hit) over ray targets;
    on hit targets (gt_hit > 0.5): t_reg = SmoothL1(beta 1) and the :func:`rank_hinge`.
    Returns hit_w * bce + t_w * t_reg + rank_w * rank (0 without ray targets)."""
    ray = _isin(type_next, tt.RAY_TARGET_TYPES)
    if not bool(ray.any()):
        return _zero(pred_tok)
    gt_hit = feat_next[..., tt.CH_HIT].float().clamp(0.0, 1.0)
    gt_t = feat_next[..., tt.CH_T].float().clamp_min(0.0)
    logit = _head(heads["ray_hit"], pred_tok)
    pred_t = F.softplus(_head(heads["ray_t"], pred_tok))
    bce = F.binary_cross_entropy_with_logits(logit[ray], gt_hit[ray])
    hit = ray & (gt_hit > 0.5)
    if bool(hit.any()):
        t_reg = F.smooth_l1_loss(pred_t[hit], gt_t[hit], beta=1.0)
        rank = rank_hinge(pred_t, gt_t, hit, rank_pairs, margin, generator)
    else:
        t_reg = rank = _zero(pred_t)
    return hit_w * bce + t_w * t_reg + rank_w * rank


def _point_dist_loss(x: torch.Tensor, feat_next: torch.Tensor, type_next: torch.Tensor,
                     head: nn.Module, near_tau: float | None) -> torch.Tensor:
    pts = _isin(type_next, tt.POINT_TARGET_TYPES)
    gt = feat_next[..., tt.CH_DIST].float().clamp_min(0.0)
    if near_tau is not None:
        pts = pts & (gt <= near_tau)
    if not bool(pts.any()):
        return _zero(x)
    pred = F.softplus(_head(head, x))
    return F.smooth_l1_loss(pred[pts], gt[pts], beta=1.0)


def b3_near_point_loss(pred_tok: torch.Tensor, feat_next: torch.Tensor, type_next: torch.Tensor,
                       heads: nn.ModuleDict, near_tau: float = 0.05) -> torch.Tensor:
    """B-3: SmoothL1(softplus(point_dist(pred_tok)), max(ch10, 0)) on point targets
    (A_POINT / POINT) whose gt distance is <= near_tau. (B, T-1, C) -> scalar (0 if none)."""
    return _point_dist_loss(pred_tok, feat_next, type_next, heads[POINT_HEAD], near_tau)


def e_point_dist_loss(hid_tok: torch.Tensor, feat_next: torch.Tensor, type_next: torch.Tensor,
                      heads: nn.ModuleDict) -> torch.Tensor:
    """E: SmoothL1(softplus(e_point_dist(h[:, :-1])), max(ch10, 0)) on all point targets.
    hid_tok (B, T-1, C) -> scalar (0 if none)."""
    return _point_dist_loss(hid_tok, feat_next, type_next, heads[E_HEAD], None)


def answer_drop(feat: torch.Tensor, type_id: torch.Tensor, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Drop answer observations (``_drop_answer_observations``). feat (B, T, 15) -> copy.

    Each A_POINT / A_RAY / POINT / RAY token is dropped with probability p (``torch.rand``
    on the CPU generator). Dropped point tokens: ch10 := 0. Dropped ray tokens: ch 0:3, 9, 11,
    12:15 := 0. Query channels (point xyz, ray o and d) are kept."""
    if p <= 0:
        return feat
    u = torch.rand(type_id.shape, generator=generator).to(type_id.device)
    drop = u < p
    pt = (drop & _isin(type_id, _POINT_DROP))[..., None]
    ry = (drop & _isin(type_id, _RAY_DROP))[..., None]
    ch = torch.arange(feat.shape[-1], device=feat.device)
    pt_ch = ch == tt.CH_DIST
    ry_ch = (ch < 3) | (ch == tt.CH_T) | (ch == tt.CH_HIT) | (ch >= 12)
    kill = (pt & pt_ch) | (ry & ry_ch)
    return feat.masked_fill(kill, 0.0)


def distill_loss(s_pred: torch.Tensor, t_pred: torch.Tensor, type_id: torch.Tensor) -> torch.Tensor:
    """C-0/C-1: mean over ``answer_mask(type_id)`` of 1 - cos(s_pred, stopgrad t_pred).
    s_pred, t_pred (B, T-1, C); type_id (B, T)."""
    return masked_mean(cosine_distance(s_pred, t_pred.detach()), answer_mask(type_id))


def cycle_loss(zc_pred: torch.Tensor, z_pred: torch.Tensor, type_id: torch.Tensor) -> torch.Tensor:
    """C-2: mean over the answer mask of 1 - cos(z_hat_c[:, :-1], stopgrad z_hat[:, :-1]).
    zc_pred, z_pred (B, T-1, C); type_id (B, T)."""
    return masked_mean(cosine_distance(zc_pred, z_pred.detach()), answer_mask(type_id))


def d_hard_loss(z: torch.Tensor, z_hat: torch.Tensor, type_id: torch.Tensor,
                top_frac: float = 0.25, min_tokens: int = 32) -> torch.Tensor:
    """D hard-query mining. z, z_hat (B, T, C); type_id (B, T).

    tok = 1 - cos(z_hat[:, :-1], stopgrad z[:, 1:]); per sample over its n answer-mask
    values, k = min(n, max(ceil(top_frac * n), min_tokens)) and the top-k mean; then the mean
    over samples with n > 0 (0 if none). top_frac is clamped to [0, 1], min_tokens to >= 1."""
    tok = cosine_distance(z_hat[:, :-1], z[:, 1:].detach())
    mask = answer_mask(type_id)
    frac = min(max(float(top_frac), 0.0), 1.0)
    mt = max(int(min_tokens), 1)
    per = []
    for b in range(tok.shape[0]):
        v = tok[b][mask[b]]
        n = int(v.numel())
        if n == 0:
            continue
        k = min(n, max(int(math.ceil(frac * n)), mt))
        per.append(torch.topk(v, k).values.mean())
    if not per:
        return _zero(tok)
    return torch.stack(per).mean()


def load_teacher(path, *, max_len: int, n_types: int, d_model: int, heads: int, layers: int,
                 device="cpu") -> QueryNepa:
    """Frozen teacher QueryNepa from a checkpoint (``weights_only`` load).

    d_model / n_types come from ``type_emb``; heads / layers from the checkpoint's
    model_config or args, else the given (student) values. pos_emb is resized to ``max_len``.
    Raises CheckpointError naming the file when n_types differs from the student's, and, as
    :func:`~nepa3d.models.checkpoint.load_backbone` does, naming the first tensor that does not fit."""
    from nepa3d.utils.ckpt import (CheckpointError, check_fits, load_backbone_checkpoint,
                                   resize_pos_emb)

    ck = load_backbone_checkpoint(path)
    sd = dict(ck["model"])
    t_types, t_d = sd["type_emb.weight"].shape
    if t_types != n_types:
        raise CheckpointError(path, f"teacher n_types {t_types} != student n_types {n_types} "
                                    "(qa_tokens must match)")
    if t_d != d_model:
        raise CheckpointError(path, f"teacher d_model {t_d} != student d_model {d_model}")
    mc = ck.get("model_config") or {}
    recorded = model_shape_kwargs(ck.get("args") or {})  # the flags as ModelConfig keywords
    cfg = ModelConfig(d_model=int(t_d), n_types=int(t_types),
                      nhead=int(mc.get("nhead", recorded.get("nhead", heads))),
                      num_layers=int(mc.get("num_layers", recorded.get("num_layers", layers))),
                      mlp_ratio=float(mc.get("mlp_ratio", recorded.get("mlp_ratio", 4.0))),
                      max_len=int(max_len))
    sd["pos_emb"] = resize_pos_emb(sd["pos_emb"], int(max_len))
    with torch.random.fork_rng(devices=[]):  # building the teacher must not shift the global RNG
        teacher = QueryNepa(cfg)
    check_fits(path, sd, teacher)
    missing, unexpected = teacher.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(path, f"teacher state dict mismatch: missing={missing[:4]} "
                                    f"unexpected={unexpected[:4]}")
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
