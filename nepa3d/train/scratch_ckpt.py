"""Write a random-initialised checkpoint: the 'scratch' baseline of the few-shot tables.

    python -m nepa3d.train.scratch_ckpt --out runs/scratch/last.pt --d_model 384 --layers 8 \
        --heads 6 --n_point 256 --n_ray 256 --qa_tokens 0 --seed 0
"""

from __future__ import annotations

import argparse
import sys

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.token import types as tt
from nepa3d.utils.ckpt import save_checkpoint
from nepa3d.utils.cli_args import (make_parser, SWITCH, fail, nonneg_float, nonneg_int,
                                   positive_float, positive_int, positive_or_auto, usage_error)
from nepa3d.utils.cli_edge import RUN_FAILURE, out_file_problem, write_failure
from nepa3d.utils.seeding import set_seed

PROG = "scratch_ckpt"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("nepa3d.train.scratch_ckpt", __doc__.split("\n")[0])
    p.add_argument("--out", required=True,
                   help="checkpoint file to write: a randomly initialised model at epoch 0")
    p.add_argument("--d_model", type=positive_int, default=384,
                   help="transformer width (embedding size)")
    p.add_argument("--layers", type=positive_int, default=8, help="transformer encoder layers")
    p.add_argument("--heads", type=positive_int, default=6, help="must divide --d_model")
    p.add_argument("--mlp_ratio", type=positive_float, default=4.0,
                   help="feed-forward width as a multiple of --d_model")
    p.add_argument("--type_emb_std", type=nonneg_float, default=0.02,
                   help="type embedding init std (1.0 = original)")
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


def main(argv=None) -> int:
    """0; a bad flag or a blocked --out: 2 and one line (nothing written); a refused write: 1."""
    a = build_parser().parse_args(argv)
    if a.d_model % a.heads:
        usage_error(f"--d_model {a.d_model} is not a multiple of --heads {a.heads}")
    blocked = out_file_problem("--out", a.out)
    if blocked:
        return fail(PROG, blocked)
    set_seed(a.seed)
    need = tt.required_len(a.n_point, a.n_ray, bool(a.qa_tokens), bool(a.add_eos))
    cfg = ModelConfig(d_model=a.d_model, n_types=tt.n_types(bool(a.qa_tokens)), nhead=a.heads,
                      num_layers=a.layers, mlp_ratio=a.mlp_ratio, max_len=max(a.max_len, need),
                      type_emb_std=a.type_emb_std)
    args = dict(vars(a), backend="scratch", max_len=cfg.max_len)
    try:
        save_checkpoint({"model": QueryNepa(cfg).state_dict(), "aux_heads": None, "args": args,
                         "model_config": cfg.to_dict(), "epoch": 0, "step": 0}, a.out)
    except OSError as e:
        return fail(PROG, write_failure(a.out, e), code=RUN_FAILURE)
    print(f"[scratch] wrote {a.out} ({cfg})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
