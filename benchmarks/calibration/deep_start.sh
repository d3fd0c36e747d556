#!/usr/bin/env bash
# Why the deep nets fail without the full-width recipe: `reslab gradients` on the 110- and 1,202-layer twins
# at initialisation, then 20 SGD steps as the compare runs start them (lr 0.1, momentum 0.9, linear warm-up
# over one epoch = 62 steps of 64 images), without and with the recipe's clip of the gradient norm to 1.
# gradients.json has the gradient norm per block at the start and after the steps, and each step's loss
# and global gradient norm. Run: bash benchmarks/calibration/deep_start.sh
set -u
o=runs/calib23
for clip in none 1; do
  extra=(); [ "$clip" = none ] || extra=(--grad-clip "$clip")
  python -m reslab gradients plain110 resnet110 plain1202 resnet1202 --steps 20 --lr 0.1 --warmup-steps 62 \
    --batch-size 64 --out "$o/gradients-clip-$clip" "${extra[@]}" > "$o/gradients-clip-$clip.log" 2>&1
done
