#!/usr/bin/env bash
# Each fix for the 500-block residual MLP on mnist5k, one run each (seed 0): the default recipe with the
# compare preset's overrides (batch 128, lr 0.1, no label smoothing), 10 epochs, fp32, 1 thread,
# flush-to-zero. Run alone: flock /tmp/reslab-cpu.lock bash benchmarks/calibration/mlp_options.sh
set -e
common=(--family mlp --depths 500 --kinds residual --epochs 10 --precision fp32 --procs 1 --threads 1
        --flush-denormal)
run() { python benchmarks/calibration/sweep.py "${common[@]}" --kw "$2" --out "runs/benchmarks/calibration/mlp-opt-$1" | grep -v "^(" ; }
run none '{}'
run batchnorm '{"norm": "batch"}'
run zeroinit '{"zero_init_residual": true}'
run rezero '{"branch_scale": "rezero"}'
run sqrtdepth '{"branch_scale": "sqrt_depth"}'
run fixup '{"branch_scale": "fixup"}'
