"""The small-data rule: the batch size and the number of epochs of a run on a small training split.

The defaults (batch 64, 8 epochs) are sized for thousands of images. On a few dozen they train nothing: 72
images in batches of 64 are one step per epoch, 8 steps in all, and the net ends at chance. So, for a new
run, and only for what the user left at its default:

1. **batch**: while an epoch would be fewer than :data:`MIN_STEPS_PER_EPOCH` steps, the default batch is
   halved, down to :data:`MIN_AUTO_BATCH` (BatchNorm needs a few images per batch). 72 images: 64 -> 8, 9
   steps per epoch.
2. **epochs**: when the run would be fewer than :data:`MIN_STEPS` steps, it gets as many epochs as reach
   that many (72 images in batches of 8: 23 epochs, 207 steps).

A batch or length the user set is kept, and one line says what to change. Each epoch trains on whole
batches only (the shuffled order's last ``N mod B`` images wait for the next epoch, a different few each
time): when that is more than :data:`DROP_NOTE_ABOVE` of the split, one line says so.
"""

from __future__ import annotations

import math

from reslab.engine.config import DEFAULT_BATCH, DEFAULT_EPOCHS

MIN_STEPS_PER_EPOCH = 20  # fewer and the default batch is halved
MIN_STEPS = 200  # fewer and the default length grows: the 72-image folder learns in ~200 steps
MIN_AUTO_BATCH = 8  # the smallest batch the rule picks
DROP_NOTE_ABOVE = 0.01  # share of the split left out of each epoch worth a line


def auto_batch(n_train: int, batch_size: int, *, auto: bool, world_size: int = 1) -> int:
    """The batch for ``n_train`` training images: ``batch_size`` unless ``auto`` (left at its default) and
    an epoch would be short; then halved to :data:`MIN_AUTO_BATCH` at least, a multiple of ``world_size``."""
    if not auto:
        return batch_size
    batch = batch_size
    while n_train // batch < MIN_STEPS_PER_EPOCH and batch // 2 >= MIN_AUTO_BATCH:
        batch //= 2
    batch = min(batch, max(n_train, 1))  # never more than the split: at least one step per epoch
    return max(world_size, math.ceil(batch / world_size) * world_size)


def batch_notes(n_train: int, batch: int, *, default: int, auto: bool) -> list[str]:
    """What the batch rule did, or what to change when the batch was set; and the images each epoch leaves
    out, when that matters. Lines for the start of a new run."""
    steps = n_train // batch
    notes = []
    if auto and batch != default:
        notes.append(
            f"{n_train:,} training images: batch {batch} instead of {default}, {steps} steps per epoch "
            "(the small-data rule; --batch-size sets it)"
        )
    elif steps < MIN_STEPS_PER_EPOCH:
        better = auto_batch(n_train, default if batch > default else batch, auto=True)
        hint = f" (--batch-size {better}: {n_train // better})" if better < batch else ""
        notes.append(
            f"{n_train:,} training images in batches of {batch} are {steps} step(s) per epoch; a smaller "
            f"--batch-size gives more{hint}"
        )
    left = n_train - steps * batch
    if left > DROP_NOTE_ABOVE * n_train:
        notes.append(
            f"each epoch trains on {steps * batch:,} of the {n_train:,} training images in whole batches of "
            f"{batch}: the last {left} of its shuffled order ({left / n_train:.0%}) wait for the next epoch; "
            "a --batch-size that divides the split covers every image"
        )
    return notes


def auto_epochs(steps_per_epoch: int, *, epochs: int | None, iterations: int | None) -> int | None:
    """The epochs of a run whose length was left at its default: enough for :data:`MIN_STEPS` steps, at
    least :data:`DEFAULT_EPOCHS`; None (the default, unchanged) when that is already enough, or when the
    user gave a length."""
    if epochs is not None or iterations is not None:
        return epochs
    needed = math.ceil(MIN_STEPS / steps_per_epoch)
    return needed if needed > DEFAULT_EPOCHS else None


def length_notes(
    steps_per_epoch: int, total: int, *, epochs: int | None, adapted: bool, from_scratch: bool = True
) -> list[str]:
    """One line for a length the rule chose, or for a short run in epochs on a small split trained from
    scratch (a length in iterations is taken as meant; a fine-tune learns in fewer steps)."""
    if adapted:
        return [
            f"{epochs} epochs instead of {DEFAULT_EPOCHS}: {total} steps of {steps_per_epoch} per epoch (the "
            "small-data rule; --epochs or --iterations sets the length)"
        ]
    if from_scratch and epochs is not None and steps_per_epoch < MIN_STEPS_PER_EPOCH and total < MIN_STEPS:
        more = math.ceil(MIN_STEPS / steps_per_epoch)
        return [
            f"{epochs} epoch(s) of {steps_per_epoch} steps are {total} steps; a small split needs about "
            f"{MIN_STEPS} to learn: --epochs {more}"
        ]
    return []


__all__ = ["DEFAULT_BATCH", "auto_batch", "auto_epochs", "batch_notes", "length_notes"]
