"""What the training loop logs to (the Logger seam), what rank 0's logger fans out to (the
Tracker seam: TensorBoard, metrics.csv, MLflow, W&B), and the logger of ranks other than 0,
which does nothing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import torch


T = TypeVar("T")


class Logger(Protocol):
    def progress(self, batches: Iterable[T], total: int | None, done: int, description: str) -> Iterable[T]: ...
    def scalars(self, values: dict[str, float], step: int) -> None: ...
    def histograms(self, model: torch.nn.Module, step: int) -> None: ...
    def image_grid(self, tag: str, images: torch.Tensor, step: int) -> None: ...
    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
    def run_ids(self) -> dict[str, str]: ...
    def close(self) -> None: ...


class Tracker(Protocol):
    """One place rank 0's scalars go. Each is opened with the step a resumed run goes on from
    (None for a new run) and the id its earlier part had (run_id()), and logs no step twice."""

    def run_id(self) -> str | None:
        """What a resumed run reopens (kept in the checkpoint); None: nothing to reopen (files in the run folder)."""
        ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
        """At the end of a complete run: the flattened recipe, the final metrics, the files to keep (artifacts)."""
        ...

    def close(self) -> None: ...


class NullLogger:
    """The logger of every rank but 0."""

    def progress(self, batches: Iterable[T], total: int | None, done: int, description: str) -> Iterable[T]:
        return batches

    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        pass

    def image_grid(self, tag: str, images: torch.Tensor, step: int) -> None:
        pass

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def run_ids(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A resolved recipe as dotted keys (`optimizer.lr`): scalars as they are, lists and other values as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value)
    return flat
