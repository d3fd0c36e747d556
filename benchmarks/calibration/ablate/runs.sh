#!/bin/bash
# The calibration calls of `reslab ablate` (ABLATE.md), each timed whole under the exclusive CPU lock.
# Usage: bash benchmarks/calibration/ablate/runs.sh [NAME ...]   (no NAME: every call, in the order run)
# Logs go to benchmarks/calibration/ablate/logs/NAME.txt, run directories to /tmp/ablate-calib/NAME.
cd "$(dirname "$0")/../../.." || exit 1
HERE=benchmarks/calibration/ablate
V=identity,scaling,dropout
ALL=identity,scaling:scale_branch=false,exclusive_gate,shortcut_gate,shortcut_gate:gate_bias=0,conv1x1,bn_after_add,relu_before_add,relu_preact,full_preact
declare -A CALLS=(
  [d20e3s3]="--depth 20 --epochs 3 --seeds 3 --variants $V"
  [d20e3s1_all]="--depth 20 --epochs 3 --seeds 1 --variants $ALL"
  [d20e6s1]="--depth 20 --epochs 6 --seeds 1 --variants $V"
  [d32e4s1]="--depth 32 --epochs 4 --seeds 1 --variants $V"
  [d56e3s1]="--depth 56 --epochs 3 --seeds 1 --variants $V"
  [d56e5s1]="--depth 56 --epochs 5 --seeds 1 --variants $V"
  [d32e3s3]="--depth 32 --epochs 3 --seeds 3 --variants $V"
  [d44e3s3]="--depth 44 --epochs 3 --seeds 3 --variants $V"
  [d110w05e3s1]="--depth 110 --widen 0.5 --epochs 3 --seeds 1 --variants $V"
  [d20e4s3]="--depth 20 --epochs 4 --seeds 3 --variants $V"
  [d20e6s3]="--depth 20 --epochs 6 --seeds 3 --variants $V"
)
ORDER="d20e3s3 d20e3s1_all d20e6s1 d32e4s1 d56e3s1 d56e5s1 d32e3s3 d44e3s3 d110w05e3s1 d20e4s3 d20e6s3"
for name in ${*:-$ORDER}; do
  args=${CALLS[$name]:?unknown call $name}
  cmd="reslab ablate $args --out /tmp/ablate-calib/$name --progress lines"
  flock /tmp/reslab-cpu.lock bash -c "echo \"# start \$(date -u +%FT%TZ): $cmd\"; /usr/bin/time -f 'wall %e s' $cmd" \
    > "$HERE/logs/$name.txt" 2>&1
done
