"""Fine-tune a pretrained QueryNepa on ScanObjectNN caches (full or K-shot) and report test accuracy.

    python -m nepa3d.train.finetune_cls --cache_root data/scanobjectnn_main_split_v2 \
        --backend pointcloud_noray --ckpt runs/x/last.pt --fewshot_k 5 --fewshot_seed 0 \
        --seed 0 --mc_eval_k_val 1 --mc_eval_k_test 4 --save_dir runs/scan_x_k5_s0 \
        --out_json results/cls_x_k5_s0.json

Protocol: stratified validation split (val_seed), K-shot per class from the rest
(fewshot_seed), classifier on the last token's hidden state, model selection on val
accuracy, test accuracy of the best state with MC evaluation (logits averaged over views).
With ``--save_dir``, a finished run (``last.pt`` present) is not trained again when it was
trained with the same arguments (RESULT_NEUTRAL_ARGS aside), the same --ckpt file (sha256) and the
same --cache_root listing; otherwise its files are removed and the run trains from scratch.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from nepa3d import backends
from nepa3d.backends import BACKENDS
from nepa3d.data.cache import CacheError
from nepa3d.data.dataset import Item, TokenDataset, cache_files, class_of, collate
from nepa3d.models.checkpoint import load_backbone
from nepa3d.protocol_thresholds import MAJORITY_FLAG, majority_collapse
from nepa3d.token import types as tt
from nepa3d.token.tokenizer import TokenizerConfig
from nepa3d.train.fewshot import choose_n_way, stratified_kshot, stratified_train_val_split
from nepa3d.utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint
from nepa3d.cli.args import (make_parser, SWITCH, TRI_STATE, add_order_dtype_arg,
                                   float_in, nonneg_float, nonneg_int,
                                   positive_float, positive_int, fail, positive_or_auto,
                                   unit_float, usage_error, with_order_dtype)
from nepa3d.cli.edge import (RUN_FAILURE, WriteFailure, emit_or_fail, interruptible,
                             out_dir_problem, out_file_problem, writing)
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import (ClsEvalArgs, DeviceArgs, DeviceUnavailable, VoxelArgs,
                                        add_cls_eval_args, add_device_arg, add_voxel_args,
                                        resolve_device)
from nepa3d.utils.curves import plot_curves
from nepa3d.utils.results import ResultTimer, build_result, sha256_file
from nepa3d.utils.run_identity import describe_difference, first_differing_arg, tree_listing_sha256
from nepa3d.utils.seeding import set_seed

#: --val_ratio: a fraction of each class held out; 1 would leave nothing to train on.
VAL_RATIO = float_in(0.0, 1.0, high_open=True)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("nepa3d.train.finetune_cls", __doc__.split("\n")[0])
    a = p.add_argument
    a("--cache_root", default="data/modelnet40_cache",
      help="cache folder with train/ and test/ splits of <class>/*.npz files")
    a("--backend", default="mesh", choices=BACKENDS,
      help="which cache arrays feed the tokens (train and eval unless overridden below)")
    a("--train_backend", default=None, choices=BACKENDS,
      help="backend of the training split (omitted: --backend)")
    a("--eval_backend", default=None, choices=BACKENDS,
      help="backend of the val/test splits (omitted: --backend)")
    a("--ckpt", required=True,
      help="pretrained checkpoint to fine-tune (or a scratch_ckpt one for the from-scratch "
           "baseline)")
    a("--save_dir", default="",
      help="folder for the best/last checkpoints and curves; empty = save nothing")
    a("--batch", type=positive_int, default=32, help="samples per optimizer step")
    a("--epochs", type=positive_int, default=100, help="fine-tuning epochs")
    a("--lr", type=positive_float, default=1e-4, help="AdamW learning rate")
    a("--weight_decay", type=nonneg_float, default=0.05, help="AdamW weight decay")
    a("--n_point", type=positive_int, default=None,
      help="POINT tokens per sample (omitted: the checkpoint's; larger values are capped to it "
           "unless --allow_scale_up 1)")
    a("--n_ray", type=nonneg_int, default=None, help="0: no ray tokens (ScanObjectNN)")
    a("--allow_scale_up", type=int, choices=SWITCH, default=0,
      help="1: allow --n_point/--n_ray above the checkpoint's pretraining sizes")
    a("--max_len", type=positive_or_auto, default=-1,
      help="positional-embedding length; -1 = max(checkpoint length, required length)")
    a("--num_workers", type=nonneg_int, default=4,
      help="DataLoader worker processes; 0 = load in the main process")
    a("--seed", type=int, default=0,
      help="random seed of the classifier head, sampling and shuffling")
    a("--val_ratio", type=VAL_RATIO, default=0.1,
      help="fraction of each class of the training split held out for model selection, in [0, 1)")
    add_cls_eval_args(p, eval_seed_help="token sampling seed of every val/test file",
                      mc_help="views per val/test file whose logits are averaged (Monte-Carlo "
                              "evaluation)")
    a("--drop_ray_prob_train", type=unit_float, default=0.0,
      help="training only: probability of turning a sample's rays into MISSING_RAY tokens")
    a("--force_missing_ray", action="store_true",
      help="make every ray token MISSING_RAY (train and eval)")
    add_voxel_args(p)
    a("--add_eos", type=int, choices=TRI_STATE, default=-1,
      help="1/0: end each sequence with EOS or not; -1 = as the checkpoint was pretrained")
    a("--qa_tokens", type=int, choices=TRI_STATE, default=-1,
      help="1/0: query/answer or legacy tokens; -1 = as the checkpoint was pretrained")
    add_order_dtype_arg(p)
    a("--freeze_backbone", action="store_true", help="train the linear head only (linear probe)")
    a("--shuffle_train_labels", type=int, default=0, choices=SWITCH,
      help="canary only: train on a fixed random permutation of the training labels (a planted "
           "defect: the result is flagged planted_defect:shuffled_labels and never a real number)")
    add_device_arg(p)
    a("--out_json", default="",
      help="also write the result envelope (test accuracy, args, timings) to this file; empty = "
           "no")
    return p


class Classifier(nn.Module):
    """Backbone + Linear(d_model, n_classes) on the last token's hidden state."""

    def __init__(self, backbone, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.d_model, n_classes)

    def forward(self, feat, types):
        """feat (B, T, 15), types (B, T) -> logits (B, n_classes)"""
        _, _, h = self.backbone(feat, types)
        return self.head(h[:, -1, :])


class DivergedRun(RuntimeError):
    """The classifier's logits or loss hold NaN or inf: argmax over NaN logits picks class 0
    and would report that class's frequency as the accuracy, so the run fails instead."""


def require_finite(value: torch.Tensor, what: str) -> None:
    """Raise :class:`DivergedRun` naming ``what`` when ``value`` holds NaN or inf."""
    if not bool(torch.isfinite(value).all()):
        raise DivergedRun(f"{what} holds NaN or inf (the checkpoint's weights overflow or "
                          "training diverged; try a lower --lr); no accuracy reported")


@torch.no_grad()
def predict(model: Classifier, dl: DataLoader, device) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels; MC views (B, K, T, F) are averaged in logit space."""
    model.eval()
    preds, ys = [], []
    for feat, types, y in dl:
        feat, types = feat.to(device), types.to(device)
        if feat.dim() == 4:
            B, K = feat.shape[:2]
            logits = model(feat.flatten(0, 1), types.flatten(0, 1)).view(B, K, -1).mean(1)
        else:
            logits = model(feat, types)
        require_finite(logits, "evaluation logits")
        preds.append(logits.argmax(-1).cpu().numpy())
        ys.append(y.numpy())
    if not preds:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(preds), np.concatenate(ys)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).sum()) / max(len(y), 1)


def majority_rate(y: np.ndarray) -> float:
    """Fraction of the most frequent class: the accuracy of a collapsed classifier."""
    if len(y) == 0:
        return 0.0
    return float(np.bincount(y).max()) / len(y)


#: The result flag of a run trained on shuffled labels (a canary; see ``--shuffle_train_labels``).
SHUFFLED_LABELS_FLAG = "planted_defect:shuffled_labels"
PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run


def shuffled_labels(labels: list[int], seed: int) -> list[int]:
    """The same multiset of labels in an order drawn from ``RandomState(seed + 7919)``: each
    training shape gets another shape's label, so nothing about the shape predicts it."""
    order = np.random.RandomState((seed + 7919) & 0xFFFFFFFF).permutation(len(labels))
    return [labels[i] for i in order]


def token_sizes(args: FinetuneClsConfig, pre_args: dict) -> tuple[int, int]:
    """(n_point, n_ray): the CLI values, else the pretraining ones; capped at the pretraining
    sizes unless --allow_scale_up."""
    n_point = args.n_point if args.n_point is not None else int(pre_args.get("n_point", 256))
    n_ray = args.n_ray if args.n_ray is not None else int(pre_args.get("n_ray", 256))
    if not args.allow_scale_up:
        n_point = min(n_point, int(pre_args.get("n_point", n_point)))
        n_ray = min(n_ray, int(pre_args.get("n_ray", n_ray)))
    return n_point, n_ray


def fewshot_seed(args: ClsEvalArgs) -> int:
    """The K-shot subset seed: --fewshot_seed, or --seed when it is -1."""
    return args.seed if args.fewshot_seed < 0 else args.fewshot_seed


def select_files(args: ClsEvalArgs):
    train_all = cache_files(args.cache_root, "train")
    test_all = cache_files(args.cache_root, "test")
    if not train_all or not test_all:
        raise CacheError(args.cache_root, "needs train/*/*.npz and test/*/*.npz cache files")
    train_classes = sorted({class_of(p) for p in train_all})
    unseen = sorted({class_of(p) for p in test_all} - set(train_classes))
    if unseen and args.fewshot_n_way <= 0:  # their test shapes would silently leave the count
        raise CacheError(Path(args.cache_root) / "test", f"{len(unseen)} class(es) with no "
                         f"training shapes: {', '.join(unseen[:3])}{', ...' if len(unseen) > 3 else ''}")
    shot_seed = fewshot_seed(args)
    way_seed = shot_seed if args.fewshot_way_seed < 0 else args.fewshot_way_seed
    if args.fewshot_n_way > len(train_classes):  # the original's draw without replacement fails
        usage_error(f"--fewshot_n_way {args.fewshot_n_way}: more than the {len(train_classes)} "
                    f"classes of {Path(args.cache_root) / 'train'}")
    classes = choose_n_way(train_classes, args.fewshot_n_way, way_seed)
    keep = set(classes)
    train_all = [p for p in train_all if class_of(p) in keep]
    test = [p for p in test_all if class_of(p) in keep]
    label_map = {c: i for i, c in enumerate(classes)}
    train_part, val = stratified_train_val_split(train_all, [class_of(p) for p in train_all],
                                                 args.val_ratio, args.val_seed)
    train = stratified_kshot(train_part, [class_of(p) for p in train_part], args.fewshot_k,
                             shot_seed)
    n_train_classes = len({class_of(p) for p in train})
    if len(label_map) < 2 or n_train_classes < 2:  # accuracy over one class is 1.0 by construction
        raise CacheError(args.cache_root, f"the training subset needs at least 2 classes (has "
                                          f"{n_train_classes}; --fewshot_n_way {args.fewshot_n_way})")
    return train, val, test, label_map


def backend_record(args) -> dict:
    """Each side's backend and where its point distances came from (the result's ``extra``; the
    benchmark plugin's ``mesh_distance_leak`` guard reads them)."""
    train, _, test, _ = select_files(args)
    tb, eb = args.train_backend or args.backend, args.eval_backend or args.backend
    return {"train_backend": tb, "eval_backend": eb,
            "train_dist_source": backends.recorded_source(tb, train[0]),
            "eval_dist_source": backends.recorded_source(eb, test[0])}


#: Arguments that cannot change a fine-tuning result (``ckpt``: its path; the file's contents
#: are compared by sha256 instead): a finished save_dir is reused when all others are equal.
RESULT_NEUTRAL_ARGS = ("num_workers", "out_json", "device", "save_dir", "ckpt")
#: Files a finished run leaves in its save_dir (``last.pt`` holds the result it reuses).
STATE_FILES = ("last.pt", "train_log.json", "curves.png")


def input_fingerprints(args: FinetuneClsConfig) -> dict:
    """What the result is computed from besides the arguments: the sha256 of the --ckpt file and
    the listing fingerprint of --cache_root (None for a missing file / folder)."""
    return {"ckpt_sha256": sha256_file(args.ckpt),
            "cache_root_listing_sha256": tree_listing_sha256(args.cache_root)}


def reuse_refusal(done: dict, current_args: dict, inputs: dict) -> str | None:
    """Why the finished run ``done`` (a save_dir's last.pt) is not this run's result; None when
    its recorded arguments (RESULT_NEUTRAL_ARGS aside) and input fingerprints equal this run's."""
    if not done.get("result_metrics"):
        return "it records no finished result"
    saved_args = with_order_dtype(done.get("args") or {})
    name = first_differing_arg(saved_args, current_args, RESULT_NEUTRAL_ARGS)
    if name is not None:
        return f"it was trained with {describe_difference(saved_args, current_args, name)}"
    saved_inputs = done.get("inputs") or {}
    for key, value in inputs.items():
        if saved_inputs.get(key) != value:
            return f"its {key} differs ({str(saved_inputs.get(key))[:12]} vs {str(value)[:12]})"
    return None


def clear_state(save_dir: Path) -> None:
    """Remove the STATE_FILES of an earlier run in ``save_dir``."""
    for name in STATE_FILES:
        (save_dir / name).unlink(missing_ok=True)


def run(args: FinetuneClsConfig) -> tuple[dict, list[str], torch.device, list[dict]]:
    """Train (or reuse a finished ``save_dir``); return (metrics, flags, device, history),
    ``history`` being one record per epoch (train_loss, train_acc, val_acc, seconds)."""
    set_seed(args.seed)
    device = resolve_device(args.device)
    save_dir = Path(args.save_dir) if args.save_dir else None
    inputs = input_fingerprints(args) if save_dir else {}
    if save_dir and (save_dir / "last.pt").exists():
        done = load_checkpoint(save_dir / "last.pt")
        refusal = reuse_refusal(done, args.record(), inputs)
        if refusal is None:
            print(f"[finetune] {save_dir}/last.pt is this run's: not training again")
            return (done["result_metrics"], done.get("result_flags", []), device,
                    done.get("history", []))
        print(f"[finetune] not reusing {save_dir}/last.pt: {refusal}; training again from scratch")
        clear_state(save_dir)
    loaded = load_backbone(
        args.ckpt, max_len=args.max_len, qa_tokens=args.qa_tokens, add_eos=args.add_eos,
        required_len=lambda st: tt.required_len(*token_sizes(args, st.args), st.qa_tokens, st.add_eos),
        device=device)
    n_point, n_ray = token_sizes(args, loaded.args)
    qa, eos = loaded.qa_tokens, loaded.add_eos

    train, val, test, label_map = select_files(args)
    tok = TokenizerConfig(n_point=n_point, n_ray=n_ray, qa_tokens=qa, add_eos=eos,
                          drop_ray_prob=args.drop_ray_prob_train, order_dtype=args.order_dtype)
    tb, eb = args.train_backend or args.backend, args.eval_backend or args.backend
    voxel = args.voxel_config()

    def items(paths, backend, labels=None):
        labels = labels if labels is not None else [label_map[class_of(p)] for p in paths]
        return [Item(p, backend, y, None, args.force_missing_ray, voxel) for p, y in zip(paths, labels)]

    train_labels = [label_map[class_of(p)] for p in train]
    if args.shuffle_train_labels:
        train_labels = shuffled_labels(train_labels, args.seed)

    k_val, k_test = args.mc_views()
    ds_train = TokenDataset(items(train, tb, train_labels), tok, mode="train", seed=args.seed)
    dl_kw = dict(batch_size=args.batch, num_workers=args.num_workers, collate_fn=collate)
    dl_val = (DataLoader(TokenDataset(items(val, eb), tok, mode="eval", eval_seed=args.eval_seed,
                                      mc_k=k_val), **dl_kw) if val else None)
    dl_test = DataLoader(TokenDataset(items(test, eb), tok, mode="eval", eval_seed=args.eval_seed,
                                      mc_k=k_test), **dl_kw)

    model = Classifier(loaded.model, len(label_map)).to(device)
    if args.freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    lossf = nn.CrossEntropyLoss()
    best_val, best_ep, best_state, history = -1.0, -1, None, []
    print(f"[finetune] train={len(train)} val={len(val)} test={len(test)} classes={len(label_map)} "
          f"K={args.fewshot_k} T={tok.seq_len} qa={qa}")
    for epoch in range(args.epochs):
        ds_train.set_epoch(epoch)
        model.train()
        if args.freeze_backbone:
            model.backbone.eval()
        t0, tot, correct, seen = time.time(), 0.0, 0, 0
        for feat, types, y in DataLoader(ds_train, shuffle=False, **dl_kw):
            feat, types, y = feat.to(device), types.to(device), y.to(device)
            logits = model(feat, types)
            loss = lossf(logits, y)
            require_finite(loss, f"training loss at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
        val_acc = accuracy(*predict(model, dl_val, device)) if dl_val else 0.0
        rec = {"epoch": epoch, "train_loss": tot / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_acc": val_acc, "seconds": round(time.time() - t0, 2)}
        history.append(rec)
        if epoch % max(1, args.epochs // 10) == 0 or epoch == args.epochs - 1:
            print("[finetune] " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in rec.items()))
        if val_acc > best_val + 1e-12:
            best_val, best_ep = val_acc, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    model.load_state_dict(best_state)
    pred, y_test = predict(model, dl_test, device)
    test_acc = accuracy(pred, y_test)
    metrics = {"test_acc": test_acc, "best_val_acc": best_val, "best_epoch": best_ep,
               "test_majority_rate": majority_rate(y_test),
               "test_pred_classes": int(len(np.unique(pred))),
               "n_train": len(train), "n_val": len(val), "n_test": len(test),
               "n_classes": len(label_map)}
    flags = []
    if majority_collapse(test_acc, metrics["test_majority_rate"]):  # also covers one predicted class
        flags.append(MAJORITY_FLAG)
    if args.shuffle_train_labels:
        flags.append(SHUFFLED_LABELS_FLAG)
    print(f"best_val={best_val:.4f} best_ep={best_ep} test_acc={test_acc:.4f}")
    if save_dir:
        with writing(save_dir / "train_log.json"):
            (save_dir / "train_log.json").parent.mkdir(parents=True, exist_ok=True)
            (save_dir / "train_log.json").write_text(json.dumps(history, indent=1))
        plot_curves(history, save_dir / "curves.png",
                    title=f"finetune K={args.fewshot_k} seed={args.seed} ({save_dir})")
        with writing(save_dir / "last.pt"):
            save_checkpoint({"model": best_state, "epoch": args.epochs - 1, "val_acc": best_val,
                             "test_acc": test_acc, "args": args.record(),
                             "pretrain_ckpt": str(args.ckpt), "result_metrics": metrics,
                             "result_flags": flags, "history": history, "inputs": inputs},
                            save_dir / "last.pt")
    return metrics, flags, device, history


PROG = "finetune_cls"


@dataclass(frozen=True, kw_only=True)
class FinetuneClsConfig(ClsEvalArgs, VoxelArgs, DeviceArgs, CliConfig):
    """Flags of ``python -m nepa3d.train.finetune_cls`` (one field per flag)."""

    cache_root: str
    backend: str
    train_backend: str | None
    eval_backend: str | None
    ckpt: str
    save_dir: str
    batch: int
    epochs: int
    lr: float
    weight_decay: float
    n_point: int | None
    n_ray: int | None
    allow_scale_up: bool
    max_len: int
    num_workers: int
    seed: int
    val_ratio: float
    drop_ray_prob_train: float
    force_missing_ray: bool
    add_eos: int
    qa_tokens: int
    freeze_backbone: bool
    shuffle_train_labels: bool
    out_json: str

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


@interruptible(PROG, "no result written (--out_json untouched); the same command trains again")
def main(argv=None) -> int:
    """0 on success; a flag or input file that cannot be used exits 2 with one line naming it
    (checked before training: an output path blocked by a file included), a refused write 1."""
    args = FinetuneClsConfig.parse(argv)
    blocked = (out_file_problem("--out_json", args.out_json) if args.out_json else None) or (
        out_dir_problem("--save_dir", args.save_dir) if args.save_dir else None)
    if blocked:
        return fail(PROG, blocked)
    timer = ResultTimer()
    try:
        metrics, flags, device, history = run(args)
    except (CheckpointError, CacheError, DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteFailure as e:
        return fail(PROG, e, code=RUN_FAILURE)
    except DivergedRun as e:
        return fail(PROG, f"{args.ckpt}: {e}", code=RUN_FAILURE)
    result = build_result("cls", args.record(), metrics,
                          timer.provenance(seed=args.seed, ckpt=args.ckpt, cache_root=args.cache_root,
                                           device=device), flags=flags,
                          extra={"fewshot_seed_used": fewshot_seed(args), **backend_record(args)},
                          history=history)
    emit_or_fail(PROG, result, args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
