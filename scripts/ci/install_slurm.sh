#!/usr/bin/env bash
# Install what tests/test_cluster_slurm.py needs (Debian's slurm-wlm and munge), called by `make test`.
# Idempotent and quick when installed (a `command -v` per binary). It never fails `make test`:
# where it cannot install (not root, no apt-get, the install fails) it says so in one line and the
# test skips with its own one-line reason. BENCH_SLURM_INSTALL=0 turns it off (a developer machine).
set -uo pipefail

NEEDED=(munged slurmctld slurmd sbatch squeue scancel sinfo)
missing=()
for bin in "${NEEDED[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] && exit 0

say() { echo "install_slurm: $*; tests/test_cluster_slurm.py will skip" >&2; }
if [ "${BENCH_SLURM_INSTALL:-1}" = "0" ]; then say "BENCH_SLURM_INSTALL=0"; exit 0; fi
if [ "$(id -u)" != "0" ]; then say "not root (missing: ${missing[*]})"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then say "no apt-get (missing: ${missing[*]})"; exit 0; fi

start=$(date +%s)
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/tmp/install_slurm.log 2>&1; }
if ! install; then  # a stale package index: refresh once and retry
  DEBIAN_FRONTEND=noninteractive apt-get update -q >>/tmp/install_slurm.log 2>&1 && install \
    || { say "apt-get install slurm-wlm munge failed (see /tmp/install_slurm.log)"; exit 0; }
fi
echo "install_slurm: installed slurm-wlm and munge in $(( $(date +%s) - start )) s" >&2
