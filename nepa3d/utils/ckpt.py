"""Checkpoints: atomic save, safe load (``weights_only=True``), pos-emb resize, model rebuild.

Checkpoint dict (pretrain): ``model`` (state dict), ``aux_heads`` (state dict or None),
``opt``, ``scaler``, ``args`` (dict of CLI args incl. resolved max_len), ``epoch``, ``step``,
plus ``model_config`` (the :class:`ModelConfig` as a dict).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from typing import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.token import types as tt


class CheckpointError(RuntimeError):
    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


def checkpoint_bytes(obj: dict) -> bytes:
    """The bytes ``torch.save`` writes for ``obj``, independent of the file name.

    Saving to a path names the zip archive's root folder after the file (a temp name here), so
    the same weights gave different bytes on every save; saving to a buffer always uses
    ``archive/``. Identical checkpoints are then identical files, and content fingerprints of
    downstream results stay valid when a deterministic training run is repeated.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write :func:`checkpoint_bytes` to a temp file in the same folder, fsync, then os.replace
    (never a half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = checkpoint_bytes(obj)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_ckpt_", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; missing/corrupt files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(path, f"cannot be loaded ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(path, "not a nepa3d checkpoint (no 'model' state dict)")
    return ckpt


def first_shape_mismatch(saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                         any_length: tuple[str, ...] = ()) -> tuple[str, tuple, tuple] | None:
    """(key, saved shape, expected shape) of the first key (``expected``'s order) present in both
    state dicts with different shapes; None if every shared key agrees. Keys in ``any_length``
    (the positional embedding, resized on load) are compared without their sequence axis (1)."""
    for key, want in expected.items():
        got = saved.get(key)
        if got is None:
            continue
        a, b = tuple(got.shape), tuple(want.shape)
        if key in any_length:
            a, b = a[:1] + a[2:], b[:1] + b[2:]
        if a != b:
            return key, tuple(got.shape), tuple(want.shape)
    return None


def check_fits(path: str | os.PathLike, saved: Mapping[str, torch.Tensor], model: torch.nn.Module,
               any_length: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError ``<path>: <key>: checkpoint (..) vs model (..)`` when a tensor of
    ``saved`` does not fit ``model`` (``load_state_dict`` would raise a bare RuntimeError)."""
    bad = first_shape_mismatch(saved, model.state_dict(), any_length)
    if bad:
        key, got, want = bad
        raise CheckpointError(path, f"{key}: checkpoint {got} vs model {want}")


def resize_pos_emb(pos: torch.Tensor, new_len: int) -> torch.Tensor:
    """Linear interpolation along the sequence axis. (1, L, D) -> (1, new_len, D)"""
    if pos.shape[1] == new_len:
        return pos
    x = pos.permute(0, 2, 1)
    x = F.interpolate(x, size=new_len, mode="linear", align_corners=False)
    return x.permute(0, 2, 1).contiguous()


def config_from_checkpoint(ckpt: dict) -> ModelConfig:
    """Model config from ``model_config`` or, for older checkpoints, from args + tensor shapes."""
    sd = ckpt["model"]
    n_types, d_model = sd["type_emb.weight"].shape
    if "model_config" in ckpt:
        cfg = ModelConfig(**ckpt["model_config"])
    else:
        args = ckpt.get("args", {}) or {}
        layers = len({k.split(".")[3] for k in sd if k.startswith("backbone.enc.layers.")})
        cfg = ModelConfig(d_model=d_model, n_types=n_types, nhead=int(args.get("heads", 6)),
                          num_layers=int(args.get("layers", layers or 8)))
    cfg.max_len = sd["pos_emb"].shape[1]
    return cfg


@dataclass
class CkptSettings:
    """Token settings of a checkpoint, resolved (CLI override, else checkpoint args)."""
    args: dict
    qa_tokens: bool
    add_eos: bool
    n_point: int
    n_ray: int


@dataclass
class LoadedBackbone(CkptSettings):
    model: QueryNepa = None
    ckpt: dict = None


def infer_token_settings(ckpt: dict, qa_tokens: int = -1, add_eos: int = -1) -> tuple[bool, bool]:
    """-1 means: from the checkpoint args, else from n_types (9 -> QA; >= 5 -> EOS)."""
    args = ckpt.get("args", {}) or {}
    n_types = ckpt["model"]["type_emb.weight"].shape[0]
    if qa_tokens < 0:
        qa = bool(int(args["qa_tokens"])) if "qa_tokens" in args else n_types >= tt.N_TYPES_QA
    else:
        qa = bool(qa_tokens)
    if add_eos < 0:
        eos = bool(int(args["add_eos"])) if "add_eos" in args else n_types >= tt.N_TYPES_LEGACY
    else:
        eos = bool(add_eos)
    return qa, eos


def load_backbone(path: str | os.PathLike, *, max_len: int = -1, qa_tokens: int = -1,
                  add_eos: int = -1,
                  required_len: int | Callable[[CkptSettings], int] = 0,
                  device="cpu") -> LoadedBackbone:
    """Rebuild the model of a checkpoint (loaded once).

    ``required_len``: the longest sequence the caller will feed, or a function of the resolved
    :class:`CkptSettings` that computes it. With ``max_len >= 0`` the positional embedding is
    resized to ``max_len`` (an error if shorter than required); otherwise it grows to the
    required length when the checkpoint's is shorter.
    """
    ckpt = load_checkpoint(path)
    qa, eos = infer_token_settings(ckpt, qa_tokens, add_eos)
    args = ckpt.get("args", {}) or {}
    settings = CkptSettings(args=args, qa_tokens=qa, add_eos=eos,
                            n_point=int(args.get("n_point", 256)), n_ray=int(args.get("n_ray", 256)))
    need = int(required_len(settings)) if callable(required_len) else int(required_len)
    cfg = config_from_checkpoint(ckpt)
    sd = dict(ckpt["model"])
    target = cfg.max_len
    if max_len >= 0:
        if need and max_len < need:
            raise CheckpointError(path, f"--max_len {max_len} < required sequence length {need}")
        target = max_len
    elif need > cfg.max_len:
        print(f"[ckpt] resizing pos_emb: {cfg.max_len} -> {need}", file=sys.stderr)
        target = need
    if target != cfg.max_len:
        sd["pos_emb"] = resize_pos_emb(sd["pos_emb"], target)
        cfg.max_len = target
    model = QueryNepa(cfg)
    check_fits(path, sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(path, f"state dict mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    return LoadedBackbone(**vars(settings), model=model.to(device), ckpt=ckpt)
