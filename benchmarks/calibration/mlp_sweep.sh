#!/usr/bin/env bash
# The lecture's dense nets at 1, 4, 16, 64, 500 blocks (plainmlp500 = 1,002 Linear layers), plain and
# residual (ReZero), 10 epochs, fp32: the same sweep with flush-to-zero on / off and 1 / 2 threads.
# Run alone: flock /tmp/reslab-cpu.lock bash benchmarks/calibration/mlp_sweep.sh
set -e
common=(--family mlp --depths 1,4,16,64,500 --epochs 10 --precision fp32 --procs 1 --kw '{"branch_scale": "rezero"}')
python benchmarks/calibration/sweep.py "${common[@]}" --threads 1 --flush-denormal --out runs/benchmarks/calibration/mlp-sweep-t1-ftz
python benchmarks/calibration/sweep.py "${common[@]}" --threads 1 --out runs/benchmarks/calibration/mlp-sweep-t1
python benchmarks/calibration/sweep.py "${common[@]}" --threads 2 --flush-denormal --out runs/benchmarks/calibration/mlp-sweep-t2-ftz
