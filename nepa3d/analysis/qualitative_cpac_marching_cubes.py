"""Qualitative CPAC: dense UDF prediction on a lattice, marching-cubes shells and previews.

A ridge head is fit on head-train shapes exactly as in the CPAC probe (grid / uniform queries,
context from ``--head_train_backend``, seed ``eval_seed``); then, for a few evaluation shapes,
one context (``--context_backend``, seed ``eval_seed + 999``) is followed by the voxel centres
of a ``grid_res``³ lattice, in chunks of ``--queries_per_pass`` queries (default: as many as
the head saw per sequence, n_query_probe, capped by the room ``max_len`` leaves; the reference
fills the room, which is the same at the lab's sizes, see :func:`queries_per_pass`), and the
head predicts the UDF at every centre. Ground truth is the cache's ``udf_grid`` (trilinearly
resampled when ``grid_res`` differs from its side). Both volumes are meshed with marching
cubes at ``--mc_level`` (the UDF iso-shell).

    python -m nepa3d.analysis.qualitative_cpac_marching_cubes \
        --cache_root data/shapenet_unpaired_cache_v1 --ckpt runs/x/ckpt_ep049.pt \
        --grid_res 32 --mc_level 0.02 --max_shapes 8 --out_dir results/qual_mc

Files under ``out_dir``: ``ridge_w.npy`` ((d+1, 1) float32), ``summary.json`` and per shape
``{si:03d}_{name}/`` (si = the shape's index in the sorted evaluation split) with
``context_pc.ply``, ``pred_udf.npy``, ``gt_udf.npy``, ``pred_mc.obj``, ``gt_mc.obj`` and
``preview.png``. A mesh that cannot be extracted (level outside the volume's range, no
surface) is reported per shape under ``mc_skipped``. The original's
``qualitative_cpac_marching_cubes.py`` (KohsukeIde/3D-NEPA @ 737d98f) crashes unpacking
``collect_xy``; this implements the intended behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import metrics as M
from nepa3d.analysis.features import EvalError, load_eval_model
from nepa3d.analysis.grid_sampling import ijk_to_xyz, lin_to_ijk
from nepa3d.backends import BACKENDS
from nepa3d.data.cache import CacheError
from nepa3d.data.dataset import cache_files
from nepa3d.geometry.udf import trilinear_sample, voxel_size
from nepa3d.token.types import required_len
from nepa3d.utils.ckpt import CheckpointError
from nepa3d.cli.args import (make_parser, SWITCH, add_order_dtype_arg, fail,
                                   int_at_least, nonneg_float, nonneg_int, positive_float,
                                   positive_int, positive_or_auto)
from nepa3d.cli.edge import RUN_FAILURE, check_voxel, interruptible, out_dir_problem, write_failure
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import (DeviceArgs, DeviceUnavailable, EvalSamplingArgs,
                                        VoxelArgs, add_device_arg, add_eval_seed_arg,
                                        add_voxel_args, resolve_device)
from nepa3d.utils.results import write_json_atomic

PROG = "qualitative_cpac_marching_cubes"
LEVEL_KEY = "iou@level"
SUMMARY = "summary.json"


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.analysis.qualitative_cpac_marching_cubes", __doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True,
                    help="cache folder with the evaluation split and the head-training split")
    ap.add_argument("--split", default="eval",
                    help="cache split whose shapes are evaluated (<cache_root>/<split>/*/*.npz)")
    ap.add_argument("--ckpt", required=True,
                    help="pretrained checkpoint whose features the ridge head reads")
    ap.add_argument("--max_len", type=positive_or_auto, default=-1,
                    help="positional-embedding length (resized); -1: checkpoint's, grown if the "
                         "head-train sequences need it. Sets the queries per pass.")
    ap.add_argument("--context_backend", default="pointcloud_noray", choices=BACKENDS,
                    help="backend of the context tokens of the rendered shapes")
    ap.add_argument("--head_train_split", default="train_udf",
                    help="split whose shapes train the ridge head")
    ap.add_argument("--head_train_backend", default="udfgrid", choices=BACKENDS,
                    help="backend of the context when collecting the head's training data")
    ap.add_argument("--head_train_max_shapes", type=nonneg_int, default=4000, help="0: all")
    ap.add_argument("--n_context", type=positive_int, default=256,
                    help="context (observed point, distance) tokens per shape")
    ap.add_argument("--n_query_probe", type=positive_int, default=256,
                    help="grid queries per head-train shape")
    ap.add_argument("--queries_per_pass", type=int_at_least(-1), default=-1,
                    help="lattice queries per forward: -1 = min(room, n_query_probe), the token "
                         "positions the head was fitted on; 0 = all the room max_len leaves "
                         "(the reference's rule); k > 0 = min(k, room)")
    ap.add_argument("--grid_res", type=int_at_least(2), default=32,
                    help="resolution of the predicted UDF volume (cells per axis) meshed by "
                         "marching cubes")
    ap.add_argument("--mc_level", type=positive_float, default=0.02,
                    help="UDF iso-level of the meshes (and the IoU threshold)")
    ap.add_argument("--ridge_lambda", type=nonneg_float, default=1e-3,
                    help="L2 penalty of the closed-form ridge head")
    ap.add_argument("--rep_source", default="h", choices=("h", "zhat"),
                    help="features read at the query tokens: h = backbone hidden state, zhat = "
                         "predicted embedding")
    add_eval_seed_arg(ap)
    add_order_dtype_arg(ap)
    ap.add_argument("--max_shapes", type=nonneg_int, default=8, help="0: all evaluation shapes")
    ap.add_argument("--shape_offset", type=nonneg_int, default=0,
                    help="skip this many shapes of the sorted split before rendering")
    add_voxel_args(ap)
    ap.add_argument("--save_volumes", type=int, choices=SWITCH, default=1,
                    help="1: also save the predicted and true UDF volumes (.npz)")
    ap.add_argument("--save_png", type=int, choices=SWITCH, default=1,
                    help="1: render PNG figures")
    ap.add_argument("--png_dpi", type=positive_int, default=110,
                    help="resolution of the PNG figures (dots per inch)")
    ap.add_argument("--out_dir", default="results/qual_mc",
                    help="folder for meshes, volumes, figures and summary.json")
    add_device_arg(ap)
    ap.add_argument("--batch", type=positive_int, default=8, help="sequences (chunks) per forward")
    return ap


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------

def lattice_xyz(res: int) -> np.ndarray:
    """Voxel centres of a res³ lattice on [-1, 1]³, x-major (meshgrid "ij"). -> (res³, 3)"""
    return ijk_to_xyz(lin_to_ijk(np.arange(res ** 3), res), res)


def gt_volume(udf_grid: np.ndarray, res: int) -> np.ndarray:
    """udf_grid itself when res = G, else trilinear resampling at the res³ voxel centres."""
    u = np.asarray(udf_grid, dtype=np.float32)
    if u.shape[0] == res:
        return u.copy()
    return trilinear_sample(u, lattice_xyz(res)).astype(np.float32).reshape(res, res, res)


def max_queries_per_pass(max_len: int, n_ctx: int, qa_tokens: bool, add_eos: bool) -> int:
    """(max_len − 1 − eos − 2·n_ctx) // 2 (QA) or max_len − 1 − eos − n_ctx (legacy)."""
    free = max_len - 1 - int(bool(add_eos))
    return (free - 2 * n_ctx) // 2 if qa_tokens else free - n_ctx


def queries_per_pass(room: int, n_query_probe: int, requested: int) -> int:
    """Lattice queries per forward pass.

    The ridge head sees query tokens only at the n_query_probe positions after the context during
    its fit; a query placed further along the sequence meets positional embeddings the head never
    saw (with a checkpoint whose point slots end there too, its features drift, and the lattice
    shows bands with the chunk period). So the default (-1) is min(room, n_query_probe). At the
    lab's sizes (max_len 1026, 256 context, 256 probe queries) the room is 256 and the two rules
    agree. ``requested`` 0 = the room (the reference's rule); k > 0 = min(k, room).
    """
    if requested < 0:
        return min(room, max(1, n_query_probe))
    return room if requested == 0 else min(room, requested)


def marching_cubes(vol: np.ndarray, level: float):
    """-> (verts (V, 3) in [-1, 1]³, faces (F, 3) 0-based, None) or (None, None, reason)."""
    vmin, vmax = float(np.min(vol)), float(np.max(vol))
    if not (vmin <= level <= vmax) or vmin == vmax:
        return None, None, f"level {level:g} outside volume range [{vmin:.6g}, {vmax:.6g}]"
    from skimage.measure import marching_cubes as mc

    vox = voxel_size(vol.shape[0])
    try:
        verts, faces, _, _ = mc(np.asarray(vol, dtype=np.float32), level=level,
                                spacing=(vox, vox, vox))
    except (ValueError, RuntimeError) as e:
        return None, None, f"marching_cubes failed: {e}"
    if len(faces) == 0:
        return None, None, "no surface at this level"
    return (verts + (-1.0 + vox / 2.0)).astype(np.float32), faces.astype(np.int64), None


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """``v x y z`` / ``f a b c`` lines, faces 1-based."""
    with open(path, "w") as f:
        for v in verts:
            f.write(f"v {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}\n")
        for t in faces + 1:
            f.write(f"f {t[0]} {t[1]} {t[2]}\n")


def read_obj(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse what :func:`write_obj` writes. -> verts (V, 3) float64, faces (F, 3) 1-based."""
    vs, fs = [], []
    with open(path) as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            if p[0] == "v":
                vs.append([float(x) for x in p[1:4]])
            elif p[0] == "f":
                fs.append([int(x.split("/")[0]) for x in p[1:4]])
    return np.asarray(vs, np.float64).reshape(-1, 3), np.asarray(fs, np.int64).reshape(-1, 3)


def write_ply(path: Path, xyz: np.ndarray) -> None:
    """ASCII PLY with float x, y, z."""
    with open(path, "w") as f:
        f.write("ply\nformat ascii 1.0\n")
        f.write(f"element vertex {len(xyz)}\n")
        f.write("property float x\nproperty float y\nproperty float z\nend_header\n")
        for p in xyz:
            f.write(f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")


def save_preview(path: Path, ctx_xyz, pred, gt, meshes: dict, level: float, title: str,
                 dpi: int) -> bool:
    """2x3 panel: context points, pred mesh, gt mesh / mid-z slices of pred, gt, |error|."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    except ImportError:
        return False
    fig = plt.figure(figsize=(12, 8))
    ax = fig.add_subplot(2, 3, 1, projection="3d")
    if len(ctx_xyz):
        ax.scatter(ctx_xyz[:, 0], ctx_xyz[:, 1], ctx_xyz[:, 2], s=2, c=ctx_xyz[:, 2], cmap="viridis")
    ax.set_title(f"context ({len(ctx_xyz)} pts)")
    for col, key in ((2, "pred"), (3, "gt")):
        ax3 = fig.add_subplot(2, 3, col, projection="3d")
        verts, faces, reason = meshes[key]
        if verts is not None:
            if len(faces) > 6000:  # display subsample only; the OBJ holds every face
                faces = faces[np.random.RandomState(0).choice(len(faces), 6000, replace=False)]
            ax3.add_collection3d(Poly3DCollection(verts[faces], facecolor="tab:blue", alpha=0.35,
                                                  edgecolor="none"))
            ax3.set_title(f"{key} mc @ {level:g} ({len(verts)} v)")
        else:
            ax3.set_title(f"{key}: {reason}", fontsize=7)
    for a in fig.axes:
        a.set_xlim(-1, 1)
        a.set_ylim(-1, 1)
        a.set_zlim(-1, 1)
    k = pred.shape[2] // 2
    vmax = float(max(np.max(pred[:, :, k]), np.max(gt[:, :, k]), 1e-6))
    for col, (name, img, cmap, vm) in enumerate(
            (("pred udf z-mid", pred[:, :, k], "magma", vmax),
             ("gt udf z-mid", gt[:, :, k], "magma", vmax),
             ("|pred - gt|", np.abs(pred - gt)[:, :, k], "inferno", None)), start=4):
        ax2 = fig.add_subplot(2, 3, col)
        im = ax2.imshow(img.T, origin="lower", extent=(-1, 1, -1, 1), cmap=cmap, vmin=0, vmax=vm)
        if name != "|pred - gt|" and np.min(img) < level < np.max(img):
            ax2.contour(img.T, levels=[level], origin="lower", extent=(-1, 1, -1, 1), colors="c",
                        linewidths=0.8)
        ax2.set_title(name)
        ax2.set_xlabel("x")
        ax2.set_ylabel("y")
        fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class QualitativeMcConfig(EvalSamplingArgs, VoxelArgs, DeviceArgs, CliConfig):
    """Flags of ``python -m nepa3d.analysis.qualitative_cpac_marching_cubes`` (one field per flag)."""

    cache_root: str
    split: str
    ckpt: str
    max_len: int
    context_backend: str
    head_train_split: str
    head_train_backend: str
    head_train_max_shapes: int
    n_context: int
    n_query_probe: int
    queries_per_pass: int
    grid_res: int
    mc_level: float
    ridge_lambda: float
    rep_source: str
    max_shapes: int
    shape_offset: int
    save_volumes: bool
    save_png: bool
    png_dpi: int
    out_dir: str
    batch: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


#: Flags this tool shares with the CPAC evaluator, same name and meaning: passed on as given.
PROBE_SHARED = ("split", "max_len", "context_backend", "head_train_split", "head_train_backend",
                "head_train_max_shapes", "n_context", "ridge_lambda", "rep_source", "eval_seed",
                "order_dtype", "voxel_grid", "voxel_dilate", "voxel_max_steps", "batch", "device")
#: CPAC settings this tool fixes: grid queries drawn uniformly, normal contexts drawn apart
#: from the queries, an fp32 forward in the main thread.
PROBE_FIXED = {"query_source": "grid", "grid_sample_mode": "uniform",
               "context_mode_train": "normal", "context_mode_test": "normal",
               "disjoint_context_query": True, "precision": "fp32", "workers": 0}


def probe_config(args: QualitativeMcConfig) -> cpac.CompletionCpacConfig:
    """The CPAC evaluator's configuration for this run: its defaults, with this tool's shared
    flags (:data:`PROBE_SHARED`), ``n_query`` = ``--n_query_probe`` and :data:`PROBE_FIXED`;
    derived with ``dataclasses.replace``, so that :func:`completion_cpac_udf.fit_head` /
    ``split_protocol`` / ``sample_config`` apply."""
    base = cpac.CompletionCpacConfig.parse(["--cache_root", args.cache_root, "--ckpt", args.ckpt])
    return replace(base, **{k: getattr(args, k) for k in PROBE_SHARED},
                   n_query=args.n_query_probe, **PROBE_FIXED)


def predict_lattice(lb, s: cpac.ShapeSample, xyz: np.ndarray, max_q: int, w, *, rep_source: str,
                    batch: int, device, source: str = "the model") -> np.ndarray:
    """Ridge prediction at every lattice point: chunks of max_q queries, one forward each with
    the same context. -> (len(xyz),) float32 in lattice order."""
    starts = list(range(0, len(xyz), max_q))
    chunks = ((ci, cpac.ShapeSample(s.ctx_xyz, s.ctx_dist, xyz[a:a + max_q],
                                    np.zeros(len(xyz[a:a + max_q]), np.float32)))
              for ci, a in enumerate(starts))
    out = np.zeros(len(xyz), np.float32)
    for ci, _, X in cpac.iter_features(lb, chunks, rep_source=rep_source, batch=batch,
                                       device=device, source=source):
        a = starts[ci]
        out[a:a + len(X)] = M.ridge_predict(X, w)
    return out


def run(args: QualitativeMcConfig) -> dict:
    ns = probe_config(args)
    head = (args.head_train_split or "").strip()
    if head == "" or head.lower() == "none":
        raise EvalError("this tool needs a head-train split (--head_train_split), "
                        "not the legacy transductive protocol")
    device = resolve_device(args.device)
    all_eval = cache_files(args.cache_root, args.split)
    if not all_eval:
        raise EvalError("no cache files under "
                        f"{os.path.join(args.cache_root, args.split, '*', '*.npz')}")
    off = max(0, int(args.shape_offset))
    sel = list(range(off, len(all_eval) if args.max_shapes <= 0
                     else min(len(all_eval), off + args.max_shapes)))
    if not sel:
        raise EvalError(f"--shape_offset {off} is past the {len(all_eval)} evaluation shapes")
    tr_paths, _, head_backend, _, head_label = cpac.split_protocol(ns, [all_eval[i] for i in sel])

    lb = load_eval_model(args.ckpt, max_len=args.max_len, qa_tokens=-1, add_eos=-1, device=device,
                         seq_len=lambda lb: required_len(args.n_context, max(1, args.n_query_probe),
                                                         lb.qa_tokens, lb.add_eos))
    max_len = int(lb.model.pos_emb.shape[1])
    room = max_queries_per_pass(max_len, args.n_context, lb.qa_tokens, lb.add_eos)
    if room < 1:
        raise CheckpointError(args.ckpt, f"max_len {max_len} leaves no room for queries after "
                                         f"{args.n_context} context points")
    max_q = queries_per_pass(room, args.n_query_probe, args.queries_per_pass)
    load = cpac.ArrayLoader(max_items=max(16, len(sel) + 1))
    # validate every selected evaluation shape before anything is written
    eval_arrays = {i: load(all_eval[i]) for i in sel}

    train_cfg = cpac.sample_config(ns, head_backend, "normal")
    w, _, n_rows = cpac.fit_head(lb, tr_paths, train_cfg, ns, device, load)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a summary describes the files of one finished run: none while this run rewrites them
    (out_dir / SUMMARY).unlink(missing_ok=True)
    np.save(out_dir / "ridge_w.npy", np.asarray(w, np.float32).reshape(-1, 1))

    res = args.grid_res
    xyz = lattice_xyz(res)
    ctx_cfg = cpac.SampleConfig(backend=args.context_backend, context_mode="normal",
                                n_context=args.n_context, n_query=1, disjoint=True,
                                query_source="pool", query_pool_frac=1.0, grid_mode="uniform",
                                grid_near_tau=0.05, grid_near_frac=0.7,
                                grid_res_schedule="16,32,64", grid_c2f_expand=1,
                                grid_c2f_stage_weights="",
                                voxel=args.voxel_config(),
                                order_dtype=args.order_dtype)
    per_shape, skipped = [], []
    for si in sel:
        path = all_eval[si]
        udf = eval_arrays[si].get("udf_grid")
        if udf is None:
            skipped.append({"name": Path(path).stem, "path": path, "reason": "no udf_grid"})
            print(f"[skip] {path}: no udf_grid", file=sys.stderr)
            continue
        name = Path(path).stem
        s = cpac.sample_ctx_query(path, ctx_cfg, args.eval_seed + cpac.TEST_SEED_OFFSET, load)
        pred = predict_lattice(lb, s, xyz, max_q, w, rep_source=args.rep_source,
                               batch=args.batch, device=device,
                               source=args.ckpt).reshape(res, res, res)
        gt = gt_volume(cpac.udf_grid_of(eval_arrays[si], path), res)
        m = M.udf_metrics(pred, gt, args.mc_level)
        sdir = out_dir / f"{si:03d}_{name}"
        sdir.mkdir(parents=True, exist_ok=True)
        write_ply(sdir / "context_pc.ply", s.ctx_xyz)
        if args.save_volumes:
            np.save(sdir / "pred_udf.npy", pred.astype(np.float32))
            np.save(sdir / "gt_udf.npy", gt.astype(np.float32))
        meshes, mc_skipped = {}, {}
        for key, vol in (("pred", pred), ("gt", gt)):
            verts, faces, reason = marching_cubes(vol, args.mc_level)
            meshes[key] = (verts, faces, reason)
            obj = sdir / f"{key}_mc.obj"
            if verts is None:
                mc_skipped[f"{key}_mc"] = reason
                if obj.exists():  # no stale mesh from an earlier run
                    obj.unlink()
            else:
                write_obj(obj, verts, faces)
        if args.save_png:
            save_preview(sdir / "preview.png", s.ctx_xyz, pred, gt, meshes, args.mc_level,
                         f"{si:03d} {name}  mae {m['mae']:.4f}  iou@{args.mc_level:g} "
                         f"{m[M.iou_key(args.mc_level)]:.3f}", args.png_dpi)
        per_shape.append({"name": name, "path": path, "mae_grid": m["mae"],
                          "rmse_grid": m["rmse"], LEVEL_KEY: m[M.iou_key(args.mc_level)],
                          "out_dir": str(sdir), "mc_skipped": mc_skipped,
                          "udf_grid_res": int(udf.shape[0])})

    summary = {
        "ckpt": os.path.abspath(args.ckpt), "cache_root": args.cache_root, "split": args.split,
        "head_train_split": head_label, "head_train_backend": head_backend,
        "n_head_train_shapes": len(tr_paths), "n_eval_shapes": len(per_shape),
        "grid_res": res, "mc_level": args.mc_level, "rep_source": args.rep_source,
        "qa_tokens": bool(lb.qa_tokens), "add_eos": bool(lb.add_eos),
        "max_query_per_pass": int(max_q),
        "per_shape": per_shape,
    }
    if per_shape:
        for k in ("mae_grid", "rmse_grid", LEVEL_KEY):
            summary[f"mean_{k}"] = float(np.mean([p[k] for p in per_shape]))
    summary.update({
        "context_backend": args.context_backend, "n_context": args.n_context,
        "n_query_probe": args.n_query_probe, "n_rows_head_train": int(n_rows),
        "ridge_lambda": args.ridge_lambda, "eval_seed": args.eval_seed,
        "order_dtype": args.order_dtype,
        "shape_offset": off, "max_shapes": args.max_shapes, "max_len": max_len,
        "voxel_grid": args.voxel_grid, "voxel_dilate": args.voxel_dilate,
        "voxel_max_steps": args.voxel_max_steps, "skipped_shapes": skipped,
    })
    try:
        write_json_atomic(summary, out_dir / SUMMARY)
    except OSError as e:  # the writer's error names no file (or its temp file): name the summary
        e.filename = str(out_dir / SUMMARY)
        raise
    return summary


@interruptible(PROG, "no summary.json written (files beside none are of an unfinished run)")
def main(argv=None) -> dict:
    """The summary; a flag or input file that cannot be used exits 2 with one line naming it
    (nothing written), a refused write exits 1 with one line naming the file."""
    args = QualitativeMcConfig.parse(argv)
    check_voxel(args)
    blocked = out_dir_problem("--out_dir", args.out_dir)
    if blocked:
        sys.exit(fail(PROG, blocked))
    try:
        summary = run(args)
    except (CheckpointError, CacheError, EvalError, DeviceUnavailable) as e:
        sys.exit(fail(PROG, e))
    except OSError as e:
        sys.exit(fail(PROG, write_failure(e.filename or args.out_dir, e), code=RUN_FAILURE))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
