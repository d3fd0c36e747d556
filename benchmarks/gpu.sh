#!/usr/bin/env bash
# One prepared GPU check, under 8 minutes on an H200: see benchmarks/gpu.py for what it measures.
#   bash benchmarks/gpu.sh                 # writes $OUT/gpu.json when $OUT is set, else bench-results/gpu.json
#   bash benchmarks/gpu.sh --tiny --device cpu   # the same code path on a CPU in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# 470 s: the script's own budget (450 s) plus the final write; never past 8 minutes.
exec timeout 470 "${PYTHON:-python}" benchmarks/gpu.py --json "${OUT:-bench-results}/gpu.json" "$@"
