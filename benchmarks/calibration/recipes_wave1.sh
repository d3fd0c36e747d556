#!/usr/bin/env bash
# Candidate sweep recipes for full-width CIFAR nets on mnist5k (20/56/110 layers, both twins, seed 0,
# 5 epochs = 155 steps of batch 128, eval every 16 steps), two one-thread processes. Each candidate changes
# the compare preset's recipe (batch 128, lr 0.1 Nesterov, wd 5e-4, no label smoothing, 1-epoch linear
# warm-up capped at 20%, cosine) in one way. Logs in runs/calib23/<name>.log.
# Run: bash benchmarks/calibration/recipes_wave1.sh
set -u
S="python ${SWEEP:-benchmarks/calibration/sweep.py} --epochs ${EPOCHS:-5} --eval-every 16 --procs 2"
o=runs/calib23
run() { name=$1; shift; $S --out "$o/$name" "$@" > "$o/$name.log" 2>&1; }
run B-adapt-e5 --depths 20,56,110 --train '{"warmup": "adaptive", "warmup_lr": 0.01, "warmup_epochs": 2}'
run D-lr005-e5 --depths 20,56,110 --lr 0.05
run E-clip1-e5 --depths 20,56,110 --train '{"grad_clip": 1.0}'
for d in 20 56 110; do  # linear warm-up of 31 * sqrt(depth / 20) steps: 31, 52, 73
  w=$(python -c "print(round(31 * ($d / 20) ** 0.5))")
  run C-sqrtwarm-e5-d$d --depths $d --train "{\"warmup_iters\": $w}"
done
run Z-zeroinit-e5 --depths 20,56,110 --kw '{"zero_init_residual": true}'
run D-lr002-e5 --depths 20,56,110 --lr 0.02
