"""``train(cfg) -> RunResult``: one readable flow from config to run directory.

Steps: validate -> open the run directory -> seed -> data on the device -> model + SGD -> (resume) -> step
loop -> final evaluation -> summary. The step loop does no per-sample Python work and no host syncs: loss and
correct counts accumulate on the device and are read at evaluation points (every ``eval_every`` steps),
where metrics are logged and a checkpoint is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reslab.data.loader import DeviceLoader, Normalization
from reslab.errors import CheckpointError, ConfigError, TrainingError
from reslab.train import distributed, rundir
from reslab.train.checkpoint import load_latest_checkpoint, save_checkpoint, weights_bytes
from reslab.train.config import TrainConfig
from reslab.train.evaluate import EvalResult, evaluate
from reslab.train.guards import FiniteWatch, InterruptGuard, grads_finite
from reslab.train.memory import (
    available_memory,
    check_fits,
    estimate_training_memory,
    is_out_of_memory,
    oom_error,
    return_freed_memory_promptly,
)
from reslab.train.progress import Progress
from reslab.train.runs import read_run_config, run_metadata
from reslab.train.runtime import (
    Runtime,
    autocast,
    make_sgd,
    resolve_runtime,
    rng_state,
    seed_everything,
    set_rng_state,
)
from reslab.train.schedule import lr_at, make_plan

Callback = Callable[[dict[str, Any]], None]
# Fields that fix the network or the batch order: a resumed run must keep them.
_FROZEN_ON_RESUME = ("model", "dataset", "model_kwargs", "batch_size", "seed", "val_split", "split_seed")


@dataclass
class RunResult:
    """What :func:`train` returns; the same figures are in ``<run_dir>/summary.json``."""

    run_dir: Path
    model: str
    dataset: str
    final_train_loss: float  # eval mode, whole train split, no augmentation (the paper's training error)
    final_train_error: float
    final_test_loss: float
    final_test_error: float
    final_test_top5_error: float
    params: int
    seconds: float  # wall time of all sessions of this run
    iterations: int
    epochs: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records


def _open_run_dir(cfg: TrainConfig, *, is_main: bool = True) -> tuple[Path, dict[str, Any] | None]:
    """(run directory, saved config.json when resuming); refuses what the rules forbid, before any work.

    Only the main process creates or writes; other ranks (DDP) just read a resumed run's config.
    """
    if cfg.resume is None:
        out = Path(cfg.out).expanduser() if cfg.out else rundir.default_run_dir(cfg.model, cfg.dataset)
        return (rundir.prepare_new_run_dir(out, overwrite=cfg.overwrite) if is_main else out), None
    run = Path(cfg.resume).expanduser()
    if cfg.out and Path(cfg.out).expanduser().resolve() != run.resolve():
        raise ConfigError(
            f"--out {cfg.out} differs from --resume {cfg.resume}; drop --out to resume in place"
        )
    if not (run / rundir.CONFIG).is_file():
        raise ConfigError(f"--resume {run}: no {rundir.CONFIG} there; is it a reslab run directory?")
    try:
        saved = read_run_config(run / rundir.CONFIG)
    except CheckpointError as err:
        raise ConfigError(f"--resume {run}: {err}") from None
    old = TrainConfig.from_dict(saved["config"])
    for name in _FROZEN_ON_RESUME:
        if getattr(old, name) != getattr(cfg, name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"--resume {run}: the run used {name}={getattr(old, name)!r}, not {getattr(cfg, name)!r}; "
                f"resume with the same {flag} or start a new run"
            )
    if is_main:
        rundir.check_writable(run)
    return run, saved


@dataclass
class _Interval:
    """Training figures since the last evaluation point, kept on the device."""

    loss_sum: torch.Tensor  # () float32
    correct: torch.Tensor  # () int64
    images: int = 0
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def zeros(cls, device: torch.device) -> _Interval:
        return cls(torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device))


def _nan_error(iteration: int, run_dir: Path) -> TrainingError:
    return TrainingError(
        f"loss or gradients became NaN/inf at iteration {iteration}; try a lower --lr or --warmup-epochs "
        "(or --grad-clip); "
        f"the last good checkpoint in {run_dir / rundir.CKPT_DIR} is kept"
    )


def train(cfg: TrainConfig, *, callback: Callback | None = None, runtime: Runtime | None = None) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset``; write the run directory; return the final figures.

    ``callback(metrics)`` is called at each evaluation point with the dict appended to ``metrics.jsonl``
    (plus ``total_iterations``). Raises ConfigError / DataError / CheckpointError on bad input (exit 2),
    TrainingError on NaN or out-of-memory (exit 3), and KeyboardInterrupt after saving a checkpoint on Ctrl-C.
    """
    from reslab.data import load_dataset
    from reslab.models import build_model, model_info

    # 1) check everything that can be checked before any work
    cfg.validate()
    if runtime is None and distributed.launched_by_torchrun():  # a torchrun worker: join the group first
        with distributed.session(cfg) as rt:
            return train(cfg, callback=callback, runtime=rt)
    rt = runtime or resolve_runtime(cfg)
    depth = model_info(cfg.model).depth  # ConfigError for an unknown model, before data loading
    if rt.world_size > 1:  # rank 0 picks (and creates) the run directory, the others are told
        run_dir, saved = distributed.agree_run_dir(cfg, rt, _open_run_dir)
    else:
        run_dir, saved = _open_run_dir(cfg, is_main=rt.is_main)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)

    # 2) data: the whole split on the device, statistics from the train split only
    ds = load_dataset(
        cfg.dataset, cfg.data_dir, download=cfg.download, seed=cfg.split_seed, val_split=cfg.val_split
    )
    norm = Normalization.from_dataset(ds, cfg.normalize)
    augment = ds.augment if cfg.augment == "auto" else cfg.augment
    if ds.train_x.shape[0] < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {ds.train_x.shape[0]} training images of "
            f"{cfg.dataset}; "
            "use a smaller --batch-size"
        )
    common = dict(batch_size=cfg.batch_size, norm=norm, device=rt.device, channels_last=rt.channels_last)
    train_loader = DeviceLoader(
        ds.train_x,
        ds.train_y,
        shuffle=True,
        augment=augment,
        seed=cfg.seed,
        drop_last=True,
        rank=rt.rank,
        world_size=rt.world_size,
        **common,  # type: ignore[arg-type]
    )
    # Evaluation loaders share the device copies (``.to`` is then a no-op); under DDP each rank evaluates
    # a disjoint shard and ``evaluate(distributed=True)`` sums over ranks.
    shard = dict(rank=rt.rank, world_size=rt.world_size)
    eval_train = DeviceLoader(train_loader.images, train_loader.labels, **common, **shard)  # type: ignore[arg-type]
    eval_test = DeviceLoader(ds.test_x, ds.test_y, **common, **shard)  # type: ignore[arg-type]
    dist_eval = rt.world_size > 1

    # 3) model and optimiser (SGD with momentum, as the paper)
    def build() -> torch.nn.Module:
        kwargs = {"activation_checkpointing": cfg.activation_checkpointing, **cfg.model_kwargs}
        return build_model(cfg.model, num_classes=ds.num_classes, input_shape=ds.image_shape, **kwargs)

    if cfg.activation_checkpointing and rt.device.type == "cpu":
        return_freed_memory_promptly()
    model = build()
    # Refuse a batch that cannot fit before the first step (a CPU run past RAM is SIGKILLed, silently).
    mem = estimate_training_memory(
        build, ds.image_shape, max(cfg.batch_size // rt.world_size, 1), amp_dtype=rt.amp_dtype
    )
    check_fits(
        mem,
        available_memory(rt.device),
        batch_size=cfg.batch_size,
        device=rt.device,
        checkpointing=cfg.activation_checkpointing,
        warn=None if rt.is_main else (lambda _: None),
    )
    if rt.is_main:  # three checkpoints (weights + momentum) exist for a moment, plus the run's weights
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        rundir.check_free_space(run_dir, 8 * param_bytes + 2**20)
    model = model.to(
        rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format
    )
    if rt.world_size > 1:  # SyncBatchNorm swap (--sync-bn) before the optimizer sees the parameters
        model = distributed.prepare_model(model, rt, sync_bn=cfg.sync_bn)
    params = sum(p.numel() for p in model.parameters())
    opt = make_sgd(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    steps_per_epoch = len(train_loader)
    total = cfg.iterations if cfg.iterations is not None else cfg.epochs * steps_per_epoch  # type: ignore[operator]
    eval_every = cfg.eval_every or steps_per_epoch
    plan = make_plan(cfg, total=total, steps_per_epoch=steps_per_epoch, depth=depth)

    # 4) resume: weights, optimizer, RNG, position, interval figures
    it, seconds_before, interval = 0, 0.0, _Interval.zeros(rt.device)
    history: list[dict[str, Any]] = []
    if saved is not None:
        ckpt, weights, state = load_latest_checkpoint(run_dir)
        try:
            model.load_state_dict(weights)
            opt.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"], rt.device)
            it, seconds_before = int(state["iteration"]), float(state["seconds"])
            interval.loss_sum += state["interval"]["loss_sum"].to(rt.device)
            interval.correct += state["interval"]["correct"].to(rt.device)
            interval.images, interval.steps = (
                int(state["interval"]["images"]),
                int(state["interval"]["steps"]),
            )
            if not rt.is_main:  # rank 0's figures only (Ctrl-C checkpoint): counted once, by rank 0
                interval = _Interval.zeros(rt.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"checkpoint {ckpt} does not fit this run: {first}") from None
        history = rundir.truncate_metrics(run_dir, it) if rt.is_main else []
    if rt.is_main:
        saved_cfg = replace(cfg, out=str(run_dir), resume=None, overwrite=False)
        runtime_info = {
            "device": str(rt.device),
            "precision": rt.precision,
            "channels_last": rt.channels_last,
            "estimated_memory_bytes": mem.total if mem is not None else None,
            "world_size": rt.world_size,  # processes of a data-parallel run (1 = single process)
        }
        meta = run_metadata(
            saved_cfg,
            classes=ds.classes,
            input_shape=ds.image_shape,
            norm=norm,
            augment=augment,
            source=ds.source,
            runtime=runtime_info,
            params=params,
        )
        rundir.atomic_write_json(run_dir / rundir.CONFIG, meta)
    fwd = torch.compile(model) if cfg.compile else model
    # Training steps go through DDP (gradient averaging); evaluation uses ``fwd`` itself on each rank's shard.
    step_fwd = distributed.wrap_ddp(fwd, rt) if rt.world_size > 1 else fwd

    def checkpoint(at: int) -> None:
        if not rt.is_main:
            return
        state = {
            "format": 1,
            "iteration": at,
            "epoch": at // steps_per_epoch,
            "batch_in_epoch": at % steps_per_epoch,
            "seconds": seconds_before + time.perf_counter() - started,
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": rng_state(rt.device),
            "interval": {
                "loss_sum": interval.loss_sum.detach().cpu(),
                "correct": interval.correct.detach().cpu(),
                "images": interval.images,
                "steps": interval.steps,
            },
        }
        try:
            save_checkpoint(run_dir, at, weights_bytes(model), state)
        except OSError as err:
            raise CheckpointError(f"cannot write a checkpoint in {run_dir}: {err.strerror or err}") from None

    def eval_point(at: int, lr: float) -> None:
        nonlocal interval
        bad = watch.poll()
        if bad is not None:
            raise _nan_error(bad, run_dir)
        if rt.world_size > 1:
            distributed.reduce_interval(interval)  # the training figures of the global batches
        n = max(interval.images, 1)
        train_loss = float(interval.loss_sum) / n  # the host sync of this interval
        train_error = (interval.images - int(interval.correct)) / n
        images_per_s = interval.images / max(time.perf_counter() - interval.started, 1e-9)
        test = evaluate(fwd, eval_test, amp_dtype=rt.amp_dtype, distributed=dist_eval)
        metrics = {
            "iteration": at,
            "epoch": round(at / steps_per_epoch, 4),
            "lr": lr,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_loss": test.loss,
            "test_error": test.error,
            "test_top5_error": test.top5_error,
            "images_per_s": round(images_per_s, 1),
            "seconds": round(seconds_before + time.perf_counter() - started, 3),
        }
        interval = _Interval.zeros(rt.device)
        history.append(metrics)
        if rt.is_main:
            # The line before the checkpoint: a crash between the two leaves a line past the last
            # checkpoint, which resume drops and redoes; the other order would lose this line for good.
            rundir.append_jsonl(run_dir / rundir.METRICS, metrics)
        checkpoint(at)
        if rt.is_main:
            progress.log(metrics)
        if callback is not None:
            callback({**metrics, "total_iterations": total})
        interval.started = time.perf_counter()  # eval and checkpoint time is not training throughput

    # 5) the step loop
    started = time.perf_counter()
    watch = FiniteWatch(rt.device)
    progress = Progress(
        cfg.progress if rt.is_main else "off", total=total, initial=it, desc=f"{cfg.model} on {cfg.dataset}"
    )
    lr = lr_at(max(it - 1, 0), plan)
    model.train()
    interval.started = time.perf_counter()
    try:
        with InterruptGuard() as guard:
            while it < total:
                epoch, start = divmod(it, steps_per_epoch)
                for x, y in train_loader.epoch(epoch, start=start):
                    lr = lr_at(it, plan)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    with autocast(rt):
                        logits = step_fwd(x)  # (B, K)
                        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    finite = torch.isfinite(loss.detach())
                    if cfg.grad_clip is not None:
                        if scaler is not None:
                            scaler.unscale_(opt)
                        norm_ = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        if scaler is None:  # with a GradScaler, inf grads are expected and skipped by it
                            finite = finite & torch.isfinite(norm_)
                    elif scaler is None:  # inf/NaN grads under a finite loss would poison the weights
                        finite = finite & grads_finite(model.parameters())
                    bad = watch.push(it + 1, finite)
                    if bad is not None:
                        raise _nan_error(bad, run_dir)
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    it += 1
                    b = y.shape[0]
                    interval.loss_sum += loss.detach().float() * b
                    interval.correct += (logits.detach().argmax(1) == y).sum()
                    interval.images += b
                    interval.steps += 1
                    if progress.wants_stats():
                        k = max(interval.images, 1)
                        dt = max(time.perf_counter() - interval.started, 1e-9)
                        stats = {
                            "loss": float(interval.loss_sum) / k,
                            "error": 1 - int(interval.correct) / k,
                            "lr": lr,
                            "images_per_s": interval.images / dt,
                        }
                        progress.update(1, stats)
                    else:
                        progress.update(1)
                    if it % eval_every == 0 or it == total:
                        eval_point(it, lr)
                    if guard.requested:
                        if it % eval_every and it != total:
                            checkpoint(it)
                        progress.message(f"interrupted: checkpoint saved at iteration {it} in {run_dir}")
                        raise KeyboardInterrupt
                    if it >= total:
                        break
    except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(err):
            raise
        raise oom_error(cfg.batch_size, rt.device, cfg.activation_checkpointing) from None
    finally:
        progress.close()

    # 6) final figures: the training error in eval mode on the whole train split (paper, Fig. 1 and 6)
    final_train = evaluate(fwd, eval_train, amp_dtype=rt.amp_dtype, distributed=dist_eval)
    final_test: EvalResult = evaluate(fwd, eval_test, amp_dtype=rt.amp_dtype, distributed=dist_eval)
    result = RunResult(
        run_dir=run_dir,
        model=cfg.model,
        dataset=cfg.dataset,
        final_train_loss=final_train.loss,
        final_train_error=final_train.error,
        final_test_loss=final_test.loss,
        final_test_error=final_test.error,
        final_test_top5_error=final_test.top5_error,
        params=params,
        seconds=round(seconds_before + time.perf_counter() - started, 3),
        iterations=it,
        epochs=round(it / steps_per_epoch, 4),
        history=history,
    )
    if rt.is_main:
        summary = {k: v for k, v in result.__dict__.items() if k != "history"}
        summary.update(run_dir=str(run_dir), device=str(rt.device), precision=rt.precision)
        summary.update(channels_last=rt.channels_last, compile=cfg.compile)
        rundir.atomic_write_json(run_dir / rundir.SUMMARY, summary)
    return result
