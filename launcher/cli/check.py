"""`launch check`, and the recipe checks that need the components themselves (names, arguments, files)."""

from __future__ import annotations

import time

import torch
import yaml

from launcher.config.schema import Recipe
from launcher.data.streaming import sample_count
from launcher.distributed.runtime import single_process
from launcher.models.build import count_parameters
from launcher.training.setup import describe_targets, setup


def check(recipe: Recipe) -> int:
    """Validate, build what training builds, run one forward/backward step, and say what was built."""

    started = time.perf_counter()
    print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
    s = setup(
        recipe.model_copy(update={"data": recipe.data.model_copy(update={"num_workers": 0})}), single_process(True)
    )
    batch = next(iter(s.train_batches))
    step = s.task.step(s.model, batch)
    loss, outputs = step.loss, step.outputs
    loss.backward()
    total, trainable = count_parameters(s.net)
    print(
        f"# data: {sample_count(s.data.train)} training / {sample_count(s.data.val)} validation samples, {describe_targets(recipe, s.data.info)}"
    )
    print(f"# model: {recipe.model.name}, {total:,} parameters ({trainable:,} trainable)")
    print(f"# one batch: {_batch_shapes(batch)}, outputs {_shape(outputs)}")
    print(f"# one forward/backward step: loss {loss.item():.4f}, finite: {bool(torch.isfinite(loss))}")
    print(
        f"# {s.planned_epochs or '?'} epochs of {s.steps_per_epoch or '?'} steps, {s.planned_steps} steps in all; ok in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _batch_shapes(batch: object) -> str:
    """`inputs [16, 1, 8, 8] float32, targets [16] int64` for an (inputs, targets) pair; each
    key's or position's shape for another structure."""
    if isinstance(batch, list | tuple) and len(batch) == 2:  # noqa: PLR2004 (a pair)
        return f"inputs {_shape(batch[0])}, targets {_shape(batch[1])}"
    if isinstance(batch, dict):
        return ", ".join(f"{key} {_shape(value)}" for key, value in batch.items())
    if isinstance(batch, list | tuple):
        return ", ".join(f"[{i}] {_shape(value)}" for i, value in enumerate(batch))
    return _shape(batch)


def _shape(value: object) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    return f"{list(shape)} {str(dtype).removeprefix('torch.')}" if shape is not None else type(value).__name__
