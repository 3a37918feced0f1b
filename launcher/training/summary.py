"""A run's summary: what `train()` returns and what metrics.json holds, for people and for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from launcher.training.memory import Memory


class BestResult(BaseModel):
    """best.pt's metric, its value and the step it was saved at (null values: never evaluated),
    and whether it followed the metric's maximum or minimum (null in files written before it was kept)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    value: float | None
    step: int | None
    mode: Literal["max", "min"] | None = None


class RunSummary(BaseModel):
    """metrics.json: the last evaluation's metrics with the epoch and step it ended at, the best
    result where checkpoint.best is set, the wall time of this process's training, how long its
    first step took (compiling, with train.compile; null in files written before it was kept, and
    where this process took no step), and each rank's memory (what training holds after its first
    step, and the process's peak at the end; absent in files written before it was kept)."""

    model_config = ConfigDict(extra="forbid")

    final: dict[str, int | float]  # val/loss, val/acc1, ... then epoch and step (ints)
    best: BestResult | None
    wall_time_s: float
    memory: list[Memory] | None = None
    first_step_s: float | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The measured metrics of `final`, without its epoch and step."""
        return {k: float(v) for k, v in self.final.items() if k not in ("epoch", "step")}

    def write(self, path: Path) -> None:
        # json.dumps, not model_dump_json: a diverged run's NaN loss stays NaN (pydantic writes null).
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls.model_validate(json.loads(path.read_text()))


def read_summary(path: Path) -> RunSummary | None:
    """The summary in metrics.json at `path`, or None where the run has not finished (no file)."""
    return RunSummary.read(path) if path.exists() else None
