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
from nepa3d.utils.seeding import set_seed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--d_model", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--mlp_ratio", type=float, default=4.0)
    p.add_argument("--type_emb_std", type=float, default=0.02)
    p.add_argument("--n_point", type=int, default=256)
    p.add_argument("--n_ray", type=int, default=256)
    p.add_argument("--qa_tokens", type=int, default=0)
    p.add_argument("--add_eos", type=int, default=1)
    p.add_argument("--max_len", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    set_seed(a.seed)
    need = tt.required_len(a.n_point, a.n_ray, bool(a.qa_tokens), bool(a.add_eos))
    cfg = ModelConfig(d_model=a.d_model, n_types=tt.n_types(bool(a.qa_tokens)), nhead=a.heads,
                      num_layers=a.layers, mlp_ratio=a.mlp_ratio, max_len=max(a.max_len, need),
                      type_emb_std=a.type_emb_std)
    args = dict(vars(a), backend="scratch", max_len=cfg.max_len)
    save_checkpoint({"model": QueryNepa(cfg).state_dict(), "aux_heads": None, "args": args,
                     "model_config": cfg.to_dict(), "epoch": 0, "step": 0}, a.out)
    print(f"[scratch] wrote {a.out} ({cfg})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
