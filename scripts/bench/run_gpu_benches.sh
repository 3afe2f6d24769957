#!/usr/bin/env bash
# GPU benchmarks in one call (about 4-5 minutes on an H100; each part is capped by `timeout`).
#
#   OUT=/path/to/dir bash scripts/bench/run_gpu_benches.sh            # all parts
#   OUT=/path/to/dir bash scripts/bench/run_gpu_benches.sh train      # one part: train | eval
#
# Writes into $OUT (default: /tmp/bench_out):
#   env.txt                   nvidia-smi, python and torch versions
#   bench_gpu_train.{json,log} training step, paper size (L8 d384 H6, T 1026, B 96): bf16 matmul
#                             peak, ours (bf16 autocast) vs naive fp32 nn.TransformerEncoder, MFU
#   bench_eval_paper.{json,log} CPAC 800 eval / 4000 head-train shapes and UCPR 1000 files at
#                             paper model size on a planted lab-profile cache (targets <= 60 s
#                             and <= 10 s on an H100)
# PYTHON defaults to python3 (the interpreter that holds the CUDA build of torch on the device
# machine); the scripts put the repository on sys.path, so no install is needed.
# Exit status: 0 when every part exited 0 (timings never fail a part), else 1.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench_out}
PY=${PYTHON:-python3}
PART=${1:-all}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0

{ nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PY" -c "import sys, torch; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; \
} >"$OUT/env.txt" 2>&1

run_part() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc"
  [ "$rc" -eq 0 ] || status=1
}

if [ "$PART" = all ] || [ "$PART" = train ]; then
  run_part bench_gpu_train 240 "$PY" scripts/bench/bench_gpu_train.py --device cuda \
    --json "$OUT/bench_gpu_train.json"
fi
if [ "$PART" = all ] || [ "$PART" = eval ]; then
  run_part bench_eval_paper 420 "$PY" scripts/bench/bench_eval.py --preset paper --device cuda \
    --json "$OUT/bench_eval_paper.json"
fi
exit $status
