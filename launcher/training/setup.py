"""Everything the loop works with, built from the recipe: data, model, loss, optimizer, schedule."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from launcher.config import components
from launcher.config.schema import Recipe
from launcher.data.build import Datasets, build_datasets
from launcher.data.datasets import DataInfo, num_samples
from launcher.data.loaders import StreamBatches, eval_loader, train_loader
from launcher.distributed.runtime import Runtime, autocast, make_deterministic, reuse_freed_memory
from launcher.distributed.wrapper import DataParallel, FullyShard, ModelWrapper
from launcher.errors import UserError
from launcher.models.activation_checkpointing import apply_activation_checkpointing
from launcher.models.build import build_model
from launcher.training.compilation import compile_model
from launcher.training.optim import (
    LENGTH_ARGUMENTS,
    SCHEDULER,
    EndsWithRun,
    build_loss,
    build_optimizer,
    build_scheduler,
)
from launcher.training.task import Task, metric_tags
from launcher.training.tasks import build_task, wants_classes

log = logging.getLogger("launcher")


@dataclass
class Setup:
    """Everything the loop works with, built from the recipe (also by `launch check`)."""

    data: Datasets
    train_batches: DataLoader | StreamBatches
    val_batches: DataLoader
    net: torch.nn.Module  # the model itself: what checkpoints hold
    model: torch.nn.Module  # what the loop calls: the model, its DDP wrapper, or (FSDP) the sharded model itself
    task: Task  # a batch's loss, the evaluation's metrics
    wrapper: ModelWrapper  # how `model` spreads `net` over the ranks
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule_ends: list[EndsWithRun]  # those in it that end with the run (stretched for another world size)
    scaler: torch.amp.GradScaler
    mixed_precision: contextlib.AbstractContextManager
    batches_per_epoch: int | None  # a whole epoch's, per rank (a resumed one yields fewer); None: a stream's
    steps_per_epoch: int | None  # a stream's: from its len, None where it has none
    planned_epochs: int | None  # at setup, for this world size: the bars' and the logs' epoch count (None: unknown)
    planned_steps: int  # at setup: a per-step schedule's length
    schedule_per_step: bool  # the schedule steps after every optimizer step (else after each epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.training_state(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def training_state(self) -> dict[str, Any]:
        """The model's and the optimizer's state alone: what a sharded checkpoint loads into."""
        model, optimizer = self.wrapper.state_dicts(self.net, self.optimizer)
        return {"model": model, "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wrapper.load_state_dicts(self.net, self.optimizer, state["model"], state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(recipe: Recipe, runtime: Runtime) -> Setup:
    """Build data, model, loss, optimizer and schedule; fail here, before training, if they don't fit."""
    cfg, device = recipe.train, runtime.device
    make_deterministic(cfg.deterministic)
    if cfg.reuse_freed_memory:
        reuse_freed_memory()
    seed_everything(cfg.seed + runtime.rank)
    data = build_datasets(recipe.data, seed=cfg.seed, classes=wants_classes(recipe.task))
    pin = recipe.data.pin_memory if recipe.data.pin_memory is not None else device.type == "cuda"
    train_batches = train_loader(
        data.train, recipe.data, batch_size=cfg.batch_size, drop_last=cfg.drop_last,
        seed=cfg.seed, rank=runtime.rank, world_size=runtime.world_size, pin=pin,
    )  # fmt: skip
    val_batches = eval_loader(
        data.val, recipe.data, batch_size=recipe.eval.batch_size or cfg.batch_size, pin=pin,
        rank=runtime.rank, world_size=runtime.world_size,
    )  # fmt: skip
    batches_per_epoch, steps_per_epoch = _epoch_length(recipe, train_batches, data, runtime.world_size)
    task = build_task(recipe.task, recipe.eval.metrics, build_loss(recipe.loss).to(device), data.info)
    best = recipe.checkpoint.best
    if best is not None and best.resolved_metric not in (measured := metric_tags(task)):
        raise UserError(
            f"checkpoint.best.metric={best.metric} is not measured here ({describe_targets(recipe, data.info)}, "
            f"eval.metrics={recipe.eval.metrics}); choose one of {', '.join(measured)}"
        )

    net = build_model(recipe.model, data.info).to(device)
    net = _channels_last(net, recipe)
    apply_activation_checkpointing(net, recipe.model.activation_checkpointing)  # then compile, then wrap
    per_block = recipe.distributed.fsdp.shard if recipe.distributed.strategy == "fsdp" else []
    compile_model(net, cfg.compile, per_block=per_block or None)  # FSDP: each unit compiled, then sharded
    wrapper: ModelWrapper = (
        FullyShard(runtime, recipe.distributed.fsdp, cfg.precision, recipe.distributed.sync_batchnorm)
        if recipe.distributed.strategy == "fsdp"
        else DataParallel(runtime, recipe.distributed.sync_batchnorm)
    )
    model = wrapper.wrap(net)
    optimizer = build_optimizer(recipe.optimizer, net)
    if recipe.distributed.scale_lr and runtime.world_size > 1:
        for group in optimizer.param_groups:  # the linear scaling rule: the recipe's lr is for one worker
            group["lr"] *= runtime.world_size
    epochs = _epochs(cfg.epochs, cfg.max_steps, steps_per_epoch)
    max_steps = (
        min(cfg.max_steps or epochs * steps_per_epoch, epochs * steps_per_epoch)
        if epochs is not None and steps_per_epoch is not None
        else cfg.max_steps or 0  # a stream with no length: train.max_steps, which it requires
    )
    schedule_per_step = recipe.scheduler is not None and recipe.scheduler.interval == "step"
    scheduler, ends = build_scheduler(
        recipe.scheduler, optimizer, length=max_steps if schedule_per_step else _length_in_epochs(recipe, epochs)
    )
    return Setup(
        data=data, train_batches=train_batches, val_batches=val_batches, net=net, model=model, task=task, wrapper=wrapper,
        optimizer=optimizer, scheduler=scheduler, schedule_ends=ends,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda"),
        mixed_precision=autocast(cfg.precision, device), batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch, planned_epochs=epochs, planned_steps=max_steps, schedule_per_step=schedule_per_step,
    )  # fmt: skip


def _channels_last(net: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """With train.channels_last, the model in that memory layout; under FSDP the batches only:
    FSDP2 shards contiguous parameters only, and a convolution runs channels-last when its
    input is."""
    if not recipe.train.channels_last:
        return net
    if recipe.distributed.strategy == "fsdp":
        log.info("train.channels_last with FSDP: the image batches channels-last, the parameters as they are")
        return net
    return net.to(memory_format=torch.channels_last)


def describe_targets(recipe: Recipe, info: DataInfo) -> str:
    if recipe.task.name == "classification":
        return f"{info.num_classes} classes"
    if info.vocab_size is not None:
        return f"a vocabulary of {info.vocab_size} tokens, blocks of {info.input_shape[-1]}"
    return f"task {recipe.task.name}"


def _epochs(epochs: int | None, max_steps: int | None, steps_per_epoch: int | None) -> int | None:
    by_steps = math.ceil(max_steps / steps_per_epoch) if max_steps and steps_per_epoch else None
    return min((n for n in (epochs, by_steps) if n is not None), default=None)


def _epoch_length(
    recipe: Recipe, train_batches: DataLoader | StreamBatches, data: Datasets, world_size: int
) -> tuple[int | None, int | None]:
    """(batches an epoch holds, per rank; optimizer steps it takes). A stream's epoch ends where
    the first rank's stream does: no batch count, and the steps its len says (an accumulation
    window the stream's end cuts short is dropped), None where it has no len."""
    cfg = recipe.train
    stream = isinstance(train_batches, StreamBatches)
    batches = train_batches.estimated_len() if isinstance(train_batches, StreamBatches) else len(train_batches)
    if batches is None:
        if cfg.max_steps is None:
            raise UserError(
                f"data.dataset: {recipe.data.dataset.name} is a stream with no length (an IterableDataset without "
                "__len__), so its epochs cannot be counted ahead: set train.max_steps (an epoch is one pass of it)"
            )
        return None, None
    if batches == 0:
        raise UserError(
            f"no full training batch: {num_samples(data.train)} samples{' (its len)' if stream else ''} over "
            f"{world_size} process(es), train.batch_size={cfg.batch_size}; lower the batch size or set "
            "train.drop_last=false"
        )
    if cfg.grad_accum_steps > batches:
        raise UserError(
            f"train.grad_accum_steps={cfg.grad_accum_steps} is more than the {batches} batches of an epoch "
            "(per process): an optimizer step cannot span epochs"
        )
    if stream:
        return None, batches // cfg.grad_accum_steps
    return batches, math.ceil(batches / cfg.grad_accum_steps)


def _length_in_epochs(recipe: Recipe, epochs: int | None) -> int:
    """A per-epoch schedule's length: the run's epochs. A stream with no length and no
    train.epochs has no count of them: a schedule that needs one (T_max...) is refused."""
    section = recipe.scheduler
    if epochs is not None or section is None:
        return epochs or 0
    parameters = components.parameters_of(components.resolve(section.name, SCHEDULER)) or {}
    if needed := [
        name
        for name in LENGTH_ARGUMENTS
        if name in parameters
        and name not in section.kwargs
        and parameters[name].default in (inspect.Parameter.empty, None)
    ]:
        raise UserError(
            f"scheduler: {section.name} per epoch needs its length ({needed[0]}), and this stream's epochs cannot be "
            f"counted: set train.epochs, scheduler.{needed[0]}, or scheduler.interval=step (its length is then "
            "train.max_steps)"
        )
    return 0  # unused: the schedule takes no length
