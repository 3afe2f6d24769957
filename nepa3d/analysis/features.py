"""Frozen-model feature extraction shared by the evaluators.

- :func:`load_eval_model`: checkpoint -> eval-mode model whose positional embedding covers
  the evaluator's sequence length (resized by linear interpolation when it is too short and
  no explicit ``--max_len`` was given).
- :func:`forward_batched`: several sequences per forward (grouped by length), under
  ``torch.inference_mode``; fp32 by default, bf16 autocast on request. A ``reduce`` callback turns
  each batch's (h, z_hat) into small per-item arrays on the device, so only pooled features
  ever come back to the host.
- UCPR pooling (:func:`pool_embeddings`) and token ablations (:func:`ablate_tokens`).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from nepa3d.token import types as tt
from nepa3d.models.checkpoint import CkptSettings, LoadedBackbone, load_backbone

POOLINGS = ("eos", "mean_a", "mean_zhat")
LEGACY_NON_ANSWER = (tt.BOS, tt.EOS, tt.MISSING_RAY)


class EvalError(RuntimeError):
    """An evaluator input that cannot be used (no cache files, no CUDA ...): one clear line."""


class NonFiniteOutput(EvalError):
    """The model's outputs hold NaN or inf (a checkpoint whose finite weights overflow): every
    metric computed from them would be meaningless (NaN scores rank first, NaN predictions
    turn into nulls), so the evaluator refuses the checkpoint instead."""




def load_eval_model(ckpt: str, *, max_len: int, qa_tokens: int, add_eos: int, device: torch.device,
                    seq_len: Callable[[CkptSettings], int]) -> LoadedBackbone:
    """Load a checkpoint for evaluation.

    ``seq_len(lb)`` gives the longest sequence the evaluator will feed, from the resolved
    token settings (``lb.qa_tokens``, ``lb.add_eos``, ``lb.n_point`` ...). With
    ``max_len >= 0`` the positional embedding is resized to it (an error if it is shorter
    than needed); otherwise it grows to the needed length when the checkpoint's is shorter.
    """
    lb = load_backbone(ckpt, max_len=max_len, qa_tokens=qa_tokens, add_eos=add_eos,
                       required_len=seq_len, device="cpu")
    lb.model.eval().to(device)
    for p in lb.model.parameters():
        p.requires_grad_(False)
    return lb


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32 | bf16 (autocast) | auto (bf16 on CUDA, fp32 on CPU): ``--precision``
    (:data:`nepa3d.cli.groups.PRECISIONS`).

    fp32 is the evaluators' default on every device: the backbone has no final norm, the
    residual stream carries a large component shared by all tokens, and bf16 branch outputs
    perturb the informative (per-query) part of h by ~7% (measured on an H100), which moved
    CPAC MAE by ~15% relative; the evaluators are I/O-bound, so bf16 buys no speed.
    """
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return name


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


Reduce = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list], list]


def forward_batched(model: torch.nn.Module,
                    seqs: Iterable[tuple[np.ndarray, np.ndarray, object]], *, batch: int,
                    device: torch.device, reduce: Reduce,
                    precision: str = "fp32",
                    source: str = "the model") -> Iterator[tuple[object, object]]:
    """Run the model over a stream of sequences, ``batch`` at a time (``precision`` fp32 or
    bf16 autocast).

    seqs yields ``(feat (T, 15) float32, type_id (T,) int64, meta)``; sequences of equal T
    are batched together (a batch is flushed when it is full, and all at the end).
    ``reduce(h (B, T, C) fp32, z_hat (B, T, C) fp32, type_id (B, T), metas)`` returns one
    output per item. Yields ``(meta, output)`` in flush order (input order whenever all
    sequences have the same length). Raises :class:`NonFiniteOutput` naming ``source`` (the
    checkpoint path) when h or z_hat of a batch holds NaN or inf.
    """
    batch = max(1, int(batch))
    pending: dict[int, list] = {}

    def flush(T: int):
        items = pending.pop(T)
        feat = torch.from_numpy(np.stack([it[0] for it in items])).to(device, non_blocking=True)
        types = torch.from_numpy(np.stack([it[1] for it in items])).to(device, non_blocking=True)
        metas = [it[2] for it in items]
        with torch.inference_mode(), _autocast(device, precision):
            _, z_hat, h = model(feat, types)
        require_finite_output(h, z_hat, source, precision)
        outs = reduce(h.float(), z_hat.float(), types, metas)
        return list(zip(metas, outs))

    for feat, types, meta in seqs:
        T = int(feat.shape[0])
        pending.setdefault(T, []).append((feat, types, meta))
        if len(pending[T]) >= batch:
            yield from flush(T)
    for T in list(pending):
        yield from flush(T)


def require_finite_output(h: torch.Tensor, z_hat: torch.Tensor, source: str,
                          precision: str) -> None:
    """Raise :class:`NonFiniteOutput` naming ``source`` when h or z_hat holds NaN or inf."""
    if not (bool(torch.isfinite(h).all()) and bool(torch.isfinite(z_hat).all())):
        raise NonFiniteOutput(f"{source}: the model's outputs hold NaN or inf at precision "
                              f"{precision} (weights that overflow); no metric computed")


# --------------------------------------------------------------------------------------------
# UCPR helpers
# --------------------------------------------------------------------------------------------

def answer_mask(type_id: torch.Tensor, qa_tokens: bool) -> torch.Tensor:
    """Answer tokens: A_POINT / A_RAY (QA), every type but BOS / EOS / MISSING_RAY (legacy).
    (B, T) -> bool (B, T)"""
    if qa_tokens:
        return (type_id == tt.A_POINT) | (type_id == tt.A_RAY)
    m = torch.ones_like(type_id, dtype=torch.bool)
    for t in LEGACY_NON_ANSWER:
        m &= type_id != t
    return m


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, C) over mask (B, T); rows with an empty mask use all positions."""
    mask = mask.clone()
    mask[~mask.any(dim=1)] = True
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1)


def pool_embeddings(h: torch.Tensor, z_hat: torch.Tensor, type_id: torch.Tensor, pooling: str,
                    qa_tokens: bool) -> torch.Tensor:
    """Sequence embedding (B, C), L2-normalised (norm + 1e-9).

    eos: h at the last position; mean_a: mean of h over answer tokens; mean_zhat: mean of
    z_hat[:, :-1] over positions whose *next* token is an answer (all positions when none).
    """
    if pooling == "eos":
        v = h[:, -1]
    elif pooling == "mean_a":
        v = _masked_mean(h, answer_mask(type_id, qa_tokens))
    elif pooling == "mean_zhat":
        v = _masked_mean(z_hat[:, :-1], answer_mask(type_id[:, 1:], qa_tokens))
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    return v / (v.norm(dim=-1, keepdim=True) + 1e-9)


def ablate_tokens(feat: np.ndarray, type_id: np.ndarray, *, point_xyz: bool = False,
                  point_dist: bool = False) -> np.ndarray:
    """Zero point xyz (ch 0:3 of POINT / Q_POINT) and/or point distance (ch 10 of POINT /
    A_POINT). (T, 15), (T,) -> (T, 15) (a copy when anything is zeroed)."""
    if not (point_xyz or point_dist):
        return feat
    feat = feat.copy()
    if point_xyz:
        feat[np.isin(type_id, (tt.POINT, tt.Q_POINT)), tt.CH_XYZ] = 0.0
    if point_dist:
        feat[np.isin(type_id, (tt.POINT, tt.A_POINT)), tt.CH_DIST] = 0.0
    return feat


def gather_positions(rep: torch.Tensor, positions: list[np.ndarray]) -> list[np.ndarray]:
    """Per-item rows of rep (B, T, C) at each item's positions -> list of (n_b, C) float32
    (one device-to-host copy when all items have the same number of positions)."""
    lens = {len(p) for p in positions}
    if len(lens) == 1:
        idx = torch.as_tensor(np.stack(positions).astype(np.int64), device=rep.device)  # (B, n)
        rows = torch.arange(len(positions), device=rep.device)[:, None]
        return list(rep[rows, idx].cpu().numpy().astype(np.float32, copy=False))
    out = []
    for b, pos in enumerate(positions):
        idx = torch.as_tensor(np.asarray(pos, dtype=np.int64), device=rep.device)
        out.append(rep[b].index_select(0, idx).cpu().numpy().astype(np.float32, copy=False))
    return out


def default_workers(device: torch.device | None = None) -> int:
    """Loader threads for ``--workers 0``: none on CPU (threads fight the forward's own
    threads for the cores and the GIL: 5x slower on 2 cores), a few beside a GPU."""
    if device is None or device.type != "cuda":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def prefetch_map(fn: Callable, items: Iterable, *, workers: int, ahead: int = 32) -> Iterator:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``ahead`` results in
    flight, yielded in input order (cache decompression and sampling overlap the forward
    passes; results do not depend on the thread count since every item has its own RNG).
    ``workers <= 1``: a plain sequential map."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        pending: deque = deque()
        for it in items:
            pending.append(ex.submit(fn, it))
            if len(pending) >= max(ahead, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
