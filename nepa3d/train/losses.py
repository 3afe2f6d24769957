"""Pretraining losses: pure functions of model outputs and token types.

Shapes: z, z_hat, h (B, T, C); type_id (B, T); feat (B, T, 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nepa3d.token import types as tt


def _isin(type_id: torch.Tensor, kinds) -> torch.Tensor:
    m = torch.zeros_like(type_id, dtype=torch.bool)
    for k in kinds:
        m |= type_id == k
    return m


def answer_mask(type_id: torch.Tensor) -> torch.Tensor:
    """Valid next-token targets (B, T-1): not MISSING_RAY; in QA mode (any A_* token in the
    batch) only A_POINT / A_RAY targets, so the loss is query -> answer only."""
    tgt = type_id[:, 1:]
    valid = tgt != tt.MISSING_RAY
    ans = _isin(tgt, tt.ANSWER_TYPES)
    if bool(ans.any()):
        valid = valid & ans
    return valid


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) along the last axis. (..., C), (..., C) -> (...)"""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    if int(n) == 0:
        return x.sum() * 0.0
    return (x * mask).sum() / n


def nepa_loss(z: torch.Tensor, z_hat: torch.Tensor, type_id: torch.Tensor) -> torch.Tensor:
    """Mean over valid targets of 1 - cos(z_hat[:, t], stopgrad z[:, t+1])."""
    per = cosine_distance(z_hat[:, :-1], z[:, 1:].detach())
    return masked_mean(per, answer_mask(type_id))


def mae_mask(type_id: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Per sample, mask k = int(n * ratio) of the tokens that are neither BOS nor EOS. (B, T) bool"""
    B, T = type_id.shape
    eligible = (type_id != tt.BOS) & (type_id != tt.EOS)
    mask = torch.zeros_like(eligible)
    for b in range(B):
        idx = torch.nonzero(eligible[b], as_tuple=False).flatten()
        k = int(len(idx) * mask_ratio)
        if k > 0:
            perm = torch.randperm(len(idx), generator=generator, device="cpu")[:k].to(idx.device)
            mask[b, idx[perm]] = True
    return mask


def mae_loss(z_hat: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between z_hat and the (no-grad) embedding of the unmasked tokens, at masked positions."""
    if int(mask.sum()) == 0:
        return z_hat.sum() * 0.0
    return F.mse_loss(z_hat[mask].float(), target[mask].float())
