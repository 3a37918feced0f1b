"""`launch report`: PNG plots and an index.html of a run or a sweep, read from its TensorBoard events (or its metrics.csv).

A run folder gives its training and validation curves. A sweep folder (with `sweep.json`, as
`launch sweep` writes it) gives every run's curves overlaid and the final metric against each
hyperparameter the sweep varied. The values come from the event files, read with TensorBoard's
own reader (`tensorboard.scalar_series`), or from metrics.csv where a run logged no TensorBoard events
(`logging.trackers` without tensorboard), and from each run's metrics.json.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import ValidationError

from launcher.errors import UserError
from launcher.search.spec import ImportanceFile
from launcher.sweep.spec import PlottedRun, PlottedSweep
from launcher.tracking.metrics_csv import csv_series
from launcher.tracking.tensorboard import scalar_series
from launcher.training.summary import read_summary

Series = list[tuple[int, float]]
EVENT_FILES = "events.out.tfevents.*"
MAX_MARKED_POINTS = 30  # a curve with more points is drawn without a marker on each
FIGURE_SIZE, DPI = (8, 5), 100  # 800 x 500 pixels

# A run's figures: file name, y-axis label, and the tags it plots (a pattern for the accuracies).
RUN_FIGURES = [
    ("loss.png", "loss", r"train/loss|val/loss"),
    ("accuracy.png", "accuracy", r"val/acc\d+"),
    ("lr.png", "learning rate", r"train/lr"),
    ("throughput.png", "samples per second", r"train/samples_per_s"),
]


@dataclass
class Report:
    """What `write_report` writes: figures by file name, a table of final metrics, notes."""

    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_report(target: Path, out: Path | None = None) -> list[Path]:
    """Plot the run or sweep folder `target` into `out` (default `<target>/report/`): PNGs and an
    index.html showing them with a table of final metrics. Returns the files written, index.html
    last. Raises UserError, saying where it looked, when there is nothing to plot."""
    target = Path(target)
    report = build_report(target)
    out = Path(out) if out is not None else target / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in report.figures.items():
        figure.savefig(out / name, dpi=DPI)
        written.append(out / name)
    index = out / "index.html"
    index.write_text(_html(report))
    return [*written, index]


def build_report(target: Path) -> Report:
    """The figures and tables of a sweep folder (it has sweep.json) or a run folder."""
    if not target.is_dir():
        raise UserError(f"report: {target} is not a folder; pass a run folder or a sweep folder (with sweep.json)")
    return sweep_report(target) if (target / "sweep.json").is_file() else run_report(target)


def run_report(run: Path) -> Report:
    """One run: loss, accuracy, learning rate and throughput against the step."""
    series = _run_series(run)
    if not series:
        raise UserError(
            f"report: nothing to plot in {run}: no TensorBoard scalars in {' or '.join(map(str, _event_folders(run)))} "
            f"(looked for {EVENT_FILES}), no {run / 'metrics.csv'}; pass a run folder, its event folder, or a sweep folder (with sweep.json)"
        )
    name = (
        f"{run.resolve().parent.name}/{run.resolve().name}" if (run / "recipe.yaml").is_file() else run.resolve().name
    )
    report = Report(title=f"run {name}", headers=["metric", "final"])
    for file_name, ylabel, pattern in RUN_FIGURES:
        chosen = {tag: points for tag, points in series.items() if re.fullmatch(pattern, tag)}
        if chosen:
            report.figures[file_name] = curves_figure(f"{name}: {ylabel}", ylabel, chosen)
    summary = read_summary(run / "metrics.json")
    final = (summary.final if summary else None) or {tag: points[-1][1] for tag, points in series.items()}
    report.rows = [[key, _fmt(value)] for key, value in final.items()]
    if summary and summary.best:
        best = summary.best
        report.rows.append([f"best {best.metric} (step {best.step})", _fmt(best.value)])
    if not summary:
        report.notes.append("no metrics.json (the run did not finish): the table shows the last value of each scalar")
    return report


def sweep_report(sweep: Path) -> Report:
    """A sweep: every run's curves overlaid, and the final metric against each varied hyperparameter."""
    spec = _sweep_spec(sweep)
    metric, runs = spec.metric, spec.runs
    varied = [key for key in dict.fromkeys(k for r in runs for k in r.params)
              if len({json.dumps(r.params.get(key)) for r in runs}) > 1]  # fmt: skip
    kind = "search" if (sweep / "search.json").is_file() else "sweep"
    report = Report(title=f"{kind} {sweep.resolve().name}", headers=["run", *varied])
    labels, series, finals = {}, {}, {}
    for run in runs:
        name, params = run.name, run.params
        run_series = _run_series(sweep / name)
        if not run_series:
            report.notes.append(f"{name}: skipped, no TensorBoard scalars in {sweep / name} (failed or never started?)")
            continue
        labels[name] = ", ".join(f"{key}={params.get(key)}" for key in varied) or name
        series[name] = run_series
        summary = read_summary(sweep / name / "metrics.json")
        finals[name] = (summary.final if summary else None) or {
            tag: points[-1][1] for tag, points in run_series.items()
        }
    if not series:
        raise UserError(
            f"report: nothing to plot in {sweep}: none of the {len(runs)} runs in sweep.json has TensorBoard scalars"
        )
    for tag in dict.fromkeys([metric, "train/loss"]):
        overlaid = {labels[name]: s[tag] for name, s in series.items() if s.get(tag)}
        if overlaid:
            report.figures[f"curves_{_slug(tag)}.png"] = curves_figure(f"{report.title}: {tag}", tag, overlaid)
    for key in varied:
        by_others = _against(
            key, varied, runs, {name: final[metric] for name, final in finals.items() if metric in final}
        )
        if by_others:
            title = f"{report.title}: final {metric} against {key}"
            report.figures[f"{_slug(metric)}_vs_{_slug(key)}.png"] = metric_vs_param_figure(
                title, key, f"final {metric}", by_others
            )
    columns = list(dict.fromkeys(k for final in finals.values() for k in final))
    report.headers += columns
    report.rows = [[run.name, *(str(run.params.get(k, "")) for k in varied), *(_fmt(finals[run.name].get(c)) for c in columns)]
                   for run in runs if run.name in finals]  # fmt: skip
    ranked = [
        name
        for name in finals
        if isinstance(finals[name].get(metric), (int, float)) and math.isfinite(finals[name][metric])
    ]
    if ranked:
        pick = max if spec.mode == "max" else min
        best = pick(ranked, key=lambda name: finals[name][metric])
        report.notes.insert(0, f"best by final {metric} ({spec.mode}): {best}, {_fmt(finals[best][metric])}")
    if (importance := ImportanceFile.read(sweep / "importance.json")) is not None:
        _add_importance(report, importance)
    return report


def _add_importance(report: Report, importance: ImportanceFile) -> None:
    """A search's importance.json (launch search): a note, and a bar per key where it was computed."""
    shares = ", ".join(f"{key} {share:.2f}" for key, share in importance.importance.items())
    report.notes.append(
        f"importance of each key (Optuna, from {importance.trials} finished trials): {shares or importance.note}"
    )
    if not importance.importance:
        return
    figure, axes = _figure()
    keys = list(importance.importance)
    axes.barh(keys[::-1], [importance.importance[key] for key in keys[::-1]])
    axes.set_xlabel("importance (share of the metric's variance)")
    axes.set_title(f"{report.title}: importance of each key")
    report.figures["importance.png"] = figure


def curves_figure(title: str, ylabel: str, series: dict[str, Series]) -> Figure:
    """One line per series (its label in the legend), value against step."""
    figure, axes = _figure()
    for label, points in series.items():
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, label=label, marker="o" if len(points) <= MAX_MARKED_POINTS else None, markersize=3)
    axes.set(title=title, xlabel="step", ylabel=ylabel)
    axes.legend(fontsize="small")
    return figure


def metric_vs_param_figure(title: str, param: str, ylabel: str, series: dict[str, list[tuple[Any, float]]]) -> Figure:
    """One line per series of (hyperparameter value, metric) points. Numbers are placed on a
    numeric axis (logarithmic where they are all positive and span a factor 10 or more); any other
    values (names, lists) side by side in the order they first appear."""
    figure, axes = _figure()
    values = [x for points in series.values() for x, _ in points]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
    categories = list(dict.fromkeys(map(str, values)))
    for label, points in series.items():
        ordered = (
            sorted(points, key=lambda p: p[0]) if numeric else sorted(points, key=lambda p: categories.index(str(p[0])))
        )
        xs = [x if numeric else categories.index(str(x)) for x, _ in ordered]
        axes.plot(xs, [y for _, y in ordered], marker="o", label=label)
    if numeric and min(values) > 0 and max(values) >= 10 * min(values):
        axes.set_xscale("log")
    if not numeric:
        axes.set_xticks(range(len(categories)), categories)
    axes.set(title=title, xlabel=param, ylabel=ylabel)
    axes.legend(fontsize="small")
    return figure


def _against(
    key: str, varied: list[str], runs: list[PlottedRun], values: dict[str, float]
) -> dict[str, list[tuple[Any, float]]]:
    """(value of `key`, the run's value) for each run that has one, a series per combination of
    the other varied hyperparameters, labelled by it ("train.batch_size=32")."""
    series: dict[str, list[tuple[Any, float]]] = {}
    for run in runs:
        if run.name in values:
            others = ", ".join(f"{k}={run.params.get(k)}" for k in varied if k != key) or "all runs"
            series.setdefault(others, []).append((run.params.get(key), values[run.name]))
    return series


def _figure() -> tuple[Figure, Any]:
    # A Figure on its own Agg canvas, not pyplot: no global state, no window, nothing kept alive.
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(alpha=0.3)
    return figure, axes


def _event_folders(run: Path) -> list[Path]:
    """Where a run's event files may be: the recipe's logging.tensorboard_dir (as the run wrote
    it: relative to where it was launched), `<run>/tensorboard`, or the folder itself."""
    folders = [run / "tensorboard", run]
    if (run / "recipe.yaml").is_file():
        logging = (yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("logging") or {}
        if logging.get("tensorboard_dir"):
            folders.insert(0, Path(logging["tensorboard_dir"]))
    return folders


def _run_series(run: Path) -> dict[str, Series]:
    """The scalars of the first of the run's event folders that has event files, else its metrics.csv's; {} if none."""
    for folder in _event_folders(run):
        if any(folder.glob(EVENT_FILES)):
            return {tag: points for tag, points in scalar_series(folder).items() if points}
    return {tag: points for tag, points in csv_series(run / "metrics.csv").items() if points}


def _sweep_spec(sweep: Path) -> PlottedSweep:
    path = sweep / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"report: {path} is not valid JSON: {error}") from None
    try:
        spec = PlottedSweep.model_validate(data)
    except ValidationError as error:
        where = error.errors()[0]["loc"]
        if not where:  # not an object
            raise UserError(f"report: nothing to plot in {sweep}: {path} lists no runs") from None
        if where[0] == "runs" and where[2:] in ((), ("name",)):
            raise UserError(
                f"report: {path}: each entry of 'runs' needs a 'name' (the run's folder in {sweep})"
            ) from None
        raise UserError(f"report: {path}: {'.'.join(map(str, where))}: {error.errors()[0]['msg']}") from None
    if not spec.runs:
        raise UserError(f"report: nothing to plot in {sweep}: {path} lists no runs")
    return spec


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _fmt(value: Any) -> str:
    return f"{value:#.4g}" if isinstance(value, float) else "" if value is None else str(value)


def _html(report: Report) -> str:
    """A page with the title, notes, the table and the PNGs; every text escaped."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in report.headers)
    rows = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>\n" for row in report.rows)
    notes = "".join(f"<p>{e(note)}</p>\n" for note in report.notes)
    images = "".join(f'<figure><img src="{e(name)}" alt="{e(name)}"></figure>\n' for name in report.figures)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{e(report.title)}</title>\n'
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
        "th,td{border:1px solid #ccc;padding:2px 8px} img{max-width:100%}</style></head>\n"
        f"<body><h1>{e(report.title)}</h1>\n{notes}<table><tr>{head}</tr>\n{rows}</table>\n{images}</body></html>\n"
    )
