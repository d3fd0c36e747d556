#!/usr/bin/env bash
# One prepared GPU check, at most 9 minutes on an H200: see benchmarks/gpu.py for what it measures.
#   bash benchmarks/gpu.sh                 # writes $OUT/gpu.json when $OUT is set, else bench-results/gpu.json
#   bash benchmarks/gpu.sh --tiny --device cpu   # the same code path on a CPU in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# 535 s: the script's own budget (510 s, sections that would not fit are skipped) plus start-up and the
# final write; its sweeps run in their own process groups, killed at their own timeouts. Under 9 minutes.
exec timeout --kill-after=5 535 "${PYTHON:-python}" benchmarks/gpu.py --json "${OUT:-bench-results}/gpu.json" "$@"
