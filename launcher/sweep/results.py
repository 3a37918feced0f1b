"""A sweep's results: each run's status and metrics, ranked, written to results.csv and sweep.json, and shown as a table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from launcher.config.yaml_io import read_yaml
from launcher.errors import UserError
from launcher.rundir import RunDir
from launcher.slurm import status
from launcher.sweep.planning import Sweep
from launcher.sweep.spec import Run
from launcher.tracking.readback import run_series
from launcher.training.pruning import read_pruned
from launcher.training.summary import RunSummary, read_summary

Status = Literal["finished", "pruned", "failed", "stopped", "running", "pending", "unfinished", "unknown"]


@dataclass(frozen=True)
class Outcome:
    """What became of a run that this command ran."""

    status: Literal["running", "finished", "failed", "stopped"]
    error: str | None = None


class ResultRow(BaseModel):
    """A run's row of results.csv/json. On disk a row is flat (`as_json`): the run's values (by
    recipe key) and its final metrics (by tag: val/loss) are columns of their own."""

    rank: int | None = None  # by the sweep's metric, best first; None without a finite value
    run: str
    status: Status
    params: dict[str, Any] = {}
    metrics: dict[str, int | float] = {}  # metrics.json's final metrics, without its epoch and step
    epochs: int | None = None
    steps: int | None = None
    best: float | None = None  # the best value of the sweep's metric, and the step it was measured at
    best_step: int | None = None
    wall_time_s: float | None = None
    error: str | None = None
    folder: str

    @staticmethod
    def columns(grid: Iterable[str], metrics: Iterable[str]) -> list[str]:
        """results.csv's columns: the run's values and its final metrics between its status and epochs."""
        return ["rank", "run", "status", *grid, *metrics, "epochs", "steps", "best", "best_step", "wall_time_s", "error", "folder"]  # fmt: skip

    def as_json(self, grid: Iterable[str], metrics: Iterable[str]) -> dict[str, Any]:
        """The row as results.json holds it (flat, every column, None where it has no value)."""
        grid, metrics = list(grid), list(metrics)
        values = {
            **self.model_dump(exclude={"params", "metrics"}),
            **{key: self.params.get(key) for key in grid},
            **{tag: self.metrics.get(tag) for tag in metrics},
        }
        return {column: values[column] for column in self.columns(grid, metrics)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> ResultRow:
        """A row of results.json read back: the metrics are the columns with a /, the values the other unnamed ones."""
        named = {key: value for key, value in row.items() if key in cls.model_fields}
        others = {key: value for key, value in row.items() if key not in cls.model_fields}
        metrics = {key: value for key, value in others.items() if "/" in key and value is not None}
        params = {key: value for key, value in others.items() if "/" not in key}
        return cls.model_validate({**named, "params": params, "metrics": metrics})


def run_status(
    folder: RunDir, outcome: Outcome | None = None, before: ResultRow | None = None
) -> tuple[Status, str | None]:
    """(status, error) of a run: from its files, what this command saw, SLURM, or the results written before."""
    if folder.metrics.exists():
        return "finished", None
    if (pruned := read_pruned(folder)) is not None:  # by its search (training/pruning.py)
        return "pruned", f"at epoch {pruned.epoch}: {pruned.metric} {pruned.value:.4f}"
    if outcome is not None:
        return outcome.status, outcome.error
    if (folder.path / "slurm" / "job.json").exists():
        return _slurm_status(folder)
    if before and before.status in ("failed", "stopped") and folder.path.is_dir():
        return before.status, before.error
    return ("unfinished", None) if folder.path.is_dir() else ("pending", None)


def _slurm_status(folder: RunDir) -> tuple[Status, str | None]:

    try:
        job = status.find_job(str(folder.path))
        state = status.job_state(job.job_id)["State"]
    except UserError as error:
        return "unknown", str(error)
    if state == "PENDING":
        return "pending", None
    if state == "UNKNOWN":
        return "unknown", f"job {job.job_id}: SLURM's accounting does not know it"
    if state not in status.ENDED:
        return "running", None
    failures = status.failures(job)
    return "failed", f"job {job.job_id} {state}" + (f": {failures[0].splitlines()[-1].strip()}" if failures else "")


def result_row(sweep: Sweep, run: Run, outcome: Outcome | None = None, before: ResultRow | None = None) -> ResultRow:
    """A run's row of results.csv/json: its values, status, final metrics (metrics.json), the best
    value of the sweep's metric and its step (from TensorBoard, so unfinished runs have one too)."""

    folder = sweep.run_dir(run)
    status, error = run_status(folder, outcome, before)
    summary = read_summary(folder.metrics)
    final = dict(summary.final) if summary else {}
    epochs, steps = final.pop("epoch", None), final.pop("step", None)
    best_step, best = _best(sweep, folder, summary)
    return ResultRow(
        run=run.name, status=status, params=run.params, metrics=final, epochs=epochs, steps=steps, best=best,
        best_step=best_step, wall_time_s=summary.wall_time_s if summary else None, error=error, folder=str(folder.path.resolve()),
    )  # fmt: skip


def _best(sweep: Sweep, folder: RunDir, summary: RunSummary | None) -> tuple[int | None, float | None]:
    """(step, value) of the sweep's metric at its best: metrics.json's best where it is the sweep's, else TensorBoard's (or metrics.csv's)."""
    kept = summary.best if summary else None
    followed = kept and (kept.mode or _mode_of(folder))
    if kept and kept.metric == sweep.metric and kept.value is not None and followed == sweep.mode:
        return kept.step, kept.value  # exact, where TensorBoard holds float32
    series = [
        point
        for point in run_series(folder.tensorboard(None), folder.metrics_csv).get(sweep.metric, [])
        if math.isfinite(point[1])
    ]
    pick = max if sweep.mode == "max" else min
    return pick(series, key=lambda point: point[1]) if series else (None, None)


def _mode_of(folder: RunDir) -> str | None:
    """checkpoint.best.mode of the run's recipe.yaml, for a metrics.json that does not say which
    way its best went (written before it did; the recipe's validator then filled mode in)."""
    best = (read_yaml(folder.recipe).get("checkpoint") or {}).get("best") if folder.recipe.exists() else None
    return best.get("mode") if isinstance(best, dict) else None


def ranked(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of results.json best first by the sweep's final metric (setting each one's rank);
    those without a finite one after (a diverged run's NaN is not the best loss), in grid order."""

    def measured(row: dict[str, Any]) -> bool:
        return isinstance(row.get(sweep.metric), (int, float)) and math.isfinite(row[sweep.metric])

    best_first = sorted(filter(measured, rows), key=lambda row: row[sweep.metric], reverse=sweep.mode == "max")
    for rank, row in enumerate(best_first, 1):
        row["rank"] = rank
    return best_first + [row for row in rows if not measured(row)]


def write_results(sweep: Sweep, rows: list[ResultRow]) -> list[ResultRow]:
    """results.json and results.csv, the rows in grid order; returns the rows with their rank."""
    metrics = sorted({tag for row in rows for tag in row.metrics if "/" in tag})
    on_disk = [row.as_json(sweep.grid, metrics) for row in rows]
    ranked(sweep, on_disk)
    (sweep.folder / "results.json").write_text(json.dumps(on_disk, indent=2) + "\n")
    with (sweep.folder / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ResultRow.columns(sweep.grid, metrics))
        writer.writeheader()
        for row in on_disk:
            writer.writerow(
                {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()}
            )
    return [row.model_copy(update={"rank": flat["rank"]}) for row, flat in zip(rows, on_disk, strict=True)]


def previous_rows(sweep: Sweep) -> dict[str, ResultRow]:
    """The rows of the results.json written before, by run name: the errors of runs that failed then."""
    path = sweep.folder / "results.json"
    if not path.exists():
        return {}
    try:
        rows = [ResultRow.from_json(row) for row in json.loads(path.read_text())]
    except ValidationError as error:
        raise UserError(
            f"{path}: not a results.json as launch sweep writes it ({error.error_count()} problems); delete it to have it written again"
        ) from None
    return {row.run: row for row in rows}


def show_results(sweep: Sweep) -> int:
    """`launch sweep SWEEP_FOLDER`, and the end of `--slurm --wait`: rewrite the results from what
    is there now, print the table; 0 if every run finished."""
    sweep.write()  # its metric and mode: those of the results
    before = previous_rows(sweep)
    rows = write_results(sweep, [result_row(sweep, run, before=before.get(run.name)) for run in sweep.runs])
    print_table(sweep, rows)
    return 0 if all(row.status == "finished" for row in rows) else 1


def print_table(sweep: Sweep, rows: list[ResultRow], kind: str = "sweep") -> None:
    """The runs best first by the sweep's metric, then where the results are and how to compare the curves."""
    counts = {status: sum(row.status == status for row in rows) for status in dict.fromkeys(row.status for row in rows)}
    print(f"\n{kind} {sweep.folder}: {len(rows)} runs, " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"by {sweep.metric} ({sweep.mode}), best first:")
    metrics = [
        sweep.metric,
        *sorted({tag for row in rows for tag in row.metrics if "/" in tag and tag != sweep.metric}),
    ]
    header = ["#", "run", "status", *metrics, f"best {sweep.metric} (step)", "epochs", "time"]
    table = [header]
    # In rank order (write_results ranked them), the unranked ones after in grid order.
    for row in sorted(rows, key=lambda row: (row.rank is None, row.rank or 0)):
        best = f"{row.best:.4f} ({row.best_step})" if row.best is not None else "-"
        time_s = f"{row.wall_time_s:.1f} s" if row.wall_time_s is not None else "-"
        cells = [str(row.rank or "-"), row.run, row.status, *(_number(row.metrics.get(m)) for m in metrics)]
        table.append([*cells, best, _number(row.epochs), time_s])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in rows:
        if row.error:
            print(f"  {row.run}: {row.status}: {row.error}")
    print(f"results:     {sweep.folder / 'results.csv'}, {sweep.folder / 'results.json'}")
    print(f"TensorBoard: tensorboard --logdir {sweep.folder}")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
