"""Pretrain QueryNepa with the NEPA (next-embedding prediction) or MAE objective.

    python -m nepa3d.train.pretrain --mix_config nepa3d/configs/shapenet_unpaired_mix.yaml \
        --mix_num_samples 200000 --objective nepa --qa_tokens 1 \
        --dual_mask_near 0.4 --dual_mask_far 0.1 --dual_mask_window 32 \
        --epochs 50 --batch 96 --n_point 256 --n_ray 256 --save_dir runs/x --seed 0

Deterministic on CPU: data (seed, epoch, slot), dual masks (seed * 1000003 + step) and MAE
masks are pure functions of their indices, so a killed run resumed with ``--auto_resume``
ends with the same weights as an uninterrupted one. ``--auto_resume`` only takes a
``<save_dir>/last.pt`` trained with the same settings (:data:`RESUME_NEUTRAL_ARGS` aside); a
changed setting starts fresh. An epoch's line in ``train_log.jsonl`` is written after its
checkpoints, and a resumed run drops the lines of the epochs it trains again.
Optimisation: AdamW (weight decay 0.05), constant LR, bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.atomic import atomic_write_text
from nepa3d.backends import BACKENDS
from nepa3d.data.cache import CacheError
from nepa3d.data.dataset import MEMORY_CACHE_FILES, Item, TokenDataset, cache_files, collate
from nepa3d.data.loader_store import STORE_CHOICES_HELP, resolve_store
from nepa3d.data.mixed_pretrain import MixConfigError, build_corpus, load_mix_config
from nepa3d.models.query_nepa import ModelConfig, QueryNepa, dual_mask
from nepa3d.token import types as tt
from nepa3d.token.tokenizer import TokenizerConfig
from nepa3d.train import aux_losses as aux, losses
from nepa3d.train.schedule import ScheduleError, parse_schedule, value_at
from nepa3d.utils.ckpt import (OPT_NAMES_KEY, CheckpointError, check_fits,
                               load_backbone_checkpoint, load_checkpoint, optimizer_param_names,
                               optimizer_state_for, resize_pos_emb, save_checkpoint)
from nepa3d.cli.args import (make_parser, SWITCH, add_order_dtype_arg, nonneg_float,
                                   nonneg_int, one_line, positive_float, positive_int,
                                   positive_or_auto, unit_float, usage_error, with_order_dtype)
from nepa3d.cli.config import CliConfig
from nepa3d.cli.edge import (RUN_FAILURE, WriteFailure, interruptible, out_dir_problem,
                             out_file_problem, writing)
from nepa3d.cli.groups import (DeviceArgs, DeviceUnavailable, ModelShapeArgs, VoxelArgs,
                                        add_device_arg, add_model_shape_args, add_voxel_args,
                                        resolve_device)
from nepa3d.utils.curves import plot_curves, read_jsonl
from nepa3d.utils.results import ResultTimer, build_result, write_json_atomic
from nepa3d.utils.run_identity import describe_difference, first_differing_arg
from nepa3d.utils.seeding import set_seed

PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("nepa3d.train.pretrain", __doc__.split("\n")[0])
    a = p.add_argument
    a("--cache_root", default="data/modelnet40_cache",
      help="cache folder with <split>/<class>/*.npz files (used when no --mix_config is given)")
    a("--split", default="train", help="cache split read when no --mix_config is given")
    a("--mix_config", default="",
      help="YAML of a multi-dataset mix (datasets, weights, num_samples, seed); empty = train on "
           "--cache_root/--split")
    a("--mix_num_samples", type=nonneg_int, default=0, help="samples per epoch (0 = all)")
    a("--mix_seed", type=int, default=0,
      help="sampler seed of the mix; 0 = the YAML's seed, any other value replaces it")
    a("--backend", default="mesh", choices=BACKENDS,
      help="which cache arrays feed the tokens: mesh rays, point-cloud rays, no rays, voxel or "
           "UDF-grid answers")
    a("--batch", type=positive_int, default=32, help="samples per optimizer step")
    a("--epochs", type=positive_int, default=50,
      help="training epochs (total, counting those of a resumed checkpoint)")
    a("--epochs_after_resume", type=nonneg_int, default=0,
      help="with --resume: train N epochs past the checkpoint's (sets --epochs to its epoch count + N)")
    a("--lr", type=positive_float, default=3e-4, help="AdamW learning rate")
    a("--weight_decay", type=nonneg_float, default=0.05, help="AdamW weight decay")
    a("--n_point", type=positive_int, default=512, help="POINT (or Q/A point) tokens per sample")
    a("--n_ray", type=nonneg_int, default=512, help="RAY (or Q/A ray) tokens per sample; 0 = none")
    a("--max_len", type=positive_or_auto, default=-1,
      help="positional-embedding length; -1 = the longest sequence the sizes and schedules need")
    a("--n_point_schedule", default="",
      help="per-epoch --n_point, 'epoch:value,...' e.g. '0:256,10:512'; empty = constant "
           "--n_point")
    a("--n_ray_schedule", default="",
      help="per-epoch --n_ray, 'epoch:value,...'; empty = constant --n_ray")
    a("--resume_optimizer", type=int, choices=SWITCH, default=1,
      help="1: restore the AdamW state with the weights when resuming (if it still fits); 0: "
           "fresh optimizer")
    add_model_shape_args(p)
    a("--save_dir", default="runs/querynepa3d_pretrain",
      help="folder for checkpoints, last.pt, the metrics log and pretrain_summary.json")
    a("--save_every", type=nonneg_int, default=1, help="keep ckpt_epNNN.pt every N epochs (0 = off)")
    a("--save_last", type=int, choices=SWITCH, default=1,
      help="1: rewrite <save_dir>/last.pt after every epoch (what --auto_resume resumes)")
    a("--resume", default="", help="checkpoint to resume from; empty = none (see --auto_resume)")
    a("--auto_resume", type=int, choices=SWITCH, default=1,
      help="resume <save_dir>/last.pt when it was trained with the same settings (RESUME_NEUTRAL_ARGS aside)")
    a("--num_workers", type=nonneg_int, default=4,
      help="DataLoader worker processes; 0 = load in the main process")
    a("--loader_store", default="auto", help=STORE_CHOICES_HELP)
    a("--drop_ray_prob", type=unit_float, default=0.0,
      help="probability of turning each sample's rays into MISSING_RAY tokens")
    a("--force_missing_ray", action="store_true",
      help="make every ray token MISSING_RAY (no ray answers seen)")
    a("--add_eos", type=int, choices=SWITCH, default=1,
      help="1: end each sequence with an EOS token")
    a("--qa_tokens", type=int, choices=SWITCH, default=0,
      help="1: interleaved query/answer tokens (Q_POINT, A_POINT, Q_RAY, A_RAY; 9 types); 0: "
           "legacy POINT/RAY tokens (5 types)")
    add_order_dtype_arg(p)
    a("--dual_mask_near", type=unit_float, default=0.0,
      help="training only: probability of blocking attention to a past token within "
           "--dual_mask_window positions")
    a("--dual_mask_far", type=unit_float, default=0.0,
      help="training only: probability of blocking attention to a past token farther than "
           "--dual_mask_window")
    a("--dual_mask_window", type=int, default=32, help="<= 0: --dual_mask_far for every past token")
    a("--dual_mask_warmup_frac", type=unit_float, default=0.05,
      help="fraction of all training steps over which the dual-mask probabilities ramp up "
           "linearly from 0")
    a("--dual_mask_type_aware", type=int, choices=SWITCH, default=0,
      help="1: dual-mask only pairs of query-like tokens (Q_POINT, Q_RAY, POINT, RAY)")
    # auxiliary losses (objective nepa only; all off by default)
    a("--aux_b2_weight", type=nonneg_float, default=0.0,
      help="weight of the B-2 auxiliary ray loss (hit BCE + depth regression + depth ranking); 0 "
           "= off")
    a("--aux_b2_hit_weight", type=nonneg_float, default=1.0,
      help="B-2: weight of the ray hit/miss BCE term")
    a("--aux_b2_t_weight", type=nonneg_float, default=1.0,
      help="B-2: weight of the hit-distance SmoothL1 term")
    a("--aux_b2_rank_weight", type=nonneg_float, default=1.0,
      help="B-2: weight of the pairwise hit-distance ranking term")
    a("--aux_b2_rank_pairs", type=nonneg_int, default=128,
      help="B-2: random hit pairs per sample for the ranking term")
    a("--aux_b2_rank_margin", type=nonneg_float, default=0.0,
      help="B-2: hinge margin of the ranking term (world units)")
    a("--aux_b3_weight", type=nonneg_float, default=0.0,
      help="weight of the B-3 near-surface point-distance loss; 0 = off")
    a("--aux_b3_near_tau", type=nonneg_float, default=0.05,
      help="B-3: only point targets with distance <= this (world units) count")
    a("--teacher_ckpt", default="",
      help="frozen teacher checkpoint for C-0 distillation; empty = none")
    a("--teacher_distill_weight", type=nonneg_float, default=0.0,
      help="weight of the teacher distillation loss (1 - cosine to the teacher's predictions); 0 "
           "= off")
    a("--teacher_answer_drop_prob", type=unit_float, default=0.0,
      help="C-1: the student sees answers dropped with this probability while distilling; 0 = off")
    a("--cycle_weight", type=nonneg_float, default=0.0,
      help="weight of the C-2 cycle loss (answer-dropped prediction vs full prediction); 0 = off")
    a("--cycle_answer_drop_prob", type=unit_float, default=0.3,
      help="C-2: probability of dropping each answer token's observation")
    a("--d_hard_weight", type=nonneg_float, default=0.0,
      help="weight of the D hard-mining loss (mean of the hardest answer tokens); 0 = off")
    a("--d_hard_top_frac", type=unit_float, default=0.25,
      help="D: fraction of each sample's answer tokens averaged (the hardest ones)")
    a("--d_hard_min_tokens", type=nonneg_int, default=32,
      help="D: average at least this many tokens per sample (if it has them)")
    a("--aux_e_weight", type=nonneg_float, default=0.0,
      help="weight of the E point-distance loss on the hidden states (all point targets); 0 = off")
    a("--objective", default="nepa", choices=("nepa", "mae"),
      help="nepa: next-embedding prediction; mae: masked-token reconstruction (no auxiliary "
           "losses)")
    a("--mask_ratio", type=unit_float, default=0.4,
      help="mae: fraction of each sample's tokens masked")
    add_voxel_args(p)
    a("--seed", type=int, default=0, help="global random seed (weights, sampling, masks)")
    add_device_arg(p)
    a("--max_steps", type=nonneg_int, default=0, help="stop after this many optimizer steps (0 = no cap)")
    a("--out_json", default="", help="also write the result envelope (pretrain_summary.json) here")
    return p


def eta_text(seconds: float) -> str:
    """A short remaining-time estimate: ``~45s``, ``~12m``, ``~3.5h``."""
    if seconds < 90:
        return f"~{max(seconds, 0):.0f}s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f}m"
    return f"~{seconds / 3600:.1f}h"


def run_eta(epoch_seconds: list[float], epochs_left: int) -> str:
    """ETA of the run: mean wall time of this session's finished epochs x epochs left; ``?``
    before the first epoch finishes."""
    if not epoch_seconds:
        return "?"
    return eta_text(sum(epoch_seconds) / len(epoch_seconds) * epochs_left)


def make_dataset(args: PretrainConfig, tok: TokenizerConfig) -> TokenDataset:
    if args.mix_config:
        corpus = build_corpus(load_mix_config(args.mix_config), num_samples=args.mix_num_samples,
                              seed=args.mix_seed, voxel=args.voxel_config())
        items = corpus.items
        if args.force_missing_ray:
            items = [replace(i, force_missing_ray=True) for i in items]
        print("[data] mix: " + ", ".join(f"{n}={s}" for n, s in zip(corpus.names, corpus.sizes))
              + f" samples/epoch={corpus.num_samples}")
        return TokenDataset(items, tok, mode="train", seed=args.seed, plan_fn=corpus.plan,
                            loader_store=_loader_store(args, items))
    files = cache_files(args.cache_root, args.split)
    if not files:
        raise CacheError(os.path.join(args.cache_root, args.split), "no cache files (*/*.npz)")
    items = [Item(f, args.backend, -1, None, args.force_missing_ray, args.voxel_config())
             for f in files]
    print(f"[data] {args.cache_root}/{args.split}: {len(items)} files, backend={args.backend}")
    return TokenDataset(items, tok, mode="train", seed=args.seed,
                        loader_store=_loader_store(args, items))


def _loader_store(args: PretrainConfig, items: list[Item]) -> str | None:
    """The decompress-once store of this run (``--loader_store``), said in one line."""
    store, why = resolve_store(args.loader_store, [i.path for i in items], MEMORY_CACHE_FILES)
    print(f"[data] loader store: {why}")
    return store


class AuxConfigError(ValueError):
    pass


AUX_WEIGHTS = ("aux_b2_weight", "aux_b3_weight", "aux_e_weight", "teacher_distill_weight",
               "cycle_weight", "d_hard_weight")
# salts of the independent CPU random streams (rank pairs, answer drops)
_SALT_RANK, _SALT_TEACHER_DROP, _SALT_CYCLE_DROP = 1, 2, 3


def check_aux_args(args: PretrainConfig) -> None:
    on = [n for n in AUX_WEIGHTS if getattr(args, n) > 0]
    if args.objective != "nepa" and on:
        raise AuxConfigError(f"auxiliary losses apply to --objective nepa only; got --objective "
                             f"{args.objective} with " + ", ".join(f"--{n} {getattr(args, n)}" for n in on))
    if args.teacher_distill_weight > 0 and not args.teacher_ckpt:
        print("[aux] --teacher_distill_weight > 0 but no --teacher_ckpt: distillation is off")
    if args.teacher_ckpt and args.teacher_distill_weight <= 0:
        print("[aux] --teacher_ckpt given but --teacher_distill_weight is 0: distillation is off")


def _dual_mask_for(args: PretrainConfig, types, seed: int, dm_scale: float, device):
    if not (args.dual_mask_near > 0 or args.dual_mask_far > 0):
        return None
    gen = torch.Generator(device=device).manual_seed(seed & 0xFFFFFFFF)
    return dual_mask(types.shape[1], args.dual_mask_near * dm_scale, args.dual_mask_far * dm_scale,
                     args.dual_mask_window, generator=gen, device=device, type_id=types,
                     type_aware=args.dual_mask_type_aware)


def nepa_terms(model, feat, types, args: PretrainConfig, step: int, dm_scale: float, device,
               heads: aux.AuxHeads | None = None, teacher=None) -> tuple[torch.Tensor, dict]:
    """NEPA loss plus the enabled auxiliary terms. Returns (total, {name: detached term}).

    total = loss_main + w_b2 b2 + w_b3 b3 + w_e e + w_distill distill + w_cycle cycle + w_d d;
    with every weight 0 it is exactly ``nepa_loss`` (same ops, same dual mask)."""
    dm_seed = args.seed * 1000003 + step
    blocked = _dual_mask_for(args, types, dm_seed, dm_scale, device)
    z, z_hat, h = model(feat, types, blocked)
    loss_main = losses.nepa_loss(z, z_hat, types)
    terms = {"loss_main": loss_main.detach()}
    total = loss_main
    feat_next, type_next = feat[:, 1:], types[:, 1:]
    if args.aux_b2_weight > 0:
        b2 = aux.b2_ray_loss(z_hat[:, :-1], feat_next, type_next, heads, args.aux_b2_hit_weight,
                             args.aux_b2_t_weight, args.aux_b2_rank_weight, args.aux_b2_rank_pairs,
                             args.aux_b2_rank_margin, aux.make_generator(args.seed, step, _SALT_RANK))
        total = total + args.aux_b2_weight * b2
        terms["b2"] = b2.detach()
    if args.aux_b3_weight > 0:
        b3 = aux.b3_near_point_loss(z_hat[:, :-1], feat_next, type_next, heads, args.aux_b3_near_tau)
        total = total + args.aux_b3_weight * b3
        terms["b3"] = b3.detach()
    if args.aux_e_weight > 0:
        e = aux.e_point_dist_loss(h[:, :-1], feat_next, type_next, heads)
        total = total + args.aux_e_weight * e
        terms["e"] = e.detach()
    if teacher is not None and args.teacher_distill_weight > 0:
        with torch.no_grad():
            _, t_hat, _ = teacher(feat, types)
        s_pred = z_hat[:, :-1]
        if args.teacher_answer_drop_prob > 0:
            feat_d = aux.answer_drop(feat, types, args.teacher_answer_drop_prob,
                                     aux.make_generator(args.seed, step, _SALT_TEACHER_DROP))
            s_pred = model(feat_d, types, blocked)[1][:, :-1]
        distill = aux.distill_loss(s_pred, t_hat[:, :-1], types)
        total = total + args.teacher_distill_weight * distill
        terms["distill"] = distill.detach()
    if args.cycle_weight > 0:
        feat_c = aux.answer_drop(feat, types, args.cycle_answer_drop_prob,
                                 aux.make_generator(args.seed, step, _SALT_CYCLE_DROP))
        blocked_c = _dual_mask_for(args, types, dm_seed + 17, dm_scale, device)
        z_hat_c = model(feat_c, types, blocked_c)[1]
        cycle = aux.cycle_loss(z_hat_c[:, :-1], z_hat[:, :-1], types)
        total = total + args.cycle_weight * cycle
        terms["cycle"] = cycle.detach()
    if args.d_hard_weight > 0:
        d = aux.d_hard_loss(z, z_hat, types, args.d_hard_top_frac, args.d_hard_min_tokens)
        total = total + args.d_hard_weight * d
        terms["d"] = d.detach()
    return total, terms


def compute_loss(model, feat, types, args: PretrainConfig, step: int, dm_scale: float, device,
                 heads: aux.AuxHeads | None = None, teacher=None) -> torch.Tensor:
    if args.objective == "nepa":
        return nepa_terms(model, feat, types, args, step, dm_scale, device, heads, teacher)[0]
    if args.objective == "mae":
        g = torch.Generator().manual_seed((args.seed * 1000003 + step) & 0xFFFFFFFF)
        mask = losses.mae_mask(types, args.mask_ratio, g).to(device)
        with torch.no_grad():
            target = model.embed_tokens(feat, types)
        _, z_hat, _ = model(feat.masked_fill(mask[..., None], 0.0), types)
        return losses.mae_loss(z_hat, target, mask)
    raise ValueError(f"unknown objective {args.objective!r}")


#: Arguments that do not change the training trajectory of a run: an auto-resumed ``last.pt`` must
#: have been trained with every other argument equal to this run's. ``--epochs`` is not one of them:
#: the dual-mask warm-up scales with it, so a run extended to N epochs differs from one trained for
#: N; extend a run explicitly with ``--resume <save_dir>/last.pt`` (a continuation).
RESUME_NEUTRAL_ARGS = ("resume", "auto_resume", "save_every", "save_last", "save_dir", "out_json",
                       "num_workers", "device", "epochs_after_resume", "max_steps", "loader_store")


def auto_resume_refusal(saved_args: dict, args: PretrainConfig) -> str | None:
    """Why ``<save_dir>/last.pt`` (trained with ``saved_args``) is not this run's to resume: the
    first argument outside RESUME_NEUTRAL_ARGS that differs from ``args.record()`` (the resolved
    run's); None when it is."""
    current = args.record()
    saved_args = with_order_dtype(saved_args)
    name = first_differing_arg(saved_args, current, RESUME_NEUTRAL_ARGS)
    return None if name is None else f"it was trained with {describe_difference(saved_args, current, name)}"


def try_resume(args: PretrainConfig, model, opt, save_dir: Path, heads: aux.AuxHeads | None = None):
    """Returns (start_epoch, step). Loads model, aux heads and (when compatible) the optimizer.

    ``--auto_resume`` takes ``<save_dir>/last.pt`` only when its recorded args match this run's
    (:func:`auto_resume_refusal`); otherwise the run starts fresh. The optimizer is restored only
    if --resume_optimizer, the pos_emb length is unchanged and either the aux heads are on and
    their saved state loads with no missing/unexpected keys, or they are off and the checkpoint
    has none; its per-parameter state is then matched by parameter name
    (:func:`restore_optimizer`), so checkpoints of the original code resume with their state."""
    path = args.resume
    auto = not path and args.auto_resume and (save_dir / "last.pt").exists()
    if auto:
        path = str(save_dir / "last.pt")
    if not path:
        return 0, 0
    if not Path(path).exists():
        if args.auto_resume:
            print(f"[resume] {path} not found; starting fresh")
            return 0, 0
        raise CheckpointError(path, "--resume checkpoint does not exist")
    ck = load_backbone_checkpoint(path)
    refusal = auto_resume_refusal(ck.get("args") or {}, args) if auto else None
    if refusal:
        print(f"[resume] not resuming {path}: {refusal}; starting fresh")
        return 0, 0
    sd = dict(ck["model"])
    check_fits(path, sd, model, any_length=("pos_emb",))  # its length is resized below
    same_len = sd["pos_emb"].shape[1] == model.pos_emb.shape[1]
    sd["pos_emb"] = resize_pos_emb(sd["pos_emb"], model.pos_emb.shape[1])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(path, f"incompatible model: missing={missing[:4]} unexpected={unexpected[:4]}")
    aux_ok = True
    saved_aux = ck.get("aux_heads") or None
    if heads is not None and heads.enabled:
        if saved_aux is None:
            print("[resume] checkpoint has no aux heads; they start fresh (optimizer not restored)")
            aux_ok = False
        else:
            try:
                m, u = heads.load_state_dict(saved_aux, strict=False)
            except RuntimeError as e:  # shape mismatch
                m, u = ["<shape mismatch>"], [str(e)[:80]]
            if m or u:
                print(f"[resume] aux heads differ (missing={m}, unexpected={u}); optimizer not restored")
                aux_ok = False
    elif saved_aux is not None:
        print("[resume] checkpoint has aux heads but none are enabled; optimizer not restored")
        aux_ok = False
    if args.resume_optimizer and same_len and aux_ok and ck.get("opt"):
        restore_optimizer(opt, optimizer_param_names(model, heads), ck)
    start = int(ck.get("epoch", -1)) + 1
    step = int(ck.get("step", 0))
    print(f"[resume] {path}: epoch {start}, step {step}")
    return start, step


def restore_optimizer(opt, names: list[str], ck: dict) -> bool:
    """Load ``ck["opt"]`` into ``opt`` with every state on the parameter of the same name (by
    the checkpoint's ``opt_param_names``, else by the one known order its state shapes fit:
    the original code's or this project's old one); otherwise leave ``opt`` fresh and print
    one line saying why. True when restored."""
    try:
        state, note = optimizer_state_for(opt, names, ck["opt"], ck.get(OPT_NAMES_KEY))
        if state is not None:
            opt.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as e:
        state, note = None, f"{type(e).__name__}: {e}"
    if state is None:
        print(f"[resume] optimizer state not restored ({one_line(note)}); fresh optimizer")
        return False
    if OPT_NAMES_KEY not in ck:
        print(f"[resume] {note}")
    return True


def continues_own_run(args: PretrainConfig, save_dir: Path, start_epoch: int) -> bool:
    """True when this run carries on the history already in ``save_dir`` (it resumed
    ``save_dir/last.pt``); False for a fresh run or a resume from another checkpoint."""
    if start_epoch == 0:
        return False
    own = save_dir / "last.pt"
    path = Path(args.resume) if args.resume else own
    return path.resolve() == own.resolve()


def nothing_to_train_problem(args: PretrainConfig, save_dir: Path, start_epoch: int) -> str | None:
    """Why resuming at ``start_epoch`` cannot make a run of ``--epochs`` epochs in ``save_dir``:
    the checkpoint has trained more epochs than that (the summary would claim fewer than its
    weights had), or a finished checkpoint of another folder (nothing would be trained or saved
    into ``save_dir``, yet a summary would be written). None when there is no such problem."""
    if start_epoch > args.epochs:
        return f"trained {start_epoch} epochs, more than --epochs {args.epochs}"
    if start_epoch == args.epochs and start_epoch and not continues_own_run(args, save_dir,
                                                                            start_epoch):
        return (f"already trained {start_epoch} epochs = --epochs {args.epochs}: nothing to train "
                f"into --save_dir {save_dir}")
    return None


def logged_loss(log_path: Path, epoch: int) -> float:
    """The loss the epoch log records for ``epoch`` (NaN when it records none): a finished
    run that is run again reports its final loss, not an empty one."""
    records = read_jsonl(log_path) if log_path.exists() else []
    losses = [r.get("loss") for r in records if r.get("epoch") == epoch]
    return float(losses[-1]) if losses and losses[-1] is not None else float("nan")


#: The epoch log of a run: one JSON line per saved epoch.
LOG_NAME = "train_log.jsonl"
#: What a pretraining run leaves in its save_dir besides the ``ckpt_epNNN.pt`` files.
RUN_FILES = ("last.pt", LOG_NAME, "pretrain_summary.json", "loss_curve.png")


def clear_earlier_run(save_dir: Path) -> None:
    """A new training history in ``save_dir``: the checkpoints, epoch log, summary and curve of
    an earlier run there would pass for this run's, so they are removed."""
    stale = sorted(save_dir.glob("ckpt_ep*.pt")) + [save_dir / n for n in RUN_FILES
                                                    if (save_dir / n).exists()]
    for f in stale:
        f.unlink()
    if stale:
        print(f"[pretrain] new run in {save_dir}: removed {len(stale)} file(s) of an earlier run "
              f"({', '.join(f.name for f in stale[:4])}{', ...' if len(stale) > 4 else ''})")


def write_jsonl_atomic(records: list[dict], path: Path) -> None:
    """Replace ``path`` by one JSON line per record, atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def truncate_log(path: Path, start_epoch: int) -> None:
    """Resuming at ``start_epoch``: keep only the records of earlier epochs (a record of a later
    one belongs to the interrupted attempt, and this run writes its own) and drop a torn last
    line; the log is rewritten atomically."""
    if path.exists():
        write_jsonl_atomic([r for r in read_jsonl(path) if int(r.get("epoch", -1)) < start_epoch], path)


def append_log(path: Path, record: dict) -> None:
    """Append one epoch's record (after that epoch's checkpoints are on disk)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def resumed_epochs(path: str) -> int:
    """Epochs a checkpoint has completed (its 0-based ``epoch`` + 1; 0 if it records none)."""
    return int(load_checkpoint(path).get("epoch", -1)) + 1


def resolve_epochs(args: PretrainConfig) -> int:
    """The run's epoch count: ``--epochs``, or with ``--epochs_after_resume N`` the --resume
    checkpoint's epochs + N, so a continuation's length does not depend on how long its base was
    trained."""
    if args.epochs_after_resume < 0:
        usage_error(f"--epochs_after_resume {args.epochs_after_resume} is negative")
    if args.epochs_after_resume == 0:
        return args.epochs
    if not args.resume:
        usage_error("--epochs_after_resume needs --resume (the checkpoint it counts from)")
    return resumed_epochs(args.resume) + args.epochs_after_resume


def resolve_run(args: PretrainConfig) -> PretrainConfig:
    """The configuration this run trains and records: ``epochs`` resolved
    (:func:`resolve_epochs`), ``max_len`` = the longest sequence the sizes and schedules need
    when -1 (a usage error when an explicit one is shorter), ``n_point`` / ``n_ray`` = the
    schedules' epoch-0 values. A new object; ``args`` is unchanged."""
    epochs = resolve_epochs(args)
    qa, eos = args.qa_tokens, args.add_eos
    p_sched, r_sched = parse_schedule(args.n_point_schedule), parse_schedule(args.n_ray_schedule)
    need = max(tt.required_len(value_at(p_sched, e, args.n_point), value_at(r_sched, e, args.n_ray), qa, eos)
               for e in range(max(epochs, 1)))
    max_len = args.max_len
    if max_len < 0:
        max_len = need
    elif max_len < need:
        usage_error(f"--max_len {args.max_len} < required sequence length {need}")
    return replace(args, epochs=epochs, max_len=max_len, n_point=value_at(p_sched, 0, args.n_point),
                   n_ray=value_at(r_sched, 0, args.n_ray))


def train(args: PretrainConfig) -> dict:
    timer = ResultTimer()
    check_aux_args(args)
    args = resolve_run(args)
    set_seed(args.seed)
    device = resolve_device(args.device)
    qa, eos = args.qa_tokens, args.add_eos
    p_sched, r_sched = parse_schedule(args.n_point_schedule), parse_schedule(args.n_ray_schedule)
    n_point0, n_ray0 = args.n_point, args.n_ray
    tok = TokenizerConfig(n_point=n_point0, n_ray=n_ray0, qa_tokens=qa, add_eos=eos,
                          drop_ray_prob=args.drop_ray_prob, order_dtype=args.order_dtype)
    ds = make_dataset(args, tok)
    cfg = ModelConfig(**args.model_kwargs(), n_types=tt.n_types(qa), max_len=args.max_len)
    model = QueryNepa(cfg).to(device)
    heads = aux.AuxHeads(args.d_model, args.aux_b2_weight, args.aux_b3_weight, args.aux_e_weight).to(device)
    teacher = None
    if args.objective == "nepa" and args.teacher_ckpt and args.teacher_distill_weight > 0:
        teacher = aux.load_teacher(args.teacher_ckpt, max_len=args.max_len, n_types=cfg.n_types,
                                   d_model=args.d_model, heads=args.heads, layers=args.layers,
                                   device=device)
        print(f"[aux] teacher {args.teacher_ckpt} (frozen, eval)")
    params = list(model.parameters()) + list(heads.parameters())  # the original's order
    opt_names = optimizer_param_names(model, heads)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    save_dir = Path(args.save_dir)
    start_epoch, step = try_resume(args, model, opt, save_dir, heads)
    problem = nothing_to_train_problem(args, save_dir, start_epoch)
    if problem:  # before anything in save_dir is touched
        raise CheckpointError(args.resume or save_dir / "last.pt", problem)
    save_dir.mkdir(parents=True, exist_ok=True)  # a refused resume leaves no empty folder
    log_path = save_dir / LOG_NAME
    if continues_own_run(args, save_dir, start_epoch):
        truncate_log(log_path, start_epoch)
    else:
        clear_earlier_run(save_dir)
    steps_per_epoch = math.ceil(len(ds) / args.batch)
    warmup = max(1, int(args.dual_mask_warmup_frac * args.epochs * steps_per_epoch))
    use_bf16 = device.type == "cuda"
    last_loss = float("nan")
    if start_epoch >= args.epochs:  # this folder's finished run: its summary again, same loss
        last_loss = logged_loss(log_path, start_epoch - 1)
        print(f"[pretrain] already trained to epoch {start_epoch - 1} >= epochs {args.epochs}")
    epoch_seconds: list[float] = []  # this session's finished epochs (for the run's ETA)
    for epoch in range(start_epoch, args.epochs):
        ds.set_epoch(epoch)
        np_e, nr_e = value_at(p_sched, epoch, n_point0), value_at(r_sched, epoch, n_ray0)
        if (np_e, nr_e) != (ds.tok.n_point, ds.tok.n_ray):
            print(f"[schedule] epoch {epoch}: n_point={np_e}, n_ray={nr_e}")
            ds.set_sizes(np_e, nr_e)
        dl = DataLoader(ds, batch_size=args.batch, shuffle=False, num_workers=args.num_workers,
                        collate_fn=collate, drop_last=False, persistent_workers=False)
        model.train()
        heads.train()
        t0, tot, nb = time.time(), 0.0, 0
        term_sums: dict[str, float] = {}
        # the bar: epoch k/N (1-based), the epoch's own progress/ETA, and the whole run's ETA
        bar = tqdm(dl, desc=f"pretrain ep {epoch + 1}/{args.epochs}", leave=False, mininterval=5,
                   postfix=f"run ETA {run_eta(epoch_seconds, args.epochs - epoch)}")
        for feat, types, _ in bar:
            if args.max_steps and step >= args.max_steps:
                break
            feat, types = feat.to(device, non_blocking=True), types.to(device, non_blocking=True)
            dm_scale = min(1.0, step / warmup)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if args.objective == "nepa":
                    loss, terms = nepa_terms(model, feat, types, args, step, dm_scale, device, heads, teacher)
                else:
                    loss, terms = compute_loss(model, feat, types, args, step, dm_scale, device), {}
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += loss.item()
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v)
            nb += 1
            if step % 100 == 0:
                print(f"[pretrain] ep {epoch} step {step} loss {loss.item():.5f}")
        if args.max_steps and step >= args.max_steps and nb < steps_per_epoch:
            print(f"[pretrain] --max_steps {args.max_steps} reached mid-epoch {epoch}; not saving a partial epoch")
            break
        last_loss = tot / max(nb, 1)
        rec = {"epoch": epoch, "step": step, "loss": last_loss, "seconds": round(time.time() - t0, 2),
               "n_point": ds.tok.n_point, "n_ray": ds.tok.n_ray}
        rec.update({k: v / max(nb, 1) for k, v in term_sums.items()})
        epoch_seconds.append(rec["seconds"])
        print(f"[pretrain] epoch {epoch} ({epoch + 1}/{args.epochs}) loss {last_loss:.5f} "
              f"({rec['seconds']} s; run ETA {run_eta(epoch_seconds, args.epochs - epoch - 1)})")
        state = {"model": model.state_dict(),
                 "aux_heads": heads.state_dict() if heads.enabled else None, "opt": opt.state_dict(),
                 OPT_NAMES_KEY: opt_names,
                 "scaler": None, "args": args.record(), "model_config": cfg.to_dict(),
                 "epoch": epoch, "step": step}
        is_last = epoch == args.epochs - 1
        if (args.save_every > 0 and epoch % args.save_every == 0) or is_last:
            with writing(save_dir / f"ckpt_ep{epoch:03d}.pt"):
                save_checkpoint(state, save_dir / f"ckpt_ep{epoch:03d}.pt")
        if args.save_last:
            with writing(save_dir / "last.pt"):
                save_checkpoint(state, save_dir / "last.pt")
        with writing(log_path):  # after the checkpoints: no record of an epoch that was not saved
            append_log(log_path, rec)
    metrics = {"final_loss": last_loss, "steps": step, "epochs": args.epochs,
               "n_params": sum(p.numel() for p in model.parameters())}
    result = build_result("pretrain", args.record(), metrics,
                          timer.provenance(seed=args.seed, cache_root=args.cache_root if not args.mix_config else None,
                                           device=device))
    with writing(save_dir / "pretrain_summary.json"):
        write_json_atomic(result, save_dir / "pretrain_summary.json")
    if args.out_json:  # last: a benchmark job is finished only when its checkpoint is written
        with writing(args.out_json):
            write_json_atomic(result, args.out_json)
    plot_curves(read_jsonl(log_path) if log_path.exists() else [], save_dir / "loss_curve.png",
                title=f"pretrain {args.objective} ({save_dir})")
    return result


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(ModelShapeArgs, VoxelArgs, DeviceArgs, CliConfig):
    """Flags of ``python -m nepa3d.train.pretrain`` (one field per flag)."""

    cache_root: str
    split: str
    mix_config: str
    mix_num_samples: int
    mix_seed: int
    backend: str
    batch: int
    epochs: int
    epochs_after_resume: int
    lr: float
    weight_decay: float
    n_point: int
    n_ray: int
    max_len: int
    n_point_schedule: str
    n_ray_schedule: str
    resume_optimizer: bool
    save_dir: str
    save_every: int
    save_last: bool
    resume: str
    auto_resume: bool
    num_workers: int
    loader_store: str
    drop_ray_prob: float
    force_missing_ray: bool
    add_eos: bool
    qa_tokens: bool
    order_dtype: str
    dual_mask_near: float
    dual_mask_far: float
    dual_mask_window: int
    dual_mask_warmup_frac: float
    dual_mask_type_aware: bool
    aux_b2_weight: float
    aux_b2_hit_weight: float
    aux_b2_t_weight: float
    aux_b2_rank_weight: float
    aux_b2_rank_pairs: int
    aux_b2_rank_margin: float
    aux_b3_weight: float
    aux_b3_near_tau: float
    teacher_ckpt: str
    teacher_distill_weight: float
    teacher_answer_drop_prob: float
    cycle_weight: float
    cycle_answer_drop_prob: float
    d_hard_weight: float
    d_hard_top_frac: float
    d_hard_min_tokens: int
    aux_e_weight: float
    objective: str
    mask_ratio: float
    seed: int
    max_steps: int
    out_json: str

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def output_problem(args: PretrainConfig) -> str | None:
    """Why ``--save_dir`` or ``--out_json`` cannot take this run's outputs (a file in the way,
    a folder where the result file goes); checked before training, not after it."""
    return (out_dir_problem("--save_dir", args.save_dir)
            or (out_file_problem("--out_json", args.out_json) if args.out_json else None))


@interruptible("pretrain", "--save_dir's last.pt holds the last finished epoch (the same command "
                           "resumes it); no summary or --out_json written")
def main(argv=None) -> int:
    args = PretrainConfig.parse(argv)
    blocked = output_problem(args)
    if blocked:
        print(f"error: {blocked}", file=sys.stderr)
        return 2
    try:
        train(args)
    except (CheckpointError, CacheError, MixConfigError, ScheduleError, AuxConfigError,
            DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return RUN_FAILURE
    except FloatingPointError as e:  # the run diverged: a failed run, not a traceback
        print(f"error: {e} (the run diverged; --save_dir's last.pt holds the last finished "
              "epoch; no summary or --out_json written)", file=sys.stderr)
        return RUN_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
