"""Write a random-initialised checkpoint: the 'scratch' baseline of the few-shot tables.

    python -m nepa3d.train.scratch_ckpt --out runs/scratch/last.pt --d_model 384 --layers 8 \
        --heads 6 --n_point 256 --n_ray 256 --qa_tokens 0 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.token import types as tt
from nepa3d.utils.ckpt import save_checkpoint
from nepa3d.cli.args import (make_parser, SWITCH, fail, nonneg_int, positive_int,
                                   positive_or_auto, usage_error)
from nepa3d.cli.edge import RUN_FAILURE, out_file_problem, write_failure
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import ModelShapeArgs, add_model_shape_args
from nepa3d.utils.seeding import set_seed

PROG = "scratch_ckpt"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("nepa3d.train.scratch_ckpt", __doc__.split("\n")[0])
    p.add_argument("--out", required=True,
                   help="checkpoint file to write: a randomly initialised model at epoch 0")
    add_model_shape_args(p, heads_help="must divide --d_model")
    p.add_argument("--n_point", type=positive_int, default=256,
                   help="POINT tokens recorded as the pretraining size (fine-tuning caps to it)")
    p.add_argument("--n_ray", type=nonneg_int, default=256,
                   help="RAY tokens recorded as the pretraining size; 0 = none")
    p.add_argument("--qa_tokens", type=int, choices=SWITCH, default=0,
                   help="1: query/answer token types (9); 0: legacy types (5)")
    p.add_argument("--add_eos", type=int, choices=SWITCH, default=1,
                   help="1: sequences end with an EOS token")
    p.add_argument("--max_len", type=positive_or_auto, default=-1,
                   help="-1: the length the token settings need (a shorter value is raised to it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    return p


@dataclass(frozen=True, kw_only=True)
class ScratchCkptConfig(ModelShapeArgs, CliConfig):
    """Flags of ``python -m nepa3d.train.scratch_ckpt`` (one field per flag)."""

    out: str
    n_point: int
    n_ray: int
    qa_tokens: bool
    add_eos: bool
    max_len: int
    seed: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv=None) -> int:
    """0; a bad flag or a blocked --out: 2 and one line (nothing written); a refused write: 1."""
    a = ScratchCkptConfig.parse(argv)
    if a.d_model % a.heads:
        usage_error(f"--d_model {a.d_model} is not a multiple of --heads {a.heads}")
    blocked = out_file_problem("--out", a.out)
    if blocked:
        return fail(PROG, blocked)
    set_seed(a.seed)
    need = tt.required_len(a.n_point, a.n_ray, a.qa_tokens, a.add_eos)
    cfg = ModelConfig(**a.model_kwargs(), n_types=tt.n_types(a.qa_tokens),
                      max_len=max(a.max_len, need))
    args = dict(a.record(), backend="scratch", max_len=cfg.max_len)
    try:
        save_checkpoint({"model": QueryNepa(cfg).state_dict(), "aux_heads": None, "args": args,
                         "model_config": cfg.to_dict(), "epoch": 0, "step": 0}, a.out)
    except OSError as e:
        return fail(PROG, write_failure(a.out, e), code=RUN_FAILURE)
    print(f"[scratch] wrote {a.out} ({cfg})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
