"""Benchmark (not a test) of one pretraining step at the paper model size, vs a naive baseline.

Paper size: 8 layers x d_model 384, 6 heads, MLP ratio 4, pre-LN; sequence length 1026 (QA
layout, n_point 256 + n_ray 256: 1 + 2 * (256 + 256) + 1); batch 96.

    # H100 (< 10 min; writes $OUT/bench_gpu_train.json)
    .venv/bin/python scripts/bench/bench_gpu_train.py --device cuda --json $OUT/bench_gpu_train.json
    # CPU smoke (seconds)
    .venv/bin/python scripts/bench/bench_gpu_train.py --tiny --device cpu
    # both GPU benchmarks in one call: OUT=<dir> bash scripts/bench/run_gpu_benches.sh

Measures
  (a) matmul peak: torch.matmul of two N x N bf16 matrices on CUDA (N = 8192; fp32 on CPU,
      labelled so), warmup then timed with CUDA events: 2 N^3 / t.
  (b) ours: ``QueryNepa`` + ``nepa3d.train.pretrain.nepa_terms`` (the NEPA loss exactly as
      pretraining computes it) under bf16 autocast on CUDA, ``loss.backward()``, AdamW
      (lr 3e-4, weight decay 0.05, as pretrain.py). Variant ``ours_dualmask`` adds the paper
      recipe's dual mask (near 0.4, far 0.1, window 32), which sends SDPA down the masked path.
  (c) naive: ``nn.TransformerEncoder`` (batch_first, norm_first, GELU, fp32, explicit -inf
      causal mask from ``nn.Transformer.generate_square_subsequent_mask``, no autocast) of the
      same size, same token embedding, a linear head and the same NEPA loss; default
      (non-TF32) fp32 matmuls. (nn.MultiheadAttention hands the attention to
      F.scaled_dot_product_attention; the encoder recognises the causal mask, so in fp32 this
      is the memory-efficient kernel, not a materialised T x T softmax.) If it runs out of memory at the batch asked for, the batch is
      halved until it fits (reported), and the speedup is taken on tokens/s.

Figures: step time (median over --steps timed steps after --warmup), tokens/s = B * T / step,
peak memory (torch.cuda.max_memory_allocated, reset before each model is built), and
    MFU = (6 * N_ne * B * T + 12 * L * T^2 * d * B) / step_time / measured_peak
with N_ne = parameters except the type and positional embeddings (token MLP, blocks, head),
and the attention term counting QK^T and AV over the full T x T (fwd + bwd = 3 x 4 T^2 d per
layer and sequence; a causal kernel does half of it, so this is the usual convention).
Targets stated in the output: ours >= 40 % of the measured matmul peak, ours >= 3x naive.
Timing never fails the script.

Synthetic batches are real tokenizer output: B spheres of random radius (point pool with
UDF answers, rays cast at the sphere), sampled and laid out by
``nepa3d.token.tokenizer.build_sequence`` (QA tokens + EOS), stacked to feat (B, T, 15)
float32 and type_id (B, T) int64.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.atomic import atomic_write_text  # noqa: E402
from nepa3d.data.analytic_sphere import sphere_rays  # noqa: E402
from nepa3d.models.query_nepa import ModelConfig, QueryNepa  # noqa: E402
from nepa3d.token import types as tt  # noqa: E402
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence  # noqa: E402
from nepa3d.train import losses  # noqa: E402
from nepa3d.train.pretrain import PretrainConfig, nepa_terms  # noqa: E402

TARGET_MFU = 0.40
TARGET_SPEEDUP = 3.0
FLOP_FORMULA = "6 * N_nonemb * B * T + 12 * L * T^2 * d * B  (per step: fwd + bwd)"

PAPER = dict(batch=96, seq_len=1026, layers=8, d_model=384, heads=6, steps=10, warmup=3,
             matmul_n=8192)
TINY = dict(batch=4, seq_len=130, layers=2, d_model=64, heads=2, steps=3, warmup=1,
            matmul_n=512)


# --------------------------------------------------------------------------------------------
# Synthetic token batches (through the real tokenizer)
# --------------------------------------------------------------------------------------------

def point_ray_counts(seq_len: int) -> tuple[int, int]:
    """(n_point, n_ray) whose QA + EOS sequence has exactly ``seq_len`` tokens."""
    if seq_len < 4 or seq_len % 2:
        raise SystemExit(f"error: --seq_len {seq_len}: the QA layout has T = 2 + 2 (n_point + n_ray), "
                         "an even number >= 4")
    n = (seq_len - 2) // 2
    n_point, n_ray = n - n // 2, n // 2
    assert tt.required_len(n_point, n_ray, True, True) == seq_len
    return n_point, n_ray


def sphere_pools(rng: np.random.RandomState, P: int = 2048, M: int = 1024) -> dict:
    r = rng.uniform(0.3, 0.8)
    pts = rng.uniform(-1, 1, (P, 3)).astype(np.float32)
    dist = np.abs(np.linalg.norm(pts, axis=1) - r).astype(np.float32)
    o, d, hit, t, n = sphere_rays(rng, M, r)
    f = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    return {"pt_xyz_pool": pts, "pt_dist_pool": dist, "ray_o_pool": f(o), "ray_d_pool": f(d),
            "ray_hit_pool": f(hit), "ray_t_pool": f(t), "ray_n_pool": f(n), "ray_available": True}


def make_batch(batch: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """feat (B, T, 15) float32, type_id (B, T) int64 from B tokenised synthetic spheres."""
    n_point, n_ray = point_ray_counts(seq_len)
    cfg = TokenizerConfig(n_point=n_point, n_ray=n_ray, qa_tokens=True, add_eos=True)
    rng = np.random.RandomState(seed)
    feats, types = [], []
    for _ in range(batch):
        f, t = build_sequence(sphere_pools(rng, P=max(2 * n_point, 64), M=max(2 * n_ray, 64)),
                              cfg, rng)
        feats.append(f)
        types.append(t)
    return torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(types))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

class NaiveNepa(QueryNepa):
    """The stock-PyTorch way: QueryNepa's token embedding and prediction head around an
    ``nn.TransformerEncoder`` (pre-LN, fp32) with an explicit additive causal mask."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d = cfg.d_model
        layer = nn.TransformerEncoderLayer(d, cfg.nhead, dim_feedforward=int(d * cfg.mlp_ratio),
                                           dropout=cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.backbone = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(cfg.max_len),
                             persistent=False)

    def forward(self, feat, type_id, blocked=None):
        T = feat.shape[1]
        z = self.embed_tokens(feat, type_id)                                     # (B, T, C)
        h = self.backbone(z, mask=self.mask[:T, :T])
        return z, self.pred_head(h), h


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all, non-embedding): non-embedding excludes type_emb and pos_emb."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.type_emb.weight.numel() + model.pos_emb.numel()
    return total, total - emb


def step_flops(n_nonemb: int, layers: int, d: int, T: int, B: int) -> float:
    return 6.0 * n_nonemb * B * T + 12.0 * layers * T * T * d * B


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, steps: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn`` (each timed separately: CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(steps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def matmul_peak(device: torch.device, n: int, iters: int = 20, warmup: int = 3) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        iters, warmup = max(3, iters // 4), 1
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=device, dtype=dtype)
    ts = time_calls(lambda: torch.matmul(a, b, out=c), device, iters, warmup)
    t = statistics.median(ts)
    label = f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} matmul {n}^3 on {device.type}"
    return {"label": label, "n": n, "dtype": str(dtype).replace("torch.", ""),
            "seconds_median": t, "tflops": 2.0 * n ** 3 / t / 1e12}


def pretrain_args(dual_mask: bool) -> PretrainConfig:
    """pretrain.py's own argument defaults (every auxiliary weight 0), optionally with the
    paper recipe's dual mask."""
    argv = ["--objective", "nepa", "--qa_tokens", "1"]
    if dual_mask:
        argv += ["--dual_mask_near", "0.4", "--dual_mask_far", "0.1", "--dual_mask_window", "32"]
    return PretrainConfig.parse(argv)


def run_variant(name: str, cfg: ModelConfig, feat_cpu, types_cpu, device: torch.device,
                steps: int, warmup: int, peak_tflops: float) -> dict:
    """Build the model fresh, time forward + loss + backward + AdamW step."""
    is_cuda = device.type == "cuda"
    B, T = types_cpu.shape
    if is_cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    naive = name == "naive"
    model = (NaiveNepa(cfg) if naive else QueryNepa(cfg)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    feat, types = feat_cpu.to(device), types_cpu.to(device)
    n_all, n_ne = count_params(model)
    args = pretrain_args(dual_mask=name == "ours_dualmask")
    state = {"step": 0, "loss": float("nan")}

    def step():
        if naive:
            z, z_hat, _ = model(feat, types)
            loss = losses.nepa_loss(z, z_hat, types)
        else:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=is_cuda):
                loss, _ = nepa_terms(model, feat, types, args, state["step"], 1.0, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        state["loss"] = loss.detach()

    ts = time_calls(step, device, steps, warmup)
    t = statistics.median(ts)
    flops = step_flops(n_ne, cfg.num_layers, cfg.d_model, T, B)
    res = {"variant": name, "batch": B, "seq_len": T, "params": n_all, "params_nonemb": n_ne,
           "precision": "fp32" if naive or not is_cuda else "bf16 autocast",
           "step_s_median": t, "step_s_min": min(ts), "step_s_mean": statistics.fmean(ts),
           "step_s_all": ts,
           "tokens_per_s": B * T / t, "flops_per_step": flops, "achieved_tflops": flops / t / 1e12,
           "mfu": flops / t / 1e12 / peak_tflops, "final_loss": float(state["loss"]),
           "peak_mem_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30) if is_cuda else None}
    return res  # model, optimizer and batch are freed with this frame


def run_naive(cfg, feat, types, device, steps, warmup, peak) -> dict:
    """Naive baseline; on CUDA OOM, halve the batch until it fits."""
    B = feat.shape[0]
    while True:
        oom = False
        try:
            r = run_variant("naive", cfg, feat[:B], types[:B], device, steps, warmup, peak)
            r["batch_requested"] = feat.shape[0]
            return r
        except torch.cuda.OutOfMemoryError:
            oom = True
        if oom:  # outside the except block: the traceback (and its tensors) is gone
            gc.collect()
            torch.cuda.empty_cache()
            print(f"[naive] out of memory at batch {B}", flush=True)
            if B == 1:
                return {"variant": "naive", "oom": True, "batch_requested": feat.shape[0]}
            B = max(1, B // 2)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="small sizes for a CPU smoke run")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq_len", type=int, help="even; QA layout: 2 + 2 (n_point + n_ray)")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--d_model", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--mlp_ratio", type=float, default=4.0)
    ap.add_argument("--steps", type=int, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, help="untimed steps per variant")
    ap.add_argument("--matmul_n", type=int, help="side of the square matmul of the peak")
    ap.add_argument("--variants", default="ours,ours_dualmask,naive",
                    help="comma list of ours, ours_dualmask, naive")
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--json", default="", help="write the figures here")
    args = ap.parse_args(argv)
    for k, v in (TINY if args.tiny else PAPER).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = set(variants) - {"ours", "ours_dualmask", "naive"}
    if bad:
        raise SystemExit(f"error: unknown --variants {sorted(bad)}")

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(),
           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"[env] {env}", flush=True)

    peak = matmul_peak(device, args.matmul_n)
    print(f"(a) peak: {peak['label']}: {peak['tflops']:.1f} TFLOP/s "
          f"({peak['seconds_median'] * 1e3:.2f} ms)", flush=True)

    cfg = ModelConfig(d_model=args.d_model, nhead=args.heads, num_layers=args.layers,
                      mlp_ratio=args.mlp_ratio, max_len=args.seq_len, n_types=tt.N_TYPES_QA)
    feat, types = make_batch(args.batch, args.seq_len)
    n_point, n_ray = point_ray_counts(args.seq_len)
    print(f"[model] L{args.layers} d{args.d_model} H{args.heads} mlp x{args.mlp_ratio} | "
          f"B {args.batch} x T {args.seq_len} (n_point {n_point} + n_ray {n_ray}, QA + EOS) | "
          f"{args.warmup} warmup + {args.steps} timed steps", flush=True)
    print(f"[flops] per step = {FLOP_FORMULA}", flush=True)

    rows = {}
    for v in variants:
        r = (run_naive(cfg, feat, types, device, args.steps, args.warmup, peak["tflops"])
             if v == "naive" else
             run_variant(v, cfg, feat, types, device, args.steps, args.warmup, peak["tflops"]))
        rows[v] = r
        if r.get("oom"):
            print(f"({'c' if v == 'naive' else 'b'}) {v}: out of memory even at batch 1")
            continue
        mem = f"{r['peak_mem_gib']:.2f} GiB" if r["peak_mem_gib"] is not None else "n/a (CPU)"
        tag = "c" if v == "naive" else "b"
        extra = f" (batch {r['batch']} of {r['batch_requested']})" if r.get("batch_requested", r["batch"]) != r["batch"] else ""
        print(f"({tag}) {v:14s} {r['precision']:13s} step {r['step_s_median'] * 1e3:9.2f} ms  "
              f"{r['tokens_per_s']:12,.0f} tok/s  {r['achieved_tflops']:7.2f} TFLOP/s  "
              f"MFU {100 * r['mfu']:5.1f}% of {peak['label']}  peak mem {mem}  "
              f"loss {r['final_loss']:.4f}{extra}", flush=True)

    summary = {"config": {k: getattr(args, k) for k in ("batch", "seq_len", "layers", "d_model",
                                                          "heads", "mlp_ratio", "steps", "warmup",
                                                          "matmul_n", "tiny")},
               "env": env, "flop_formula": FLOP_FORMULA, "peak": peak, "variants": rows,
               "targets": {"mfu": TARGET_MFU, "speedup_vs_naive": TARGET_SPEEDUP}}
    ours, naive = rows.get("ours"), rows.get("naive")
    if ours and not ours.get("oom"):
        met = ours["mfu"] >= TARGET_MFU
        verdict = ("MET" if met else "NOT MET") if device.type == "cuda" else \
            "n/a on CPU (fp32 peak and no bf16 autocast: not the target setting)"
        print(f"[target] ours MFU {100 * ours['mfu']:.1f}% vs target >= {100 * TARGET_MFU:.0f}% "
              f"of the measured bf16 matmul peak: {verdict}")
        summary["mfu_target_met"] = met if device.type == "cuda" else None
    if ours and naive and not ours.get("oom") and not naive.get("oom"):
        for v in ("ours", "ours_dualmask"):
            if v in rows and not rows[v].get("oom"):
                sp = rows[v]["tokens_per_s"] / naive["tokens_per_s"]
                summary[f"speedup_{v}_vs_naive"] = sp
                verdict = ("MET" if sp >= TARGET_SPEEDUP else "NOT MET") if device.type == "cuda" \
                    else "n/a on CPU (no bf16 autocast: not the target setting)"
                print(f"[target] speedup {v} / naive (tokens/s) = {sp:.2f}x vs target >= "
                      f"{TARGET_SPEEDUP:.0f}x: {verdict}")
        if ours.get("peak_mem_gib") and naive.get("peak_mem_gib"):
            print(f"[memory] ours {ours['peak_mem_gib']:.2f} GiB vs naive {naive['peak_mem_gib']:.2f} GiB "
                  f"(naive batch {naive['batch']})")
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2))
        print(f"[json] {args.json}")
    return summary


if __name__ == "__main__":
    main()
