"""Where a run executes: device and precision (runtime), memory, torchrun/DDP (distributed, launch, worker,
syncbn)."""
