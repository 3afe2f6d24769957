"""Rebuilding the model of a checkpoint: its :class:`ModelConfig` (stored, or inferred from args and
tensor shapes for older checkpoints), its token settings (QA tokens, EOS) and the loaded
:class:`QueryNepa` with the positional embedding resized to the length the caller needs.

The model-dependent half of checkpoint handling; saving, loading and shape checks are in
:mod:`nepa3d.utils.ckpt`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.token import types as tt
from nepa3d.utils.ckpt import (CheckpointError, check_fits, load_backbone_checkpoint,
                               resize_pos_emb)


def config_from_checkpoint(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> ModelConfig:
    """Model config from ``model_config`` or, for older checkpoints, from args + tensor shapes.
    A config that cannot build a model (unknown fields, heads that do not divide the width)
    raises CheckpointError naming ``path``."""
    sd = ckpt["model"]
    n_types, d_model = sd["type_emb.weight"].shape
    try:
        if "model_config" in ckpt:
            cfg = ModelConfig(**ckpt["model_config"])
        else:
            args = ckpt.get("args", {}) or {}
            layers = len({k.split(".")[3] for k in sd if k.startswith("backbone.enc.layers.")})
            cfg = ModelConfig(d_model=d_model, n_types=n_types, nhead=int(args.get("heads", 6)),
                              num_layers=int(args.get("layers", layers or 8)))
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"unusable model config ({' '.join(str(e).split())})") from e
    problem = model_config_problem(cfg)
    if problem:
        raise CheckpointError(path, f"unusable model config ({problem})")
    cfg.max_len = sd["pos_emb"].shape[1]
    return cfg


def model_config_problem(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` cannot build a :class:`QueryNepa` (non-positive sizes, ``nhead`` not dividing
    ``d_model``); None when it can."""
    sizes = {"d_model": cfg.d_model, "nhead": cfg.nhead, "num_layers": cfg.num_layers,
             "feat_dim": cfg.feat_dim, "n_types": cfg.n_types}
    bad = next((k for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1), None)
    if bad:
        return f"{bad} {sizes[bad]!r} is not an integer >= 1"
    if cfg.d_model % cfg.nhead:
        return f"nhead {cfg.nhead} does not divide d_model {cfg.d_model}"
    return None


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
    ckpt = load_backbone_checkpoint(path)
    args = ckpt.get("args", {}) or {}
    try:
        qa, eos = infer_token_settings(ckpt, qa_tokens, add_eos)
        settings = CkptSettings(args=args, qa_tokens=qa, add_eos=eos,
                                n_point=int(args.get("n_point", 256)),
                                n_ray=int(args.get("n_ray", 256)))
    except (TypeError, ValueError) as e:  # e.g. args {'n_point': 'many'}
        raise CheckpointError(path, f"unusable token settings in 'args' ({e})") from e
    need = int(required_len(settings)) if callable(required_len) else int(required_len)
    cfg = config_from_checkpoint(ckpt, path)
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
