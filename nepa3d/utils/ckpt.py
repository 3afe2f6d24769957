"""Checkpoints: atomic save, safe load (``weights_only=True``), shape checks, pos-emb resize, optimizer
state across parameter orders. Rebuilding the model of a checkpoint: :mod:`nepa3d.models.checkpoint`
(utils imports nothing above it).

Checkpoint dict (pretrain): ``model`` (state dict), ``aux_heads`` (state dict or None),
``opt``, ``scaler``, ``args`` (dict of CLI args incl. resolved max_len), ``epoch``, ``step``,
plus ``model_config`` (the :class:`~nepa3d.models.query_nepa.ModelConfig` as a dict) and
``opt_param_names`` (the parameter names in the optimizer's order, see :func:`optimizer_state_for`).
"""

from __future__ import annotations

import io
import os
from typing import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.atomic import atomic_write_bytes


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line ``<path>: <problem>`` (torch's
    multi-line load errors joined), whichever CLI prints it."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {' '.join(str(problem).split())}")


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
    atomic_write_bytes(path, checkpoint_bytes(obj), prefix=".tmp_ckpt_", suffix=".pt")


def checkpoint_problem(ckpt: object) -> str | None:
    """Why a loaded object is not a usable checkpoint of this code: no ``model`` state dict of
    tensors, NaN/inf weights (a diverged or damaged run whose evaluation would still print
    numbers), ``args`` / ``model_config`` that are not dicts, an ``epoch`` / ``step`` that is no
    integer. None when it is usable."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        return "not a nepa3d checkpoint (no 'model' state dict)"
    sd = ckpt["model"]
    odd = next((k for k, v in sd.items() if not torch.is_tensor(v)), None)
    if odd is not None:
        return f"not a nepa3d checkpoint ('model' entry {odd!r} is not a tensor but {type(sd[odd]).__name__})"
    for name in ("args", "model_config"):
        if ckpt.get(name) is not None and not isinstance(ckpt[name], dict):
            return f"'{name}' is a {type(ckpt[name]).__name__}, not a dict"
    for name in ("epoch", "step"):
        if name in ckpt and (not isinstance(ckpt[name], int) or isinstance(ckpt[name], bool)):
            return f"'{name}' is {ckpt[name]!r}, not an integer"
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        return f"{bad}: holds NaN or inf weights (a diverged or damaged run)"
    return None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing, corrupt or unusable file
    (:func:`checkpoint_problem`) raises CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(path, f"cannot be loaded ({type(e).__name__}: {e})") from e
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(path, problem)
    return ckpt


#: State-dict entries of every backbone (pretraining) checkpoint, with their number of
#: dimensions: the model config is read from their shapes.
BACKBONE_TENSORS = {"pos_emb": 3, "type_emb.weight": 2}


def load_backbone_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """:func:`load_checkpoint` of a backbone checkpoint (pretraining's; what evaluators, resume
    and teachers read): its state dict also holds :data:`BACKBONE_TENSORS` with their ranks."""
    ckpt = load_checkpoint(path, map_location)
    sd = ckpt["model"]
    for key, ndim in BACKBONE_TENSORS.items():
        if key not in sd:
            raise CheckpointError(path, f"not a backbone checkpoint ('model' has no {key})")
        if sd[key].dim() != ndim:
            raise CheckpointError(path, f"{key}: {sd[key].dim()}-d tensor {tuple(sd[key].shape)}, "
                                        f"expected {ndim}-d")
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


# --------------------------------------------------------------------------------------------
# Optimizer state across parameter orders
# --------------------------------------------------------------------------------------------

#: Checkpoint key: the parameter names in the optimizer's order (the model's, then the aux
#: heads' as ``aux_heads.<name>``), so that the optimizer state is matched by name on resume.
OPT_NAMES_KEY = "opt_param_names"
AUX_HEADS_PREFIX = "aux_heads."


def optimizer_param_names(model: torch.nn.Module, heads: torch.nn.Module | None = None) -> list[str]:
    """Names of ``list(model.parameters()) + list(heads.parameters())``, in that order."""
    names = [n for n, _ in model.named_parameters()]
    if heads is not None:
        names += [AUX_HEADS_PREFIX + n for n, _ in heads.named_parameters()]
    return names


def token_mlp_first(names: Sequence[str]) -> list[str] | None:
    """This project's parameter order before type_emb was registered first (as the original
    registers it): the ``token_mlp.*`` run moved in front of ``type_emb.weight``. None when
    ``names`` has no such run right after ``type_emb.weight``."""
    names = list(names)
    if "type_emb.weight" not in names:
        return None
    i = names.index("type_emb.weight")
    j = i + 1
    while j < len(names) and names[j].startswith("token_mlp."):
        j += 1
    if j == i + 1 or any(n.startswith("token_mlp.") for n in names[j:]):
        return None
    return names[:i] + names[i + 1:j] + [names[i]] + names[j:]


#: Layouts of a checkpoint's optimizer state without ``opt_param_names``, as functions of the
#: current names: (description, layout). The first is the original code's order, which is this
#: code's order too.
KNOWN_OPT_LAYOUTS: tuple[tuple[str, Callable[[Sequence[str]], list[str] | None]], ...] = (
    ("the original's parameter order (type_emb before token_mlp)", list),
    ("this project's old parameter order (token_mlp before type_emb)", token_mlp_first),
)


def _flat_ids(groups: Iterable[Mapping]) -> list:
    return [pid for g in groups for pid in g["params"]]


def _state_misfit(state: Mapping, saved_ids: Sequence, params: Sequence[torch.Tensor],
                  names: Sequence[str]) -> str | None:
    """First parameter whose saved per-parameter state tensors (those with >= 1 dim:
    exp_avg, exp_avg_sq, ...) do not have the parameter's shape; None if all fit."""
    for pid, p, name in zip(saved_ids, params, names):
        for key, v in (state.get(pid) or {}).items():
            if torch.is_tensor(v) and v.dim() > 0 and tuple(v.shape) != tuple(p.shape):
                return f"{name}: {key} {tuple(v.shape)} vs parameter {tuple(p.shape)}"
    return None


def optimizer_state_for(opt: torch.optim.Optimizer, names: Sequence[str], saved: Mapping,
                        saved_names: Sequence[str] | None = None) -> tuple[dict | None, str]:
    """Reorder a saved optimizer state dict so that ``opt.load_state_dict`` (which matches by
    position) gives every parameter the state saved for the parameter of the same name.

    ``names``: the names of ``opt``'s parameters in its order (all groups, flattened).
    ``saved_names``: the checkpoint's :data:`OPT_NAMES_KEY`. Without it the saved order is
    inferred among :data:`KNOWN_OPT_LAYOUTS` as the one layout under which every per-parameter
    state tensor has its parameter's shape.

    Returns ``(state dict, note)`` (the note says which order was found), or ``(None, reason)``
    when the state cannot be matched: other parameters or groups, a layout that fits none or
    (without names) more than one known layout. Every per-parameter state is shape-checked.
    """
    groups = opt.param_groups
    params = [p for g in groups for p in g["params"]]
    names = list(names)
    if len(names) != len(params):
        raise ValueError(f"{len(names)} names for {len(params)} optimizer parameters")
    saved_groups = list(saved.get("param_groups") or [])
    state = saved.get("state") or {}
    ids = _flat_ids(saved_groups)
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in groups]:
        return None, (f"saved parameter groups of sizes {[len(g['params']) for g in saved_groups]}, "
                      f"this optimizer's {[len(g['params']) for g in groups]}")
    if saved_names is None:
        fits, misfits = [], []
        for desc, layout in KNOWN_OPT_LAYOUTS:
            order = layout(names)
            if order is None or any(order == o for _, o in fits):
                continue
            bad = _state_misfit(state, ids, [params[names.index(n)] for n in order], order)
            if bad is None:
                fits.append((desc, order))
            else:
                misfits.append(f"{desc}: {bad}")
        if not fits:
            return None, "its state fits no known parameter order (" + "; ".join(misfits) + ")"
        if len(fits) > 1 and any(state.get(pid) for pid in ids):
            return None, ("its state fits several known parameter orders ("
                          + ", ".join(d for d, _ in fits) + "); it has no opt_param_names")
        desc, saved_names = fits[0]
        note = f"optimizer state in {desc}"
    else:
        saved_names = list(saved_names)
        if len(saved_names) != len(ids) or len(set(saved_names)) != len(saved_names):
            return None, f"malformed {OPT_NAMES_KEY} ({len(saved_names)} names for {len(ids)} states)"
        if set(saved_names) != set(names):
            extra = sorted(set(saved_names) - set(names))[:3]
            lack = sorted(set(names) - set(saved_names))[:3]
            return None, f"other parameters (saved only: {extra}; here only: {lack})"
        note = f"optimizer state matched by name ({OPT_NAMES_KEY})"
    id_of = dict(zip(saved_names, ids))
    group_of = {pid: k for k, g in enumerate(saved_groups) for pid in g["params"]}
    out_groups, at = [], 0
    for k, g in enumerate(groups):
        mine = names[at:at + len(g["params"])]
        at += len(g["params"])
        if any(group_of[id_of[n]] != k for n in mine):
            return None, f"parameter group {k} holds other parameters than the saved one"
        out_groups.append({**saved_groups[k], "params": [id_of[n] for n in mine]})
    bad = _state_misfit(state, [id_of[n] for n in names], params, names)
    if bad is not None:
        return None, f"state shapes do not fit ({bad})"
    return {"state": dict(state), "param_groups": out_groups}, note
