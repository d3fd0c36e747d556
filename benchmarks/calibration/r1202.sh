#!/usr/bin/env bash
# resnet1202 and plain1202 on the embedded mnist5k with activation checkpointing: the train defaults
# (batch 64, lr 0.1, label smoothing 0.1, 1-epoch-capped-at-20% warm-up then cosine, bf16 autocast +
# channels_last on this CPU) for 2 epochs, one thread each, the two runs side by side (one per core).
# /usr/bin/time -v gives each process's wall time and peak memory (max RSS).
# Run alone: flock /tmp/reslab-cpu.lock bash benchmarks/calibration/r1202.sh
set -e
out=runs/calib
for model in resnet1202 plain1202; do
  /usr/bin/time -v reslab train --model "$model" --activation-checkpointing --epochs 2 --num-threads 1 \
    --progress lines --out "$out/$model-ckpt-e2" --overwrite > "$out/$model-ckpt-e2.log" 2>&1 &
done
wait
