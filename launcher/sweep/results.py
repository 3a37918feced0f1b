"""A sweep's results: each run's status and metrics, ranked, written to results.csv and sweep.json, and shown as a table."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from launcher.config.yaml_io import read_yaml
from launcher.errors import UserError
from launcher.rundir import RunDir
from launcher.slurm import status
from launcher.sweep.planning import Run, Sweep
from launcher.tracking.tensorboard import scalar_series

log = logging.getLogger("launcher")


@dataclass(frozen=True)
class Outcome:
    """What became of a run that this command ran."""

    status: str  # running, finished, failed or stopped
    error: str | None = None


def run_status(
    folder: RunDir, outcome: Outcome | None = None, before: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """(status, error) of a run: from its files, what this command saw, SLURM, or the results written before."""
    if folder.metrics.exists():
        return "finished", None
    if outcome is not None:
        return outcome.status, outcome.error
    if (folder.path / "slurm" / "job.json").exists():
        return _slurm_status(folder)
    if before and before.get("status") in ("failed", "stopped") and folder.path.is_dir():
        return before["status"], before.get("error")
    return ("unfinished", None) if folder.path.is_dir() else ("pending", None)


def _slurm_status(folder: RunDir) -> tuple[str, str | None]:

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


def result_row(
    sweep: Sweep, run: Run, outcome: Outcome | None = None, before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A run's row of results.csv/json: its values, status, final metrics (metrics.json), the best
    value of the sweep's metric and its step (from TensorBoard, so unfinished runs have one too)."""

    folder = sweep.run_dir(run)
    status, error = run_status(folder, outcome, before)
    summary = json.loads(folder.metrics.read_text()) if folder.metrics.exists() else {}
    final = dict(summary.get("final") or {})
    epochs, steps = final.pop("epoch", None), final.pop("step", None)
    kept = summary.get("best") or {}
    if kept.get("metric") == sweep.metric and kept.get("value") is not None and _mode_of(folder) == sweep.mode:
        best_step, best = kept["step"], kept["value"]  # exact, where TensorBoard holds float32
    else:
        series = [
            point for point in scalar_series(folder.tensorboard(None)).get(sweep.metric, []) if math.isfinite(point[1])
        ]
        pick = max if sweep.mode == "max" else min
        best_step, best = pick(series, key=lambda point: point[1]) if series else (None, None)
    return {
        "rank": None, "run": run.name, "status": status, **run.params, **final, "epochs": epochs, "steps": steps,
        "best": best, "best_step": best_step, "wall_time_s": summary.get("wall_time_s"), "error": error, "folder": str(folder.path.resolve()),
    }  # fmt: skip


def _mode_of(folder: RunDir) -> str | None:
    """checkpoint.best.mode of the run's recipe.yaml: whether metrics.json's best is the sweep's."""
    best = (read_yaml(folder.recipe).get("checkpoint") or {}).get("best") if folder.recipe.exists() else None
    return best.get("mode") if isinstance(best, dict) else None


def ranked(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows best first by the sweep's final metric (setting each one's rank); those without a
    finite one after (a diverged run's NaN is not the best loss), in grid order."""

    def measured(row: dict[str, Any]) -> bool:
        return isinstance(row.get(sweep.metric), (int, float)) and math.isfinite(row[sweep.metric])

    best_first = sorted(filter(measured, rows), key=lambda row: row[sweep.metric], reverse=sweep.mode == "max")
    for rank, row in enumerate(best_first, 1):
        row["rank"] = rank
    return best_first + [row for row in rows if not measured(row)]


def write_results(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json and results.csv, the rows in grid order (with their rank); returns the rows."""
    ranked(sweep, rows)
    metrics = sorted({key for row in rows for key in row if "/" in key})
    columns = [
        "rank",
        "run",
        "status",
        *sweep.grid,
        *metrics,
        "epochs",
        "steps",
        "best",
        "best_step",
        "wall_time_s",
        "error",
        "folder",
    ]
    rows[:] = [{key: row.get(key) for key in columns} for row in rows]
    (sweep.folder / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (sweep.folder / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()}
            )
    return rows


def previous_rows(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """The rows of the results.json written before, by run name: the errors of runs that failed then."""
    path = sweep.folder / "results.json"
    return {row["run"]: row for row in json.loads(path.read_text())} if path.exists() else {}


def show_results(sweep: Sweep) -> int:
    """`launch sweep SWEEP_FOLDER`, and the end of `--slurm --wait`: rewrite the results from what
    is there now, print the table; 0 if every run finished."""
    sweep.write()  # its metric and mode: those of the results
    before = previous_rows(sweep)
    rows = write_results(sweep, [result_row(sweep, run, before=before.get(run.name)) for run in sweep.runs])
    print_table(sweep, rows)
    return 0 if all(row["status"] == "finished" for row in rows) else 1


def print_table(sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    """The runs best first by the sweep's metric, then where the results are and how to compare the curves."""
    counts = {
        status: sum(row["status"] == status for row in rows) for status in dict.fromkeys(row["status"] for row in rows)
    }
    print(f"\nsweep {sweep.folder}: {len(rows)} runs, " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"by {sweep.metric} ({sweep.mode}), best first:")
    metrics = [sweep.metric, *sorted({key for row in rows for key in row if "/" in key and key != sweep.metric})]
    header = ["#", "run", "status", *metrics, f"best {sweep.metric} (step)", "epochs", "time"]
    table = [header]
    for row in ranked(sweep, rows):
        best = f"{row['best']:.4f} ({row['best_step']})" if row["best"] is not None else "-"
        time_s = f"{row['wall_time_s']:.1f} s" if row["wall_time_s"] is not None else "-"
        table.append(
            [
                str(row["rank"] or "-"),
                row["run"],
                row["status"],
                *(_number(row.get(m)) for m in metrics),
                best,
                _number(row["epochs"]),
                time_s,
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in rows:
        if row["error"]:
            print(f"  {row['run']}: {row['status']}: {row['error']}")
    print(f"results:     {sweep.folder / 'results.csv'}, {sweep.folder / 'results.json'}")
    print(f"TensorBoard: tensorboard --logdir {sweep.folder}")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
