"""Non-learned few-shot classification baseline: shape descriptors + logistic regression.

    python -m nepa3d.analysis.baseline_cls --cache_root data/scanobjectnn_main_split_v2 \
        --backend pointcloud_noray --n_point 64 --fewshot_k 5 --fewshot_seed -1 --seed 0 \
        --mc_eval_k 2 --out_json results/cls_baseline_k5_s0.json

The protocol of :mod:`nepa3d.train.finetune_cls` without a network: the same files
(``select_files``: stratified validation split by --val_seed, K-shot subset by the few-shot
seed, N-way classes), the same result envelope (task ``cls``) and metric names.

Tokens: every file (train, val and test) is tokenised as finetune_cls's eval mode does, in
the legacy layout with no rays: view k of ``path`` is ``build_sequence(get_pools(backend,
...), TokenizerConfig(n_point, n_ray=0, qa_tokens=False, add_eos=True), path_rng(path,
eval_seed, k))`` (the point draws do not depend on n_ray or the layout, so these are the
points a model sees in eval mode). Val files get --mc_eval_k_val views, test files
--mc_eval_k_test views (each -1 = --mc_eval_k), training files --train_views views (-1 = the
test views); a file's descriptor (:mod:`nepa3d.analysis.shape_descriptors`) is the mean over
its views.

Classifier: features standardised with the training subset's mean/std, multinomial logistic
regression (scikit-learn, lbfgs) with C chosen on the validation split from C_GRID (best
val accuracy, ties -> smallest C; no validation set -> C = 1, best_val_acc = 0 as in
finetune_cls). The fit is deterministic: --seed only matters through the K-shot subset (when
--fewshot_seed is -1) and the N-way classes (--fewshot_way_seed -1); it does not seed the fit.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from nepa3d.analysis.shape_descriptors import DESCRIPTOR_DIM, token_descriptor
from nepa3d import backends
from nepa3d.backends import BACKENDS, VoxelConfig, get_pools
from nepa3d.data.cache import CacheError, load_cache
from nepa3d.data.dataset import class_of
from nepa3d.protocol_thresholds import MAJORITY_FLAG, majority_collapse
from nepa3d.token.ordering import DEFAULT_ORDER_DTYPE
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.train.finetune_cls import VAL_RATIO, fewshot_seed, majority_rate, select_files
from nepa3d.cli.args import (make_parser, add_order_dtype_arg, fail, int_at_least,
                                   positive_or_auto)
from nepa3d.cli.edge import check_voxel, emit_or_fail, interruptible, out_file_problem
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import ClsEvalArgs, VoxelArgs, add_cls_eval_args, add_voxel_args
from nepa3d.utils.results import ResultTimer, build_result
from nepa3d.utils.seeding import path_rng

PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run
PROG = "baseline_cls"
C_GRID = (0.01, 0.1, 1.0, 10.0)
C_DEFAULT = 1.0
MAX_ITER = 10000
BASELINE = "shape_descriptors+logreg"


class BaselineError(ValueError):
    """A flag value or input the baseline cannot use: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("nepa3d.analysis.baseline_cls", __doc__.split("\n")[0])
    a = p.add_argument
    a("--cache_root", default="data/modelnet40_cache",
      help="cache folder with train/ and test/ splits of <class>/*.npz files")
    a("--backend", default="mesh", choices=BACKENDS,
      help="which cache arrays the descriptors are computed from (train and eval unless "
           "overridden)")
    a("--train_backend", default=None, choices=BACKENDS, help="default: --backend")
    a("--eval_backend", default=None, choices=BACKENDS, help="val/test; default: --backend")
    a("--n_point", type=int_at_least(2), default=64,
      help="POINT tokens per view (no checkpoint to take it from)")
    a("--n_ray", type=int, default=None, help="accepted for compatibility: must be 0 or omitted")
    add_order_dtype_arg(p)
    a("--seed", type=int, default=0, help="only used through the K-shot subset / N-way classes")
    a("--val_ratio", type=VAL_RATIO, default=0.1,
      help="fraction of each class of the training split held out for choosing C, in [0, 1)")
    add_cls_eval_args(p, eval_seed_help="token sampling seed of every file",
                      mc_help="views per file whose descriptors are averaged")
    a("--train_views", type=positive_or_auto, default=-1,
      help="views per training file; -1 = test views")
    add_voxel_args(p)
    a("--out_json", default="",
      help="also write the result envelope (metrics, settings, timings) to this file; empty = no")
    return p


@dataclass(frozen=True, kw_only=True)
class BaselineClsConfig(ClsEvalArgs, VoxelArgs, CliConfig):
    """Flags of ``python -m nepa3d.analysis.baseline_cls`` (one field per flag)."""

    cache_root: str
    backend: str
    train_backend: str | None
    eval_backend: str | None
    n_point: int
    n_ray: int | None
    seed: int
    val_ratio: float
    train_views: int
    out_json: str

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def view_counts(args: BaselineClsConfig) -> dict:
    """{train, val, test}: views per file (resolved -1 defaults)."""
    k_val, k_test = args.mc_views()
    k_train = k_test if args.train_views < 0 else args.train_views
    return {"train": int(k_train), "val": int(k_val), "test": int(k_test)}


def check_args(args: BaselineClsConfig) -> None:
    """What the parser's types leave: --n_ray must be 0 or omitted."""
    if args.n_ray not in (None, 0):
        raise BaselineError(f"--n_ray {args.n_ray}: the descriptor baseline uses no rays "
                            "(pass 0 or omit it)")


def file_descriptors(paths: list[str], backend: str, n_point: int, eval_seed: int, views: int,
                     voxel: VoxelConfig | None = None,
                     order_dtype: str = DEFAULT_ORDER_DTYPE) -> np.ndarray:
    """Mean descriptor over ``views`` eval-mode views of each file. -> (len(paths), D) float64"""
    cfg = TokenizerConfig(n_point=n_point, n_ray=0, qa_tokens=False, add_eos=True,
                          drop_ray_prob=0.0, order_dtype=order_dtype)
    out = np.zeros((len(paths), DESCRIPTOR_DIM), dtype=np.float64)
    for i, path in enumerate(paths):
        pools = get_pools(backend, path, load_cache(path), voxel)
        for k in range(views):
            feat, types = build_sequence(pools, cfg, path_rng(path, eval_seed, k))
            out[i] += token_descriptor(feat, types)
        out[i] /= views
    return out


def fit_logreg(X: np.ndarray, y: np.ndarray, C: float):
    """Standardise on X, fit lbfgs logistic regression. -> (predict fn, converged)"""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=float(C), solver="lbfgs", max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(X), y)
    converged = bool(np.all(np.asarray(clf.n_iter_) < MAX_ITER))
    return (lambda Z: clf.predict(scaler.transform(Z))), converged


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred) == np.asarray(y)).sum()) / max(len(y), 1)


def choose_C(Xtr, ytr, Xval, yval, grid=C_GRID) -> tuple[float, float, dict]:
    """(C, best val acc, {C: val acc}): the best val accuracy, ties -> the smallest C;
    no validation set -> (C_DEFAULT, 0.0, {})."""
    if len(yval) == 0:
        return C_DEFAULT, 0.0, {}
    accs = {}
    for C in sorted(grid):
        predict, _ = fit_logreg(Xtr, ytr, C)
        accs[float(C)] = accuracy(predict(Xval), yval)
    best = max(accs.values())
    C = min(c for c, a in accs.items() if a == best)
    return C, best, accs


def run(args: BaselineClsConfig) -> tuple[dict, list[str], dict]:
    """-> (metrics, flags, extra)"""
    check_args(args)
    train, val, test, label_map = select_files(args)  # >= 2 classes (CacheError otherwise)
    views = view_counts(args)
    voxel = args.voxel_config()
    tb, eb = args.train_backend or args.backend, args.eval_backend or args.backend
    lab = lambda ps: np.array([label_map[class_of(p)] for p in ps], dtype=np.int64)  # noqa: E731
    feats = lambda ps, b, k: file_descriptors(  # noqa: E731
        ps, b, args.n_point, args.eval_seed, k, voxel, args.order_dtype)
    Xtr, ytr = feats(train, tb, views["train"]), lab(train)
    Xval, yval = (feats(val, eb, views["val"]) if val else np.zeros((0, DESCRIPTOR_DIM))), lab(val)
    Xte, yte = feats(test, eb, views["test"]), lab(test)
    print(f"[baseline_cls] train={len(train)} val={len(val)} test={len(test)} "
          f"classes={len(label_map)} K={args.fewshot_k} views={views}", file=sys.stderr)

    C, best_val, val_by_C = choose_C(Xtr, ytr, Xval, yval)
    predict, converged = fit_logreg(Xtr, ytr, C)
    pred = predict(Xte)
    test_acc = accuracy(pred, yte)
    n_pred = int(len(np.unique(pred)))
    majority = majority_rate(yte)
    metrics = {"test_acc": test_acc, "best_val_acc": best_val,
               "test_majority_rate": majority, "test_pred_classes": n_pred,
               "n_train": len(train), "n_val": len(val), "n_test": len(test),
               "n_classes": len(label_map)}
    flags = [MAJORITY_FLAG] if majority_collapse(test_acc, majority) else []
    extra = {"baseline": BASELINE, "C": C, "C_grid": list(C_GRID),
             "val_acc_by_C": {f"{c:g}": a for c, a in val_by_C.items()},
             "descriptor_dim": DESCRIPTOR_DIM, "logreg_converged": converged,
             "fewshot_seed_used": fewshot_seed(args), "views": views,
             "train_backend": tb, "eval_backend": eb,
             "train_dist_source": backends.recorded_source(tb, train[0]),
             "eval_dist_source": backends.recorded_source(eb, test[0])}
    print(f"[baseline_cls] C={C:g} best_val={best_val:.4f} test_acc={test_acc:.4f}",
          file=sys.stderr)
    return metrics, flags, extra


@interruptible(PROG, "no result written (--out_json untouched)")
def main(argv=None) -> int:
    """0; a flag or input file that cannot be used: 2 and one line naming it (nothing written);
    a refused write of --out_json exits 1."""
    args = BaselineClsConfig.parse(argv)
    check_voxel(args)
    blocked = out_file_problem("--out_json", args.out_json)
    if blocked:
        return fail(PROG, blocked)
    timer = ResultTimer()
    try:
        metrics, flags, extra = run(args)
    except (CacheError, BaselineError) as e:
        return fail(PROG, e)
    resolved = {**args.record(), "n_ray": 0, "train_views": extra["views"]["train"]}
    result = build_result("cls", resolved, metrics,
                          timer.provenance(seed=args.seed, ckpt=None, cache_root=args.cache_root,
                                           device="cpu"),
                          flags=flags, extra=extra)
    emit_or_fail(PROG, result, args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
