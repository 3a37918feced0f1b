"""Where a run stands (saved in every checkpoint), and whether it has trained all it should."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.config.schema import Train


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (or the next one, at an epoch boundary)
    batches_done: int = 0  # batches of `epoch` already trained on, by each rank
    samples_done: int = 0  # samples of `epoch` trained on, by all ranks: the position for another world size
    step: int = 0  # optimizer steps taken
    best: float | None = None  # the best value of checkpoint.best.metric so far
    best_step: int | None = None


def is_complete(progress: Progress, cfg: Train) -> bool:
    """Whether a run at `progress` has trained all that train.epochs and train.max_steps ask for.
    In epochs and steps as they are counted, whatever the world size was along the way."""
    by_epochs = cfg.epochs is not None and progress.epoch >= cfg.epochs
    return by_epochs or (cfg.max_steps is not None and progress.step >= cfg.max_steps)


def longer_run(progress: Progress, cfg: Train) -> str:
    """The override that gives a complete run more to do: the bound (or bounds) that ended it, raised."""
    raised = []
    if cfg.epochs is not None and progress.epoch >= cfg.epochs:
        raised.append(f"train.epochs={progress.epoch + 10}")
    if cfg.max_steps is not None and progress.step >= cfg.max_steps:
        raised.append(f"train.max_steps={progress.step * 2}")
    return " ".join(raised)


def due(every: int | None, count: int) -> bool:
    return every is not None and every > 0 and count % every == 0
