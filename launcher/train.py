"""The training loop, read top to bottom: setup, the epoch loop, evaluation and checkpoints, teardown."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from launcher import checkpoint
from launcher.data import build_datasets, eval_loader, start_epoch, train_loader
from launcher.errors import UserError
from launcher.evaluate import evaluate
from launcher.logs import Logger, NullLogger, RunLogger
from launcher.models import build_model, count_parameters
from launcher.optim import build_loss, build_optimizer, build_scheduler, needs_metric
from launcher.recipe import Recipe
from launcher.rundir import RunDir
from launcher.runtime import Runtime, autocast

log = logging.getLogger("launcher")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (or the next one, at an epoch boundary)
    batches_done: int = 0  # batches of `epoch` already trained on
    step: int = 0  # optimizer steps taken
    best: float | None = None  # the best value of checkpoint.best.metric so far
    best_step: int | None = None


@dataclass
class Trainables:
    """Everything whose state a checkpoint carries besides the progress and the random generators."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(recipe: Recipe, runtime: Runtime, run: RunDir, resume_from: Path | None = None) -> dict[str, Any]:
    """Train as the recipe says; return the final and best metrics (also written to metrics.json)."""
    started = time.perf_counter()
    cfg, device = recipe.train, runtime.device
    seed_everything(cfg.seed + runtime.rank)

    # --- setup: data, model, loss, optimizer, schedule ---
    data = build_datasets(recipe.data, seed=cfg.seed)
    pin = recipe.data.pin_memory if recipe.data.pin_memory is not None else device.type == "cuda"
    train_batches = train_loader(
        data.train, recipe.data, batch_size=cfg.batch_size, drop_last=cfg.drop_last,
        seed=cfg.seed, rank=runtime.rank, world_size=runtime.world_size, pin=pin,
    )  # fmt: skip
    val_batches = eval_loader(data.val, recipe.data, batch_size=recipe.eval.batch_size or cfg.batch_size, pin=pin)
    batches_per_epoch = len(train_batches)  # a whole epoch's; a resumed epoch yields fewer
    if batches_per_epoch == 0:
        raise UserError(
            f"no full training batch: {len(data.train)} samples, train.batch_size={cfg.batch_size}; "
            "lower the batch size or set train.drop_last=false"
        )
    model = build_model(recipe.model, data.info).to(device)
    loss_fn = build_loss(recipe.loss).to(device)
    optimizer = build_optimizer(recipe.optimizer, model.parameters())
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    epochs = _epochs(cfg.epochs, cfg.max_steps, steps_per_epoch)
    max_steps = min(cfg.max_steps or math.inf, epochs * steps_per_epoch)
    per_step = recipe.scheduler is not None and recipe.scheduler.interval == "step"
    scheduler = build_scheduler(recipe.scheduler, optimizer, length=int(max_steps) if per_step else epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    mixed_precision = autocast(cfg.precision, device)
    topk = tuple(k for k in (1, 5) if f"acc{k}" in recipe.eval.metrics and k <= data.info.num_classes)
    best = recipe.checkpoint.best
    if best is not None and best.metric not in ["val/loss", *(f"val/acc{k}" for k in topk)]:
        raise UserError(f"checkpoint.best.metric={best.metric} is not measured for this run (eval.metrics, class count)")

    trainables = Trainables(model, optimizer, scheduler, scaler)
    progress = Progress()

    def save(name: str | None = None) -> None:
        """Rank 0 writes a checkpoint; step checkpoints beyond the last K are deleted."""
        if not runtime.is_main:
            return
        state = {
            **trainables.state_dict(),
            "progress": asdict(progress),
            "rng": checkpoint.rng_states(),
            "data": asdict(data.info),
            "recipe": recipe.to_dict(),
        }
        checkpoint.save(state, run.checkpoints / name if name else checkpoint.step_path(run.checkpoints, progress.step))
        for stuck in checkpoint.prune(run.checkpoints, recipe.checkpoint.keep_last):
            log.warning("could not delete the old checkpoint %s; training goes on", stuck)

    if resume_from is not None:
        state = checkpoint.load(resume_from)
        trainables.load_state_dict(state)
        checkpoint.restore_rng_states(state["rng"])
        progress = Progress(**state["progress"])
        log.info("resumed from %s at epoch %d, step %d", resume_from, progress.epoch + 1, progress.step)
    logger: Logger = (
        RunLogger(run.tensorboard(recipe.logging.tensorboard_dir), resume_step=progress.step if resume_from else None)
        if runtime.is_main
        else NullLogger()
    )
    total, trainable = count_parameters(model)
    log.info(
        "%d training / %d validation samples, %d classes; %s: %s parameters (%s trainable) on %s",
        len(data.train), len(data.val), data.info.num_classes, recipe.model.name, f"{total:,}", f"{trainable:,}", device,
    )  # fmt: skip
    log.info(
        "batch %d per process x %d process(es) x %d accumulation = %d per step; %d steps per epoch, %d epochs",
        cfg.batch_size, runtime.world_size, cfg.grad_accum_steps,
        cfg.batch_size * runtime.world_size * cfg.grad_accum_steps, steps_per_epoch, epochs,
    )  # fmt: skip

    metrics: dict[str, float] = {}
    model.train()
    try:
        # --- the epoch loop ---
        while progress.epoch < epochs and progress.step < max_steps:
            epoch = progress.epoch
            start_epoch(train_batches, epoch, skip_batches=progress.batches_done)
            window_loss, window_batches, window_samples = torch.zeros((), device=device), 0, 0
            window_start = time.perf_counter()
            batches = logger.progress(train_batches, total=batches_per_epoch, done=progress.batches_done, description=f"epoch {epoch + 1}/{epochs}")
            for inputs, targets in batches:
                if progress.step == 0 and progress.batches_done == 0 and recipe.logging.image_grid:
                    logger.image_grid("train/batch", inputs, step=0)
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with mixed_precision:
                    loss = loss_fn(model(inputs), targets)
                # Accumulated gradients are a sum: divide so an accumulated step equals one big batch.
                scaler.scale(loss / cfg.grad_accum_steps).backward()
                progress.batches_done += 1
                window_loss += loss.detach()
                window_batches += 1
                window_samples += len(targets)
                if progress.batches_done % cfg.grad_accum_steps and progress.batches_done < batches_per_epoch:
                    continue

                # --- one optimizer step ---
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                progress.step += 1
                if per_step:
                    scheduler.step()
                if recipe.logging.histograms and (progress.batches_done == batches_per_epoch or progress.step == max_steps):
                    logger.histograms(model, progress.step)  # at an epoch's last step, while the gradients exist
                optimizer.zero_grad(set_to_none=True)

                if progress.step % recipe.logging.every_n_steps == 0:
                    seconds = time.perf_counter() - window_start
                    values = {
                        "train/loss": (window_loss / window_batches).item(),
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/samples_per_s": window_samples * runtime.world_size / max(seconds, 1e-9),
                    }
                    logger.scalars(values, progress.step)
                    log.debug("step %d: %s", progress.step, values)
                    window_loss, window_batches, window_samples = torch.zeros((), device=device), 0, 0
                    window_start = time.perf_counter()
                if _due(recipe.checkpoint.every_n_steps, progress.step) and progress.batches_done < batches_per_epoch:
                    save()  # mid-epoch; at the end of an epoch the save below covers this step
                if progress.step >= max_steps:
                    break

            # --- end of epoch: schedule, evaluation, checkpoint ---
            finished = progress.batches_done >= batches_per_epoch
            progress.epoch, progress.batches_done = (epoch + 1, 0) if finished else (epoch, progress.batches_done)
            last = progress.epoch >= epochs or progress.step >= max_steps
            if scheduler is not None and not per_step and not needs_metric(scheduler):
                scheduler.step()
            if _due(recipe.eval.every_n_epochs, progress.epoch) or last:
                metrics = evaluate(model, val_batches, loss_fn, device, mixed_precision, topk)
                logger.scalars(metrics, progress.step)
                if needs_metric(scheduler):
                    scheduler.step(metrics["val/loss"])
                log.info("epoch %d/%d  step %d  %s", epoch + 1, epochs, progress.step, _fmt(metrics))
                if best is not None and _improves(metrics[best.metric], progress.best, best.mode):
                    progress.best, progress.best_step = metrics[best.metric], progress.step
                    save(checkpoint.BEST)
            step_due = _due(recipe.checkpoint.every_n_steps, progress.step)
            if _due(recipe.checkpoint.every_n_epochs, progress.epoch) or step_due or last:
                save()

        # --- the end: summary for people and for scripts ---
        summary = {
            "final": {**metrics, "epoch": progress.epoch, "step": progress.step},
            "best": None if best is None else {"metric": best.metric, "value": progress.best, "step": progress.best_step},
            "wall_time_s": round(time.perf_counter() - started, 3),
        }
        if runtime.is_main:
            run.metrics.write_text(json.dumps(summary, indent=2) + "\n")
        logger.hparams(_flat_hparams(recipe.to_dict()), metrics)
        return summary
    finally:
        logger.close()


def _epochs(epochs: int | None, max_steps: int | None, steps_per_epoch: int) -> int:
    by_steps = math.ceil(max_steps / steps_per_epoch) if max_steps else None
    return min(n for n in (epochs, by_steps) if n is not None)


def _improves(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _due(every: int | None, count: int) -> bool:
    return bool(every) and count % every == 0


def _flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Recipe values as TensorBoard hparams: scalars as they are, anything else as text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value)
    return flat
