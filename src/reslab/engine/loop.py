"""``train(cfg) -> RunResult``: one readable flow from config to run directory.

Phases: resolve the config into specs -> data on the device -> the network (after the memory check) and
SGD -> the run directory (its lock first) -> restore a checkpoint -> config.json -> the step loop -> the
final evaluation -> summary.json. The step loop does no per-sample Python work and no host syncs: loss and
correct counts accumulate on the device and are read at evaluation points (every ``eval_every`` steps),
where metrics are logged and a checkpoint written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reslab.data.loader import Batching, DeviceLoader
from reslab.data.passed import passed_data
from reslab.engine import graphs
from reslab.engine.config import TrainConfig
from reslab.engine.data import load_data
from reslab.engine.devices import distributed
from reslab.engine.devices.memory import is_out_of_memory, oom_error
from reslab.engine.devices.runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from reslab.engine.guards import FiniteWatch, InterruptGuard, all_finite
from reslab.engine.inference import EvalResult, evaluate_model
from reslab.engine.loggers import check_logger_paths, open_loggers
from reslab.engine.net import build_net
from reslab.engine.optim import AdaptiveWarmup, checkpoint_state, lr_at, make_plan, make_sgd, trainable
from reslab.engine.progress import Progress
from reslab.engine.sizing import auto_epochs, length_notes
from reslab.engine.specs import RunSpecs, resolve
from reslab.engine.step import Interval, NonFiniteStep, StepState
from reslab.engine.store import rundir
from reslab.engine.store.best import BestWeights
from reslab.engine.store.checkpoint import (
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    weights_bytes,
)
from reslab.engine.store.runs import RunResult, run_metadata
from reslab.errors import CheckpointError, ConfigError, DivergedError, warn_line
from reslab.settings import api_config, require_config

Callback = Callable[[dict[str, Any]], None]


def train(
    cfg: TrainConfig | None = None,
    /,
    *,
    data: Any = None,
    test_data: Any = None,
    callback: Callback | None = None,
    runtime: Runtime | None = None,
    **settings: Any,
) -> RunResult:
    """Train ``cfg.model`` on ``cfg.dataset``; write the run directory; return the final figures.

    ``train(TrainConfig(model="resnet56", epochs=3))`` or ``train(model="resnet56", epochs=3)``: settings
    given as keywords override ``cfg``'s. With ``resume`` set, the run's saved settings are the base and the
    settings given (not at their defaults) are changes (see :mod:`reslab.engine.store.resume`).
    ``data=(x_train, y_train)`` and ``test_data=(x_test, y_test)`` (numpy arrays or tensors) or
    ``data=torch_dataset`` train on data in memory instead of ``cfg.dataset`` (recorded as ``memory:<name>``;
    a resume needs it passed again): see :mod:`reslab.data.passed`. ``callback(metrics)`` is called at each
    evaluation point with the dict appended to ``metrics.jsonl`` (plus ``total_iterations``).

    Raises ConfigError / DataError / CheckpointError on bad input (exit 2), TrainingError on NaN
    (DivergedError) or out of memory (exit 3), and KeyboardInterrupt after saving a checkpoint on Ctrl-C.
    """
    if settings or cfg is None:  # types checked at the edge: one line for train(lr="0.1"), train("resnet8")
        cfg = api_config(TrainConfig, cfg, settings, "train()")
    require_config(cfg, TrainConfig, "train()")
    specs = resolve(cfg, passed=passed_data(data, test_data))
    if runtime is None and distributed.launched_by_torchrun():  # a torchrun worker: join the group first
        with distributed.session(specs.runtime) as rt:
            return _Run(specs, rt, callback).execute()
    return _Run(specs, runtime or resolve_runtime(specs.runtime), callback).execute()


class _Run:
    """One training session of a run: everything the phases share, made in ``__init__``; then ``execute``."""

    def __init__(self, specs: RunSpecs, rt: Runtime, callback: Callback | None) -> None:
        from reslab.models import model_info

        self.specs, self.rt, self.callback = specs, rt, callback
        depth = model_info(specs.net.model).depth  # ConfigError for an unknown model, before any loading
        seed_everything(specs.data.seed)
        # 1) everything that can be refused is checked before the run directory is touched
        self.specs = specs = self._load_data(specs)
        net = build_net(
            specs.net, rt, num_classes=len(self.data.classes), input_shape=self.data.image_shape,
            world_size=rt.world_size,
        )  # fmt: skip
        self.model, self.memory = net.model, net.memory
        if rt.world_size > 1:  # SyncBatchNorm swap (--sync-bn) before the optimizer sees the parameters
            self.model = distributed.prepare_model(self.model, rt, sync_bn=specs.runtime.sync_bn)
        # 2) the steps: length, learning-rate plan, optimizer and what a step needs
        self.steps_per_epoch = len(self.data.train)
        self.plan = make_plan(specs.optim, steps_per_epoch=self.steps_per_epoch, depth=depth)
        self.total = self.plan.total
        self.eval_every = specs.output.eval_every or self.steps_per_epoch
        self.warmup = AdaptiveWarmup(specs.optim.warmup_until_error)
        self.state, self.step = self._make_step()
        # 3) the position and its figures (a restore moves them), the display
        self.it, self.seconds_before, self.interval = 0, 0.0, Interval.zeros(rt.device)
        self.history: list[dict[str, Any]] = []
        self.notes = [*specs.notes, *self.data.notes, *net.notes, *self.plan.notes(specs.optim)]
        self.notes += [self.graphs.note] if self.graphs.note and rt.is_main else []
        self.started = time.perf_counter()
        # 4) the run directory: its lock, then the checkpoint, config.json and the loggers
        self.exit = contextlib.ExitStack()  # the run directory's lock, released when the session ends
        try:
            self.run_dir = self._open_run_dir()
            keep = self.data.eval_best is not None  # --keep-best
            self.best = BestWeights(self.run_dir, is_main=rt.is_main) if keep else None
            if specs.output.resume is not None:
                self._restore()
            if rt.is_main:
                check_logger_paths(specs.output.logger, self.run_dir)  # before anything is written there
                self._write_config()
            self.loggers = open_loggers(
                specs.output.logger, self.run_dir, history=self.history, iteration=self.it,
                config=specs.config.to_dict(), is_main=rt.is_main,
            )  # fmt: skip
        except BaseException:
            self.exit.close()
            raise
        self.progress = Progress(
            specs.output.progress if rt.is_main else "off",
            total=self.total,
            initial=self.it,
            desc=f"{specs.net.model} on {specs.data.dataset}",
        )

    # --- phases before the loop
    def _make_step(self) -> tuple[StepState, graphs.Stepper]:
        """What a step needs, and the step: eager, compiled, or captured as one CUDA graph (graphs.py)."""
        specs, rt = self.specs, self.rt
        resident = isinstance(self.data.train, DeviceLoader)  # a streamed folder's batches are not
        self.graphs = graphs.graph_plan(
            specs.runtime, rt, resident=resident, checkpointing=specs.net.activation_checkpointing
        )
        self.fwd = graphs.compiled(self.model, self.graphs)  # evaluation too (each rank its own shard)
        state = StepState(
            forward=distributed.wrap_ddp(self.fwd, rt) if rt.world_size > 1 else self.fwd,
            params=trainable(self.model),
            optimizer=make_sgd(self.model, specs.optim),
            runtime=rt,
            watch=FiniteWatch(rt.device),
            label_smoothing=specs.optim.label_smoothing,
            grad_clip=specs.optim.grad_clip,
            scaler=torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None,
        )
        return state, graphs.make_stepper(state, self.graphs, warn=lambda line: self._say(line))

    def _load_data(self, specs: RunSpecs) -> RunSpecs:
        """The splits on the device; ``specs`` with the batch and length the data calls for where the user
        left them unset (the small-data rule, :mod:`reslab.engine.sizing`), its lines in the data's notes."""
        self.data = load_data(specs.data, self.rt, specs.passed)
        steps, optim = len(self.data.train), specs.optim
        if specs.net.resumed:  # the run's own batch and length, as config.json recorded them
            return specs.sized(batch_size=self.data.batch_size, epochs=optim.epochs)
        epochs = auto_epochs(steps, epochs=optim.epochs, iterations=optim.iterations)
        sized = specs.sized(batch_size=self.data.batch_size, epochs=epochs)
        total = sized.optim.run_length(steps)
        scratch = specs.net.init_from is None
        self.data.notes += length_notes(
            steps, total, epochs=epochs, adapted=epochs != optim.epochs, from_scratch=scratch
        )  # fmt: skip
        return sized

    def _open_run_dir(self) -> Path:
        """Create (or reopen) the run directory and take its lock: one writer per run (rank 0 only)."""
        out, what = self.specs.output, {"model": self.specs.net.model, "dataset": self.specs.data.dataset}
        if self.rt.world_size > 1:  # rank 0 picks, creates and locks the run directory, the others are told
            run_dir = distributed.agree_run_dir(out, self.rt, rundir.open_run_dir, self.exit, **what)
        else:
            run_dir = rundir.open_run_dir(out, self.exit if self.rt.is_main else None, **what)
        if self.rt.is_main:
            # three checkpoints (weights + momentum) exist for a moment, plus the run's weights
            param_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
            rundir.check_free_space(run_dir, 8 * param_bytes + 2**20)
        return run_dir

    def _restore(self) -> None:
        """Weights, optimizer, RNG, position, warm-up and interval figures from the newest checkpoint."""
        if not list_checkpoints(self.run_dir):  # killed before its first checkpoint: nothing to lose
            self.history = rundir.truncate_metrics(self.run_dir, 0) if self.rt.is_main else []
            self.notes.insert(
                0, f"no checkpoint yet in {self.run_dir}: starting the run over from iteration 0"
            )
            return
        ckpt, weights, state = load_latest_checkpoint(self.run_dir)
        try:
            self.model.load_state_dict(weights)
            self.state.optimizer.load_state_dict(state["optimizer"])
            if self.state.scaler is not None and state.get("scaler"):
                self.state.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"], self.rt.device)
            self.it, self.seconds_before = int(state["iteration"]), float(state["seconds"])
            if self.rt.is_main:  # rank 0's figures only (Ctrl-C checkpoint): counted once, by rank 0
                self.interval = Interval.from_state(state["interval"], self.rt.device)
            self.warmup = AdaptiveWarmup.from_state(state.get("warmup"), self.warmup.until_error)
            self.plan = self.warmup.resumed(self.plan)
            if self.best is not None:
                self.best.restore(state.get("best"), self.it, self.model, warn_line)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"checkpoint {ckpt} does not fit this run: {first}") from None
        if self.it > self.total:  # nothing is written yet: config.json keeps the run's own length
            raise ConfigError(
                f"{self.run_dir} is already at iteration {self.it}, past the {self.total} asked for; resume "
                "with a longer --epochs/--iterations, or with neither to keep the run's own length"
            )
        self.history = rundir.truncate_metrics(self.run_dir, self.it) if self.rt.is_main else []
        self.notes.insert(0, f"resuming {self.run_dir} at iteration {self.it} of {self.total}")

    def _write_config(self) -> None:
        (self.run_dir / rundir.DIVERGED).unlink(missing_ok=True)  # a new session: the old stop is history
        saved = dataclasses.replace(self.specs.config, out=str(self.run_dir), resume=None, overwrite=False)
        runtime_info = {
            "device": str(self.rt.device),
            "precision": self.rt.precision,
            "channels_last": self.rt.channels_last,
            "estimated_memory_bytes": self.memory.total if self.memory is not None else None,
            "world_size": self.rt.world_size,  # processes of a data-parallel run (1 = single process)
            "step": self.graphs.kind,  # eager, cuda graph, compiled, or compiled with cuda graphs
        }
        d = self.data
        meta = run_metadata(
            saved, classes=d.classes, input_shape=d.image_shape, norm=d.norm, augment=d.augment,
            source=d.source, runtime=runtime_info, params=sum(p.numel() for p in self.model.parameters()),
            fingerprint=d.fingerprint,
        )  # fmt: skip
        rundir.atomic_write_json(self.run_dir / rundir.CONFIG, meta)

    # --- the step loop
    def execute(self) -> RunResult:
        with self.exit:
            return self._execute()

    def _execute(self) -> RunResult:
        for note in self.notes:
            self._say(note)
        self.started = time.perf_counter()
        self.model.train()
        self.interval.started = time.perf_counter()
        try:
            with InterruptGuard() as guard:
                self._steps(guard)
        except NonFiniteStep as err:
            diverged = self._diverged(err.iteration)
            if self.rt.is_main:
                record = {
                    "iteration": err.iteration,
                    "message": str(diverged),
                    "last": self.history[-1] if self.history else None,
                }
                rundir.atomic_write_bytes(self.run_dir / rundir.DIVERGED, rundir.strict_json(record).encode())
                self._report()
            raise diverged from None
        except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(err):
                raise
            net = self.specs.net
            raise oom_error(
                net.batch_size, self.rt.device, net.activation_checkpointing, run_dir=self.run_dir
            ) from None
        finally:
            self.progress.close()
            self.loggers.close()
        return self._finish()

    def _steps(self, guard: InterruptGuard) -> None:
        """Steps until the end of the run: one train_step each, an evaluation every ``eval_every``."""
        while self.it < self.total:
            epoch, start = divmod(self.it, self.steps_per_epoch)
            for x, y in self.data.train.epoch(epoch, start=start):
                lr = lr_at(self.it, self.plan)
                _, logits = self.step(x, y, lr=lr, iteration=self.it + 1, interval=self.interval)
                if self.warmup.watching(self.plan, self.it):
                    self._watch_warmup(logits, y)
                self.it += 1
                self._show(lr)
                if self.it % self.eval_every == 0 or self.it == self.total:
                    self._eval_point(lr)
                if guard.requested:
                    self._interrupt()
                if self.it >= self.total:
                    return

    def _watch_warmup(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """The adaptive warm-up reads each batch's error (a host sync per step, during the warm-up only)."""
        counts = torch.stack([(logits.argmax(1) != y).sum(), torch.tensor(y.shape[0], device=y.device)])
        if self.rt.world_size > 1:  # every rank must end the warm-up at the same step
            counts = distributed.all_reduce_sum(counts.double())
        wrong, n = (float(c) for c in counts)
        self.plan = self.warmup.observe(self.plan, self.it, wrong / n)
        if self.warmup.ended_at is not None:
            self.progress.message(
                f"warm-up ended at iteration {self.warmup.ended_at}: training error of the last batches "
                f"{sum(self.warmup.errors) / len(self.warmup.errors):.1%} < {self.warmup.until_error:.0%}"
            )

    def _show(self, lr: float) -> None:
        """Advance the bar; refresh its live figures at most twice a second (that costs a host sync)."""
        if not self.progress.wants_stats():
            self.progress.update(1)
            return
        loss, error, images_per_s = self.interval.figures()
        self.progress.update(1, {"loss": loss, "error": error, "lr": lr, "images_per_s": images_per_s})

    def _eval_point(self, lr: float) -> None:
        """Log the interval's training figures and the test figures; write metrics.jsonl and a checkpoint."""
        bad = self.state.watch.poll()
        if bad is not None:
            raise NonFiniteStep(bad)
        if not all_finite(self.model.state_dict()):  # e.g. BN running_var gone to inf under a finite loss
            raise NonFiniteStep(self.it)
        if self.rt.world_size > 1:
            distributed.reduce_interval(self.interval)  # the training figures of the global batches
        train_loss, train_error, images_per_s = self.interval.figures()
        test = self._evaluate(self.data.eval_test)
        metrics: dict[str, Any] = {
            "iteration": self.it,
            "epoch": round(self.it / self.steps_per_epoch, 4),
            "lr": lr,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_loss": test.loss,
            "test_error": test.error,
            "test_top5_error": test.top5_error,
            "images_per_s": round(images_per_s, 1),
            "seconds": round(self._seconds(), 3),
        }
        if self.plan.warmup == "adaptive":  # the step count at which the warm-up ended (None: not yet)
            metrics["warmup_ended_at"] = self.warmup.ended_at
        if self.best is not None and self.data.eval_best is not None:  # --keep-best: held-out training images
            held = self._evaluate(self.data.eval_best)
            metrics.update(self.best.observe(self.it, held.loss, held.error))
        self.interval.reset()  # in place: a captured step adds into these tensors
        self.history.append(metrics)
        if self.rt.is_main:
            # The line before the checkpoint: a crash between the two leaves a line past the last
            # checkpoint, which resume drops and redoes; the other order would lose this line for good.
            rundir.append_jsonl(self.run_dir / rundir.METRICS, metrics)
            self.loggers.log(metrics)  # --logger: tensorboard, csv, wandb
        self._checkpoint()
        if self.best is not None:
            self.best.save(self.model)  # after the checkpoint: see reslab.engine.store.best
        self.progress.log(metrics)
        if self.callback is not None:
            self.callback({**metrics, "total_iterations": self.total})
        self.interval.started = time.perf_counter()  # eval and checkpoint time is not training throughput

    def _checkpoint(self) -> None:
        """Save weights, optimizer, RNG and position; a model with a NaN/inf weight or buffer is not saved."""
        if not all_finite(self.model.state_dict()):
            raise NonFiniteStep(self.it)
        if not self.rt.is_main:
            return
        state = {
            "format": 1,
            "iteration": self.it,
            "epoch": self.it // self.steps_per_epoch,
            "batch_in_epoch": self.it % self.steps_per_epoch,
            "seconds": self._seconds(),
            "optimizer": checkpoint_state(self.state.optimizer),
            "scaler": self.state.scaler.state_dict() if self.state.scaler is not None else {},
            "rng": rng_state(self.rt.device),
            "interval": self.interval.to_state(),
            "warmup": self.warmup.to_state(),
            "best": self.best.to_state() if self.best is not None else None,
        }
        save_checkpoint(self.run_dir, self.it, weights_bytes(self.model), state)

    def _interrupt(self) -> None:
        if self.it % self.eval_every and self.it != self.total:
            self._checkpoint()
        self.progress.message(f"interrupted: checkpoint saved at iteration {self.it} in {self.run_dir}")
        raise KeyboardInterrupt

    def _diverged(self, iteration: int) -> DivergedError:
        kept = list_checkpoints(self.run_dir)
        where = (
            f"the last good checkpoint ({kept[0].name}) is kept" if kept else "no checkpoint was written yet"
        )
        return DivergedError(
            f"loss, gradients or weights became NaN/inf at iteration {iteration}; try a lower --lr or a "
            f"longer --warmup-epochs (or --grad-clip); {where} in {self.run_dir}",
            iteration=iteration,
            run_dir=self.run_dir,
        )

    def _say(self, line: str) -> None:
        (self.progress.warn if line.startswith("warning:") else self.progress.message)(line)

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def _evaluate(self, loader: Batching) -> EvalResult:
        return evaluate_model(
            self.fwd, loader, amp_dtype=self.rt.amp_dtype, distributed=self.rt.world_size > 1
        )

    # --- after the loop
    def _finish(self) -> RunResult:
        """The paper's training error: eval mode on the whole train split (Fig. 1 and 6); summary.json."""
        train, test = self._evaluate(self.data.eval_train), self._evaluate(self.data.eval_test)
        held = self.data.eval_best
        result = RunResult(
            run_dir=self.run_dir,
            model=self.specs.net.model,
            dataset=self.specs.data.dataset,
            final_train_loss=train.loss,
            final_train_error=train.error,
            final_test_loss=test.loss,
            final_test_error=test.error,
            final_test_top5_error=test.top5_error,
            params=sum(p.numel() for p in self.model.parameters()),
            seconds=round(self._seconds(), 3),
            iterations=self.it,
            epochs=round(self.it / self.steps_per_epoch, 4),
            history=self.history,
            num_classes=len(self.data.classes),
            best=self.best.summary(held.n) if self.best is not None and held is not None else None,
        )
        if self.rt.is_main:
            summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "history"}
            summary.update(run_dir=str(self.run_dir), device=str(self.rt.device), precision=self.rt.precision)
            summary.update(channels_last=self.rt.channels_last, compile=self.specs.runtime.compile)
            summary.update(step=self.graphs.kind)
            rundir.atomic_write_json(self.run_dir / rundir.SUMMARY, summary)
            self._report()
        return result

    def _report(self) -> None:
        """report.html beside the run (reslab.reports); a page that cannot be drawn costs a warning only."""
        from reslab.errors import ReslabError
        from reslab.reports import write_run_report

        try:
            write_run_report(self.run_dir)
        except (ReslabError, OSError, ValueError, RuntimeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            warn_line(f"report.html not written: {first}")
