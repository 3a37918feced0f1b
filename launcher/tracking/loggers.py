"""What the training loop logs to (the Logger seam), and the logger of ranks other than 0, which does nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import torch


T = TypeVar("T")


class Logger(Protocol):
    def progress(self, batches: Iterable[T], total: int | None, done: int, description: str) -> Iterable[T]: ...
    def scalars(self, values: dict[str, float], step: int) -> None: ...
    def histograms(self, model: torch.nn.Module, step: int) -> None: ...
    def image_grid(self, tag: str, images: torch.Tensor, step: int) -> None: ...
    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
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

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
