#!/usr/bin/env bash
# Step time of the 500-block dense nets (1,000+ Linear layers, width 64, batch 128) against threads,
# flush-to-zero of subnormals and precision. Run alone: flock /tmp/reslab-cpu.lock bash benchmarks/calibration/mlp_threads.sh
set -e
for model in plainmlp500 resmlp500; do
  kw='{}'
  [ "$model" = resmlp500 ] && kw='{"branch_scale": "rezero"}'
  for prec in fp32 bf16; do
    for threads in 1 2; do
      for ftz in "" --flush-denormal; do
        python benchmarks/calibration/step_time.py "$model" --kw "$kw" --precision "$prec" --threads "$threads" $ftz --steps 20
      done
    done
  done
done
