"""Flag groups shared by several research CLIs, each defined once: a frozen dataclass (the
fields a CLI configuration inherits) and the one function that adds its flags to a parser.

- :class:`ModelShapeArgs` / :func:`add_model_shape_args`: ``--d_model --layers --heads
  --mlp_ratio --type_emb_std``; :func:`model_shape_kwargs` is the one place where the flag
  names ``heads`` / ``layers`` become the model constructor's ``nhead`` / ``num_layers``.
- :class:`VoxelArgs` / :func:`add_voxel_args`: ``--voxel_grid --voxel_dilate
  --voxel_max_steps`` (:class:`~nepa3d.backends.VoxelConfig`'s flags).
- :class:`DeviceArgs` / :func:`add_device_arg` and :class:`PrecisionArgs` /
  :func:`add_precision_arg`: ``--device`` (resolved by :func:`resolve_device`, the one device
  resolution) and the evaluators' ``--precision``.
- :class:`EvalSamplingArgs` / :func:`add_eval_sampling_args`: ``--order_dtype --eval_seed``, the
  token-sampling flags every evaluator (UCPR, CPAC, classification) has;
  :class:`UcprSamplingArgs` / :func:`add_ucpr_sampling_args` add the retrieval ones
  (``--eval_seed_gallery --mc_k --ablate_point_xyz --ablate_point_dist``),
  :class:`ClsEvalArgs` / :func:`add_cls_eval_args` the classification ones (split, K-shot,
  N-way, Monte-Carlo views).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nepa3d.backends import VoxelConfig
from nepa3d.cli.args import (add_order_dtype_arg, int_at_least, nonneg_float, nonneg_int,
                                   positive_float, positive_int, positive_or_auto)
from nepa3d.cli.config import CliConfig

# ------------------------------------------------------------------------------------------------
# model shape
# ------------------------------------------------------------------------------------------------

#: Flag name -> model constructor keyword, where they differ (the only such mapping).
MODEL_KWARG_OF_FLAG = {"heads": "nhead", "layers": "num_layers"}
#: The model-shape flags, in parser order.
MODEL_SHAPE_FLAGS = ("d_model", "layers", "heads", "mlp_ratio", "type_emb_std")


@dataclass(frozen=True, kw_only=True)
class ModelShapeArgs(CliConfig):
    """Transformer shape of a model a CLI builds from scratch."""

    d_model: int
    layers: int
    heads: int
    mlp_ratio: float
    type_emb_std: float

    def model_kwargs(self) -> dict[str, Any]:
        """The ``ModelConfig`` keywords of these flags (``heads`` -> ``nhead``, ``layers`` ->
        ``num_layers``)."""
        return model_shape_kwargs({n: getattr(self, n) for n in MODEL_SHAPE_FLAGS})


def model_shape_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Flag-named model-shape values (any subset, e.g. a checkpoint's recorded args) ->
    ``ModelConfig`` keywords. ``{"heads": 6, "d_model": 384}`` -> ``{"nhead": 6, "d_model": 384}``."""
    return {MODEL_KWARG_OF_FLAG.get(k, k): v for k, v in values.items() if k in MODEL_SHAPE_FLAGS}


def add_model_shape_args(parser, *, heads_help: str = "attention heads (must divide --d_model)") -> None:
    """``--d_model --layers --heads --mlp_ratio --type_emb_std`` (defaults: the paper's model);
    ``heads_help``: the CLI's wording of the --heads constraint."""
    a = parser.add_argument
    a("--d_model", type=positive_int, default=384, help="transformer width (embedding size)")
    a("--layers", type=positive_int, default=8, help="transformer encoder layers")
    a("--heads", type=positive_int, default=6, help=heads_help)
    a("--mlp_ratio", type=positive_float, default=4.0,
      help="feed-forward width as a multiple of --d_model")
    a("--type_emb_std", type=nonneg_float, default=0.02, help="type embedding init std (1.0 = original)")


# ------------------------------------------------------------------------------------------------
# voxel backend
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class VoxelArgs(CliConfig):
    """Settings of the voxel backend (:class:`~nepa3d.backends.VoxelConfig`)."""

    voxel_grid: int
    voxel_dilate: int
    voxel_max_steps: int

    def voxel_config(self) -> VoxelConfig:
        """The validated :class:`VoxelConfig` (``ValueError`` naming a bad setting)."""
        return VoxelConfig.from_args(self)


#: ``--voxel_grid --voxel_dilate --voxel_max_steps``: the one definition is VoxelConfig's.
add_voxel_args = VoxelConfig.add_args


# ------------------------------------------------------------------------------------------------
# device and precision
# ------------------------------------------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """``--device cuda`` on a machine without CUDA."""


@dataclass(frozen=True, kw_only=True)
class DeviceArgs(CliConfig):
    device: str


def add_device_arg(parser) -> None:
    """``--device auto|cpu|cuda``."""
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="auto = cuda when available, else cpu")


def resolve_device(name: str = "auto"):
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA raises
    :class:`DeviceUnavailable`. -> ``torch.device``"""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda requested but CUDA is not available")
    return torch.device(name)


@dataclass(frozen=True, kw_only=True)
class PrecisionArgs(CliConfig):
    precision: str


#: Forward precisions of the evaluators (resolved by ``nepa3d.analysis.features.resolve_precision``).
PRECISIONS = ("fp32", "bf16", "auto")


def add_precision_arg(parser) -> None:
    """``--precision fp32|bf16|auto``."""
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="forward precision (bf16: autocast; auto: bf16 on CUDA only)")


# ------------------------------------------------------------------------------------------------
# evaluator sampling
# ------------------------------------------------------------------------------------------------

EVAL_SEED_HELP = "token sampling seed of every evaluated file"


@dataclass(frozen=True, kw_only=True)
class EvalSamplingArgs(CliConfig):
    """Token sampling of an evaluator: the order arithmetic and the per-file seed."""

    order_dtype: str
    eval_seed: int


def add_eval_seed_arg(parser, help: str = EVAL_SEED_HELP) -> None:
    """``--eval_seed`` (default 0); ``help`` says which files it samples."""
    parser.add_argument("--eval_seed", type=int, default=0, help=help)


@dataclass(frozen=True, kw_only=True)
class UcprSamplingArgs(EvalSamplingArgs):
    """Retrieval sampling: gallery seed, MC views and the token ablations (both sides)."""

    eval_seed_gallery: int
    mc_k: int
    ablate_point_xyz: bool
    ablate_point_dist: bool

    @property
    def gallery_seed(self) -> int:
        """The gallery's sampling seed: ``--eval_seed_gallery``, or ``--eval_seed`` when < 0."""
        return self.eval_seed if self.eval_seed_gallery < 0 else self.eval_seed_gallery


def add_eval_sampling_args(parser) -> None:
    """``--order_dtype --eval_seed`` (:class:`EvalSamplingArgs`)."""
    add_order_dtype_arg(parser)
    add_eval_seed_arg(parser)


def add_ucpr_sampling_args(parser, *, xyz_tokens: str = "POINT / Q_POINT",
                           dist_tokens: str = "POINT / A_POINT") -> None:
    """``--order_dtype --eval_seed --eval_seed_gallery --mc_k --ablate_point_xyz
    --ablate_point_dist`` (retrieval and its shape-descriptor baseline); ``xyz_tokens`` /
    ``dist_tokens`` name the token types the ablations touch in the CLI's sequences."""
    add_eval_sampling_args(parser)
    a = parser.add_argument
    a("--eval_seed_gallery", type=int, default=-1, help="< 0: eval_seed")
    a("--mc_k", type=positive_int, default=1, help="MC views averaged per embedding")
    a("--ablate_point_xyz", action="store_true",
      help=f"zero xyz of {xyz_tokens} tokens (both sides)")
    a("--ablate_point_dist", action="store_true",
      help=f"zero the distance of {dist_tokens} tokens (both sides)")



@dataclass(frozen=True, kw_only=True)
class ClsEvalArgs(EvalSamplingArgs):
    """Classification protocol: the train/val split seed, the K-shot / N-way subset and the
    Monte-Carlo views of the val/test files (``--val_ratio`` and ``--seed`` stay with each CLI:
    their meaning differs)."""

    val_seed: int
    fewshot_k: int
    fewshot_seed: int
    fewshot_n_way: int
    fewshot_way_seed: int
    mc_eval_k: int
    mc_eval_k_val: int
    mc_eval_k_test: int

    def mc_views(self) -> tuple[int, int]:
        """(val views, test views) per file: ``--mc_eval_k_val`` / ``--mc_eval_k_test``, or
        ``--mc_eval_k`` where they are -1."""
        return (self.mc_eval_k if self.mc_eval_k_val < 0 else self.mc_eval_k_val,
                self.mc_eval_k if self.mc_eval_k_test < 0 else self.mc_eval_k_test)


def add_cls_eval_args(parser, *, eval_seed_help: str, mc_help: str) -> None:
    """``--val_seed --fewshot_k --fewshot_seed --fewshot_n_way --fewshot_way_seed --eval_seed
    --mc_eval_k --mc_eval_k_val --mc_eval_k_test`` (fine-tuning and its descriptor baseline);
    ``eval_seed_help`` / ``mc_help`` say which files are sampled and what is averaged."""
    a = parser.add_argument
    a("--val_seed", type=int, default=0, help="seed of the train/val split")
    a("--fewshot_k", type=nonneg_int, default=0, help="training shapes per class (0 = all)")
    a("--fewshot_seed", type=int_at_least(-1), default=0,
      help="seed of the K-shot subset; -1 = same as --seed (the M1 protocol for K > 0; docs/protocols.md#m1_fewshot)")
    a("--fewshot_n_way", type=nonneg_int, default=0, help="classes kept (0 = all)")
    a("--fewshot_way_seed", type=int_at_least(-1), default=-1,
      help="seed of the N-way class subset; -1 = same as --seed")
    add_eval_seed_arg(parser, help=eval_seed_help)
    a("--mc_eval_k", type=positive_int, default=1, help=mc_help)
    a("--mc_eval_k_val", type=positive_or_auto, default=-1, help="-1 = --mc_eval_k")
    a("--mc_eval_k_test", type=positive_or_auto, default=-1, help="-1 = --mc_eval_k")
