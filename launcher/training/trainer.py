"""The training loop: resume, then epochs of named steps (forward_backward, optimizer_step, log_window, end_of_epoch), then the summary."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from launcher import checkpoint
from launcher.checkpoint.storage import CheckpointStorage
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.data.loaders import StreamBatches, start_epoch
from launcher.data.streaming import sample_count
from launcher.distributed.process_group import all_reduce_sum, gather
from launcher.distributed.runtime import Runtime
from launcher.distributed.watchdog import Watchdog
from launcher.errors import UserError
from launcher.models.build import count_parameters
from launcher.rundir import RunDir
from launcher.tracking.loggers import Logger, NullLogger, flat_params
from launcher.tracking.run_logger import open_run_logger
from launcher.training.batches import batch_size, first_tensor, to_device
from launcher.training.checkpointing import Checkpoints
from launcher.training.compilation import compile_cache, graphs_compiled
from launcher.training.memory import Memory, describe, measure, peak
from launcher.training.optim import measure_grad_norm, needs_metric, stretch_cosine
from launcher.training.profiling import StepProfiler, step_profiler
from launcher.training.progress import Progress, due, is_complete, longer_run
from launcher.training.pruning import pruning_for
from launcher.training.setup import describe_targets, setup
from launcher.training.stopping import PRUNED, StopRequests, TrainingStopped
from launcher.training.summary import BestResult, RunSummary
from launcher.training.task import best_mode, evaluate

log = logging.getLogger("launcher")


@dataclass
class Window:
    """The training loss and throughput since the last logged step."""

    loss: torch.Tensor
    batches: int = 0
    samples: int = 0
    items: int = 0  # what the task counts (tokens for a language model)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def new(cls, device: torch.device) -> Window:
        return cls(torch.zeros((), device=device))

    def restart_clock(self) -> None:
        """Measure the throughput from now on (the loss keeps the batches so far)."""
        self.samples = self.items = 0
        self.started = time.perf_counter()


class Trainer:
    """One run's training: `resume`, then `fit`, which goes through the epochs as named steps
    (forward_backward, optimizer_step, log_window, end_of_epoch) and returns the summary."""

    def __init__(self, recipe: Recipe, runtime: Runtime, run: RunDir, stop: StopRequests | None = None) -> None:
        self.started = time.perf_counter()
        self.recipe, self.runtime, self.run, self.stop = recipe, runtime, run, stop
        self.s = setup(recipe, runtime)
        self.progress = Progress()
        self.checkpoints = Checkpoints(recipe, run, runtime)
        self.pruning = pruning_for(run, runtime.is_main)  # a search's trial: its study may stop it
        self.metrics: dict[str, float] = {}
        self.throughput: dict[str, float] = {}  # a language model's tokens/s in the last logged window
        self.resumed = False
        self.tracker_runs: dict[str, str] = {}  # a resumed run's tracker runs (MLflow's, W&B's), reopened
        self.memory: list[Memory] | None = None  # each rank's, measured at this process's first step
        self.first_step_s: float | None = None  # this process's first step: compiling, warming up
        self.graphs_before = graphs_compiled() if recipe.train.compile is not None else (0, 0)

    def done(self) -> bool:
        """The run has trained all it should: its epochs, or train.max_steps."""
        return is_complete(self.progress, self.recipe.train)

    def resume(self, path: Path) -> None:
        """Load the model, optimizer, schedule, random states and position of a checkpoint."""
        state, path = load_resume_state(path, self.checkpoints.storage, self.s.training_state)
        try:
            self.s.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise UserError(f"{path} does not fit this recipe: {' '.join(str(error).split())[:400]}") from None
        for difference in recipe_differences(state["recipe"], self.recipe.to_dict()):
            log.warning(
                "resuming with a different recipe: %s (the optimizer and schedule state come from the checkpoint)",
                difference,
            )
        ranks, runtime = len(state["rng"]), self.runtime
        checkpoint.restore_rng_states(state["rng"][runtime.rank if ranks == runtime.world_size else 0])
        self.progress = Progress(**state["progress"])
        self.tracker_runs = dict(state.get("trackers") or {})  # rank 0's (checkpoints before trackers: none)
        if isinstance(self.s.train_batches, StreamBatches):
            self._resume_stream(self.s.train_batches, state.get("loader"), ranks)
        elif ranks != runtime.world_size:
            self._move_position_to_this_world_size(ranks)
        if ranks != runtime.world_size and not self.done():
            self._stretch_schedule(ranks)
        self.checkpoints.last_saved_step = self.progress.step
        if runtime.is_main:
            for newer in checkpoint.newer_than(self.run.checkpoints, self.progress.step):
                log.warning("set aside %s: this run goes on from the older step %d", newer.name, self.progress.step)
        log.info("resumed from %s at epoch %d, step %d", path, self.progress.epoch + 1, self.progress.step)
        if self.done():
            raise UserError(
                f"nothing to do: {path} is already at epoch {self.progress.epoch}, step {self.progress.step}; "
                f"resume with a longer run, e.g. {longer_run(self.progress, self.recipe.train)}"
            )
        if runtime.is_main:
            dump_recipe(self.recipe, self.run.recipe, header=f"# resumed from {path}\n")
        self.resumed = True

    def _move_position_to_this_world_size(self, ranks: int) -> None:
        """The data position travels in samples; in batches per rank it means something else now."""
        cfg, progress, world_size = self.recipe.train, self.progress, self.runtime.world_size
        samples_per_step = cfg.batch_size * world_size * cfg.grad_accum_steps
        whole_steps = progress.samples_done // samples_per_step
        progress.batches_done = whole_steps * cfg.grad_accum_steps
        log.warning(
            "the checkpoint is from %d rank(s), this run has %d: the epoch goes on after %d of its samples (%d were "
            "done: the rest of a global batch is trained again); the order of the rest differs, since each rank's "
            "share does; random states: rank 0's", ranks, world_size,
            whole_steps * samples_per_step, progress.samples_done,
        )  # fmt: skip
        progress.samples_done = whole_steps * samples_per_step

    def _resume_stream(self, stream: StreamBatches, positions: list[dict[str, Any]] | None, ranks: int) -> None:
        """A stream goes on from this rank's saved position. Where it cannot exactly (another world
        size or number of loader workers: the items are shared out by reader), the epoch starts
        again: re-reading part of it beats refusing the run (an elastic restart on fewer nodes
        must go on) and beats skipping the rest of it (items never trained on)."""
        progress, same = self.progress, ranks == self.runtime.world_size
        if progress.batches_done == 0:
            return  # at an epoch's start: the stream starts afresh
        position = positions[self.runtime.rank] if positions is not None and same else None
        if (why := stream.resume(position, progress.batches_done, same)) is not None:
            log.warning(
                "cannot go on exactly where the checkpoint stopped: %s. Epoch %d starts again from its beginning: "
                "the %d batch(es) per rank it had trained on are trained on again", why, progress.epoch + 1,
                progress.batches_done,
            )  # fmt: skip
            progress.batches_done = progress.samples_done = 0

    def _stretch_schedule(self, ranks: int) -> None:
        """A per-step schedule whose length the launcher filled in (T_max, total_steps) was built
        for the steps of the old world size; this run takes another number. A cosine goes on from
        the same fraction of its curve and ends with the run (the learning rate does not jump,
        nor climb back after the old length); other schedules keep their length, with a warning.
        Inside a SequentialLR that is its last schedule, from its milestone on (the milestones
        are the recipe's own numbers, and stay)."""
        s = self.s
        if not s.schedule_per_step:
            return
        total = self._steps_at_end()
        for end in s.schedule_ends:
            length, name = getattr(end.scheduler, end.argument), type(end.scheduler).__name__
            done = self.progress.step - end.start  # negative: it has not started yet
            if total - end.start == length or done >= length:
                continue
            if not isinstance(end.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                log.warning(
                    "%s keeps its %s=%d, built for %d rank(s), though this run has %d steps in all; resume on %d "
                    "rank(s) to follow it as built", name, end.argument, length, ranks, total, ranks,
                )  # fmt: skip
                continue
            fraction = stretch_cosine(end.scheduler, done, total - end.start)
            log.warning(
                "%s was %d steps long, for %d rank(s); this run has %d steps in all: the cosine goes on from "
                "%.1f%% of its curve and ends with the run", name, length, ranks, total, 100 * fraction,
            )  # fmt: skip

    def _steps_at_end(self) -> int:
        """The optimizer steps this run will have taken at its end, the ones before it included."""
        s, progress, cfg = self.s, self.progress, self.recipe.train
        if s.steps_per_epoch is None or s.planned_epochs is None:
            return cfg.max_steps or progress.step  # a stream with no length: train.max_steps, which it requires
        batches = s.batches_per_epoch if s.batches_per_epoch is not None else s.steps_per_epoch * cfg.grad_accum_steps
        left_in_epoch = max(0, math.ceil((batches - progress.batches_done) / cfg.grad_accum_steps))
        epochs_after = (cfg.epochs if cfg.epochs is not None else s.planned_epochs) - progress.epoch - 1
        total = progress.step + left_in_epoch + max(0, epochs_after) * s.steps_per_epoch
        return min(total, cfg.max_steps) if cfg.max_steps is not None else total

    def fit(self) -> RunSummary:
        """Train to the end; the summary (also written to metrics.json). Raises TrainingStopped
        where `stop` asks to stop early, at a step all ranks agree on, with its checkpoint."""
        logger = self._open_logger()
        self._describe()
        watchdog = Watchdog(
            self.run.heartbeats,
            self.runtime.rank,
            self.run.rank_log(self.runtime.rank, self.runtime.world_size),
            self.recipe.distributed.stall_s,
        )
        profiler = step_profiler(
            self.recipe.logging.profile, self.run.profile, self.runtime.device, self.runtime.is_main
        )
        self.s.model.train()
        try:
            while not self.done():
                self.train_epoch(logger, watchdog, profiler)
                self.end_of_epoch(logger)
            self.checkpoints.close()
            summary = self.summary()
            logger.finish(flat_params(self.recipe.to_dict()), self.metrics)
            return summary
        finally:
            profiler.close()
            watchdog.close()
            logger.close()
            self.checkpoints.close()  # stopped or failed: what was handed over still completes

    def _open_logger(self) -> Logger:
        """Rank 0's trackers (a resumed run's reopened), whose run ids each checkpoint keeps; the others' logger does nothing."""
        if not self.runtime.is_main:
            return NullLogger()
        recipe = self.recipe
        logger = open_run_logger(
            recipe.logging, self.run, name=recipe.run.resolved_name, output=Path(recipe.run.output),
            params=flat_params(recipe.to_dict()), resume_step=self.progress.step if self.resumed else None,
            run_ids=self.tracker_runs,
        )  # fmt: skip
        self.checkpoints.tracker_runs = logger.run_ids()
        return logger

    def _describe(self) -> None:
        s, cfg, world_size = self.s, self.recipe.train, self.runtime.world_size
        total, trainable = count_parameters(s.net)
        log.info(
            "%s training / %s validation samples, %s; %s: %s parameters (%s trainable) on %s",
            sample_count(s.data.train), sample_count(s.data.val), describe_targets(self.recipe, s.data.info), self.recipe.model.name,
            f"{total:,}", f"{trainable:,}", self.runtime.device,
        )  # fmt: skip
        log.info(
            "batch %d per process x %d process(es) x %d accumulation = %d per step; %s step(s) per epoch, %s epoch(s)",
            cfg.batch_size, world_size, cfg.grad_accum_steps,
            cfg.batch_size * world_size * cfg.grad_accum_steps, _known(s.steps_per_epoch), _known(s.planned_epochs),
        )  # fmt: skip

    def train_epoch(self, logger: Logger, watchdog: Watchdog, profiler: StepProfiler) -> None:
        """The rest of the epoch in progress, one optimizer step per grad_accum_steps batches."""
        s, progress, cfg = self.s, self.progress, self.recipe.train
        start_epoch(s.train_batches, progress.epoch, skip_batches=progress.batches_done)
        window = Window.new(self.runtime.device)
        batches = logger.progress(
            s.train_batches,
            total=s.batches_per_epoch,
            done=progress.batches_done,
            description=f"epoch {progress.epoch + 1}/{_known(s.planned_epochs)}",
        )
        for batch in batches:
            first = progress.step == 0 and progress.batches_done == 0
            if first and self.recipe.logging.image_grid and (images := first_tensor(batch)) is not None:
                logger.image_grid("train/batch", images, step=0)
            # Micro-batches of this optimizer step: grad_accum_steps, fewer at the end of an epoch.
            window_first = progress.batches_done - progress.batches_done % cfg.grad_accum_steps
            micro_batches = self._window_length(window_first)
            progress.batches_done += 1
            samples = batch_size(batch)
            progress.samples_done += samples * self.runtime.world_size
            steps_now = progress.batches_done == window_first + micro_batches
            loss, items = self.forward_backward(batch, micro_batches, sync=steps_now)
            window.loss += loss
            window.batches += 1
            window.samples += samples
            window.items += items
            if not steps_now:
                continue
            lr, grad_norm = self.optimizer_step(logger)
            profiler.step()
            watchdog.step(progress.step)
            first_here = self.first_step_s is None
            if first_here:
                self.note_first_step(window.started)
            if progress.step % self.recipe.logging.every_n_steps == 0:
                self.log_window(logger, window, lr, grad_norm)
                window = Window.new(self.runtime.device)
            elif first_here:
                window.restart_clock()  # the window's throughput leaves out the first step's compiling
            if self.checkpoints.due_mid_epoch(progress, s.batches_per_epoch):
                self.checkpoints.save(s, progress)
            if self._last_step():
                break  # finishing beats stopping
            if self.stop is not None and (reasons := self.stop.agreed()):
                # At an epoch's last batch too: the resumed run then does this epoch's evaluation.
                self.checkpoints.save(s, progress)
                raise TrainingStopped(reasons, progress.step, checkpoint.step_path(self.run.checkpoints, progress.step))
        if progress.batches_done % cfg.grad_accum_steps and s.batches_per_epoch is None:
            s.optimizer.zero_grad(set_to_none=True)  # the stream ended part-way through a window: no step

    def note_first_step(self, started: float) -> None:
        """This process's first optimizer step is done (from `started`, the loop's start): its time
        logged and kept for metrics.json; with train.compile, how many graphs it compiled and how
        many it found in the run's compile cache."""
        self.first_step_s = time.perf_counter() - started
        if self.recipe.train.compile is None:
            log.info("first step: %.1f s", self.first_step_s)
            return
        (hits, misses), (hits_before, misses_before) = graphs_compiled(), self.graphs_before
        log.info(
            "first step: %.1f s, compiling: %d graph(s) compiled, %d found in %s", self.first_step_s,
            misses - misses_before, hits - hits_before, self.run.compile_cache,
        )  # fmt: skip

    def _window_length(self, window_first: int) -> int:
        """Micro-batches in the optimizer step from batch `window_first` on: grad_accum_steps, fewer
        at the end of an epoch. A stream's end is not known ahead: a window it cuts short is dropped."""
        accumulate, batches = self.recipe.train.grad_accum_steps, self.s.batches_per_epoch
        return accumulate if batches is None else min(accumulate, batches - window_first)

    def _epoch_finished(self) -> bool:
        """The epoch in progress has no batch left (a stream's: on some rank)."""
        s = self.s
        if isinstance(s.train_batches, StreamBatches):
            return s.train_batches.ended
        return s.batches_per_epoch is not None and self.progress.batches_done >= s.batches_per_epoch

    def _last_step(self) -> bool:
        """The step just taken is the run's last."""
        progress, batches = self.progress, self.s.batches_per_epoch
        epoch_ends = batches is not None and progress.batches_done >= batches
        return is_complete(Progress(epoch=progress.epoch + epoch_ends, step=progress.step), self.recipe.train)

    def forward_backward(self, batch: Any, micro_batches: int, sync: bool) -> tuple[torch.Tensor, int]:
        """One micro-batch's loss and gradients; the loss, detached, and the items the task counted
        (samples, tokens). DDP's gradient all-reduce happens only where `sync`: in the backward of
        an optimizer step's last micro-batch."""
        s, device = self.s, self.runtime.device
        batch = to_device(batch, device, channels_last=self.recipe.train.channels_last)
        with s.wrapper.accumulating(s.model, skip_sync=not sync), s.mixed_precision:
            step = s.task.step(s.model, batch)
            # Gradients add up over micro-batches: divide, so the step is that of one big batch.
            s.scaler.scale(step.loss / micro_batches).backward()
        return step.loss.detach(), step.items

    def optimizer_step(self, logger: Logger) -> tuple[float, float | None]:
        """Clip, step the optimizer (and a per-step schedule), clear the gradients; the learning
        rate this step used, and the gradients' norm where it was measured (clipping, or a
        logged step: every rank measures at the same steps, a collective under FSDP)."""
        s, cfg, progress = self.s, self.recipe.train, self.progress
        grad_norm = None
        if cfg.grad_clip is not None or (progress.step + 1) % self.recipe.logging.every_n_steps == 0:
            s.scaler.unscale_(s.optimizer)  # fp16: the true gradients (a no-op without a loss scaler)
            grad_norm = measure_grad_norm(s.net, cfg.grad_clip)
        lr = s.optimizer.param_groups[0]["lr"]
        s.scaler.step(s.optimizer)
        s.scaler.update()
        progress.step += 1
        if s.schedule_per_step:
            s.scheduler.step()
        epoch_ends = progress.batches_done == s.batches_per_epoch
        if self.recipe.logging.histograms and (epoch_ends or self._last_step()):
            logger.histograms(s.net, progress.step)  # at an epoch's last step, while the gradients exist
        if self.memory is None:  # this process's first step: the optimizer state and gradients exist
            mine = measure(s.net, s.optimizer, self.runtime.device, self.runtime.rank)
            self.memory = [Memory.model_validate(m) for m in gather(mine.model_dump())]
            log.info("%s", describe(self.memory))
        s.optimizer.zero_grad(set_to_none=True)
        return float(lr), grad_norm

    def log_window(self, logger: Logger, window: Window, lr: float, grad_norm: float | None) -> None:
        seconds = time.perf_counter() - window.started
        world_size = self.runtime.world_size
        # The mean over every worker's batches: the loss of the global batch.
        mean_loss = all_reduce_sum(window.loss / window.batches) / world_size
        values = {
            "train/loss": mean_loss.item(),
            "train/lr": lr,
            "train/samples_per_s": window.samples * world_size / max(seconds, 1e-9),
        }
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm
        values["train/peak_memory_mb"] = int(peak(self.runtime.device)["peak"]) / 2**20  # rank 0's
        if (unit := self.s.task.unit) != "samples":  # tokens/s for a language model
            values[f"train/{unit}_per_s"] = window.items * world_size / max(seconds, 1e-9)
            self.throughput = {f"train/{unit}_per_s": values[f"train/{unit}_per_s"]}  # for the epoch's log line
        logger.scalars(values, self.progress.step)

    def end_of_epoch(self, logger: Logger) -> None:
        """At an epoch's end (or the run's, part-way through one): schedule, evaluation, best, checkpoint."""
        s, progress, best = self.s, self.progress, self.recipe.checkpoint.best
        epoch = progress.epoch
        finished = self._epoch_finished()
        if finished:
            progress.epoch, progress.batches_done, progress.samples_done = epoch + 1, 0, 0
        last = self.done()
        if finished and s.scheduler is not None and not s.schedule_per_step and not needs_metric(s.scheduler):
            s.scheduler.step()
        if (finished and due(self.recipe.eval.every_n_epochs, progress.epoch)) or last:
            self.metrics = evaluate(s.task, s.model, s.val_batches, self.runtime.device, s.mixed_precision)
            logger.scalars(self.metrics, progress.step)
            if finished and needs_metric(s.scheduler):
                s.scheduler.step(self.metrics["val/loss"])
            log.info(
                "epoch %d/%s  step %d  %s", epoch + 1, _known(s.planned_epochs), progress.step,
                _fmt({**self.metrics, **self.throughput}),
            )  # fmt: skip
            if best is not None and _improves(
                self.metrics[best.resolved_metric], progress.best, best_mode(s.task, best)
            ):
                progress.best, progress.best_step = self.metrics[best.resolved_metric], progress.step
                self.checkpoints.save(s, progress, best=True)
            if not last and self.stop is not None:
                if self.pruning.should_stop(self.metrics, progress.epoch, progress.step):
                    self.stop.reasons.add(PRUNED)  # rank 0's alone: the ranks agree on it after the next step
                self.stop.check_at_next_step()  # every rank, at this same step
        if self.checkpoints.due_at_epoch_end(progress, finished, last):
            self.checkpoints.save(s, progress)

    def summary(self) -> RunSummary:
        """The final and best metrics and the wall time, for people and for scripts (metrics.json)."""
        best, progress = self.recipe.checkpoint.best, self.progress
        summary = RunSummary(
            final={**self.metrics, "epoch": progress.epoch, "step": progress.step},
            best=None
            if best is None
            else BestResult(
                metric=best.resolved_metric,
                value=progress.best,
                step=progress.best_step,
                mode=best_mode(self.s.task, best),
            ),
            wall_time_s=round(time.perf_counter() - self.started, 3),
            memory=self._memory_at_end(),
            first_step_s=None if self.first_step_s is None else round(self.first_step_s, 3),
        )
        if self.runtime.is_main:
            summary.write(self.run.metrics)
        return summary

    def _memory_at_end(self) -> list[Memory] | None:
        """The figures of the first step, with each rank's peak memory by now (every rank calls it)."""
        peaks = gather(peak(self.runtime.device))
        if self.memory is None:
            return None
        return [
            Memory.model_validate({**m.model_dump(), **cast(dict, p)}) for m, p in zip(self.memory, peaks, strict=True)
        ]


def train(
    recipe: Recipe, runtime: Runtime, run: RunDir, resume_from: Path | None = None, stop: StopRequests | None = None
) -> RunSummary:
    """Train as the recipe says; return the final and best metrics (also written to metrics.json).

    `stop`: where the run may be asked to stop early (preemption, time limits); it then stops at
    a step all ranks agree on, checkpoints it and raises TrainingStopped.
    """
    trainer = Trainer(recipe, runtime, run, stop)
    if resume_from is not None:
        trainer.resume(resume_from)
    with compile_cache(run.compile_cache if recipe.train.compile is not None else None):
        return trainer.fit()


def load_resume_state(
    path: Path, storage: CheckpointStorage, template: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], Path]:
    """The state to resume from: `path`'s, or where that file is damaged, that of the newest
    complete checkpoint before it (with a warning); a UserError where there is none.
    `template`: this run's model and optimizer state, which a sharded checkpoint loads into."""
    older = (
        [p for p in checkpoint.saved_steps(path.parent) if p.name < path.name]
        if checkpoint.STEP_NAME.match(path.name)
        else []
    )
    for candidate in [path, *reversed(older)]:
        try:
            state = storage.load(candidate, template)
        except checkpoint.DamagedCheckpoint as damaged:
            log.warning("%s", damaged)
            continue
        if candidate != path:
            log.warning("resuming from the newest complete checkpoint before it instead: %s", candidate)
        return state, candidate
    raise UserError(f"cannot resume: {path} is damaged and no complete checkpoint comes before it")


def recipe_differences(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """'key: old -> new' for each value that differs between two resolved recipes (not where
    they run: a run submitted to SLURM can be resumed anywhere; nor the sweep a run belongs to;
    nor a key the older recipe does not have, now at a default that changes nothing: false, []
    or null, a setting added since that run started)."""
    found = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if f"{prefix}{key}" in ("slurm", "sweep") or (key not in before and (b is False or b in (None, [], {}))):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += recipe_differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "import_paths":
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def _improves(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def _known(count: int | None) -> int | str:
    return "?" if count is None else count


WHOLE_NUMBERS_FROM = 1e4  # throughputs: no decimals


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" if abs(v) < WHOLE_NUMBERS_FROM else f"{k} {v:.0f}" for k, v in metrics.items())
