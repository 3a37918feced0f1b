"""metrics.csv: rank 0's scalars as a table, one row per logged step, no dependency; and reading it back.

The table is wide, as `pandas.read_csv(path, index_col="step")` expects: a column `step`, then
one column per tag in the order the tags were first logged (train/loss, train/lr, ..., val/acc1);
a cell is empty where that tag was not logged at that step (evaluation runs once an epoch). A tag
seen for the first time rewrites the file with the new column (a few times a run).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

STEP = "step"


class CsvTracker:
    """metrics.csv in the run folder. A row is written once its step is over (the training
    scalars and the evaluation of one step share it). `resume_step`: rows a crashed run wrote
    after it are dropped, so that no step appears twice."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        kept = _read_rows(path) if resume_step is not None else []
        self.rows = [row for row in kept if resume_step is not None and int(row[STEP]) <= resume_step]
        self.columns = list(dict.fromkeys(key for row in self.rows for key in row)) or [STEP]
        self.pending: dict[str, Any] | None = None
        if resume_step is not None:
            self._rewrite()

    def run_id(self) -> str | None:
        return None  # the file is in the run folder, found again by a resumed run

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.pending is not None and self.pending[STEP] != step:
            self._write(self.pending)
            self.pending = None
        if self.pending is None:
            self.pending = {STEP: step}
        self.pending.update(values)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
        pass  # the recipe and metrics.json are in the same folder

    def close(self) -> None:
        if self.pending is not None:
            self._write(self.pending)
            self.pending = None

    def _write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new = [key for key in row if key not in self.columns]
        if new or not self.path.exists():
            self.columns += new
            self._rewrite()
            return
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)

    def _rewrite(self) -> None:
        partial = self.path.with_name(f".{self.path.name}.partial")
        with partial.open("w", newline="") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        partial.replace(self.path)  # a reader (launch status) never sees half a table


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def csv_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every series in a metrics.csv, tag -> [(step, value), ...] (as scalar_series reads TensorBoard's); {} where there is no file."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in _read_rows(path):
        step = int(row.pop(STEP))
        for tag, value in row.items():
            series.setdefault(tag, []).append((step, float(value)))
    return {tag: series[tag] for tag in sorted(series)}
