"""A run's scalars read back, whichever trackers it logged to: TensorBoard's event files where
it wrote some, else its metrics.csv (for launch status, sweep results and launch report)."""

from __future__ import annotations

from pathlib import Path

from launcher.tracking.metrics_csv import csv_series
from launcher.tracking.tensorboard import scalar_series

Series = dict[str, list[tuple[int, float]]]


def run_series(tensorboard_dir: Path, metrics_csv: Path) -> Series:
    """Every scalar series a run logged, tag -> [(step, value), ...]: TensorBoard's, else metrics.csv's; {} before any."""
    return scalar_series(tensorboard_dir) or csv_series(metrics_csv)
