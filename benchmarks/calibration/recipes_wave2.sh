#!/usr/bin/env bash
# Wave 2 of the full-width recipe calibration (see recipes_wave1.sh): gradient clipping with a lower peak lr
# or a looser norm, then seeds 1 and 2 of the two recipes that trained every residual net in wave 1 (lr 0.05;
# clipping at norm 1). Logs in runs/calib23/<name>.log. Run: bash benchmarks/calibration/recipes_wave2.sh
set -u
S="python ${SWEEP:-benchmarks/calibration/sweep.py} --epochs ${EPOCHS:-5} --eval-every 16 --procs 2"
o=runs/calib23
run() { name=$1; shift; $S --out "$o/$name" "$@" > "$o/$name.log" 2>&1; }
run F-lr005clip1-e5 --depths 20,56,110 --lr 0.05 --train '{"grad_clip": 1.0}'
run G-clip5-e5 --depths 20,56,110 --train '{"grad_clip": 5.0}'
run E-clip1-e5-s12 --depths 20,56,110 --first-seed 1 --seeds 2 --train '{"grad_clip": 1.0}'
run D-lr005-e5-s12 --depths 20,56,110 --first-seed 1 --seeds 2 --lr 0.05
# the recipe at 10 epochs (the full preset's length, which resnet1202 needs): both twins at 20/56/110
run E-clip1-e10 --depths 20,56,110 --epochs 10 --train '{"grad_clip": 1.0}'
