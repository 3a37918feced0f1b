"""`launch report`: PNGs and index.html of real runs and a sweep of real runs, checked against the
values TensorBoard's own reader finds in their event files and against their metrics.json."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import RECIPES, launch, run_dirs, scalars
from PIL import Image

from launcher.errors import UserError
from launcher.tracking.report import build_report, metric_vs_param_figure, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID = {"optimizer.lr": [0.01, 0.001], "train.batch_size": [64, 32]}
# Three of the grid's four runs are trained; the fourth "failed" before it logged anything.
TRAINED = [(0.01, 64), (0.001, 64), (0.01, 32)]
FAILED = (0.001, 32)


def run_name(lr: float, batch_size: int) -> str:
    return f"lr{lr}-bs{batch_size}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder as `launch sweep` lays it out (sweep.json, one run folder per grid point),
    made of short real digits runs: each trained into `<work>/<name>/<run-id>/`, then moved to
    `<sweep>/<name>/`. The folder's name has characters that index.html must escape."""
    torch.set_num_threads(2)
    work, sweep = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("sweeps") / "lr & bs <sweep>"
    sweep.mkdir()
    runs = []
    for lr, batch_size in TRAINED:
        name = run_name(lr, batch_size)
        overrides = [f"run.output={work}", f"run.name={name}", "train.epochs=2", "logging.every_n_steps=5"]
        assert (
            launch(RECIPES / "digits.yaml", "--cpu", *overrides, f"optimizer.lr={lr}", f"train.batch_size={batch_size}")
            == 0
        )
        (trained,) = run_dirs(work, name)
        shutil.move(trained, sweep / name)
        runs.append({"name": name, "params": {"optimizer.lr": lr, "train.batch_size": batch_size}})
    failed = run_name(*FAILED)
    (sweep / failed).mkdir()
    (sweep / failed / "log.txt").write_text("error: the run failed before its first step\n")
    runs.append({"name": failed, "params": {"optimizer.lr": FAILED[0], "train.batch_size": FAILED[1]}})
    spec = {"recipe": str(RECIPES / "digits.yaml"), "metric": "val/acc1", "mode": "max", "grid": GRID, "runs": runs}
    (sweep / "sweep.json").write_text(json.dumps(spec, indent=2))
    return sweep


@pytest.fixture(scope="module")
def run(sweep: Path) -> Path:
    """One run folder (the sweep's first run: a run folder like any other)."""
    return sweep / run_name(*TRAINED[0])


def final(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())["final"]


def lines(report, file_name: str) -> dict[str, list[float]]:
    """The y-data of each line of a figure, by its legend label."""
    (axes,) = report.figures[file_name].axes
    return {line.get_label(): list(line.get_ydata()) for line in axes.get_lines()}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        image.load()
        assert image.size == (800, 500), path


@pytest.mark.slow
def test_run_report_plots_the_event_files(run: Path) -> None:
    written = write_report(run)
    names = ["loss.png", "accuracy.png", "lr.png", "throughput.png", "index.html"]
    assert written == [run / "report" / name for name in names]
    for png in written[:-1]:
        assert_png(png)

    logged, report = scalars(run), build_report(run)
    assert lines(report, "loss.png") == {tag: [v for _, v in logged[tag]] for tag in ("train/loss", "val/loss")}
    assert lines(report, "lr.png") == {"train/lr": [v for _, v in logged["train/lr"]]}
    accuracy = lines(report, "accuracy.png")
    assert accuracy == {tag: [v for _, v in logged[tag]] for tag in ("val/acc1", "val/acc5")}
    assert accuracy["val/acc1"][-1] == pytest.approx(final(run)["val/acc1"], rel=1e-6)  # float32 in the events
    (axes,) = report.figures["loss.png"].axes
    assert run.name in axes.get_title() and axes.get_xlabel() == "step"

    page = (run / "report" / "index.html").read_text()
    assert f"<td>val/acc1</td><td>{final(run)['val/acc1']:#.4g}</td>" in page
    assert all(f'<img src="{name}"' in page for name in names[:-1])


@pytest.mark.slow
def test_run_report_finds_events_where_the_recipe_put_them(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("report"))
    shutil.move(moved / "tensorboard", tmp_path / "elsewhere")
    recipe = yaml.safe_load((moved / "recipe.yaml").read_text())
    recipe["logging"]["tensorboard_dir"] = str(tmp_path / "elsewhere")
    (moved / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    expected = lines(build_report(run), "accuracy.png")

    assert lines(build_report(moved), "accuracy.png") == expected
    # A folder of event files on its own, and a report written where --out says.
    written = write_report(tmp_path / "elsewhere", out=tmp_path / "out")
    assert written[-1] == tmp_path / "out" / "index.html" and (tmp_path / "out" / "accuracy.png").is_file()
    assert "no metrics.json" in written[-1].read_text()


@pytest.mark.slow
def test_sweep_report_overlays_runs_and_plots_the_metric_against_each_hyperparameter(sweep: Path) -> None:
    written = write_report(sweep)
    pngs = [
        "curves_val_acc1.png",
        "curves_train_loss.png",
        "val_acc1_vs_optimizer.lr.png",
        "val_acc1_vs_train.batch_size.png",
    ]
    assert written == [sweep / "report" / name for name in [*pngs, "index.html"]]
    for png in written[:-1]:
        assert_png(png)

    report = build_report(sweep)
    label = "optimizer.lr={}, train.batch_size={}".format
    for tag in ("val/acc1", "train/loss"):
        expected = {label(*point): [v for _, v in scalars(sweep / run_name(*point))[tag]] for point in TRAINED}
        assert lines(report, f"curves_{tag.replace('/', '_')}.png") == expected

    acc1 = {point: final(sweep / run_name(*point))["val/acc1"] for point in TRAINED}
    by_lr = lines(report, "val_acc1_vs_optimizer.lr.png")
    assert by_lr == {"train.batch_size=64": [acc1[0.001, 64], acc1[0.01, 64]], "train.batch_size=32": [acc1[0.01, 32]]}
    assert report.figures["val_acc1_vs_optimizer.lr.png"].axes[0].get_xscale() == "log"  # 0.001 .. 0.01
    by_batch = lines(report, "val_acc1_vs_train.batch_size.png")
    assert by_batch == {"optimizer.lr=0.01": [acc1[0.01, 32], acc1[0.01, 64]], "optimizer.lr=0.001": [acc1[0.001, 64]]}
    assert report.figures["val_acc1_vs_train.batch_size.png"].axes[0].get_xscale() == "linear"  # 32 .. 64

    page = (sweep / "report" / "index.html").read_text()
    assert "<h1>sweep lr &amp; bs &lt;sweep&gt;</h1>" in page and "<sweep>" not in page
    assert f"{run_name(*FAILED)}: skipped, no TensorBoard scalars" in page
    best = max(acc1, key=acc1.get)
    assert f"best by final val/acc1 (max): {run_name(*best)}, {acc1[best]:#.4g}" in page
    assert page.count("<tr>") == 1 + len(TRAINED)


def test_hyperparameters_that_are_not_numbers_sit_side_by_side() -> None:
    figure = metric_vs_param_figure(
        "t", "optimizer.name", "final val/acc1", {"all": [("SGD", 0.5), ("AdamW", 0.9), ("SGD", 0.6)]}
    )
    (axes,) = figure.axes
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["SGD", "AdamW"]
    assert list(axes.get_lines()[0].get_xdata()) == [0, 0, 1] and axes.get_xscale() == "linear"


def test_nothing_to_plot_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        write_report(tmp_path / "missing")
    with pytest.raises(
        UserError, match=re.escape(f"no TensorBoard scalars in {tmp_path / 'tensorboard'} or {tmp_path}")
    ):
        write_report(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "sweep.json").write_text(json.dumps({"metric": "val/acc1", "runs": [{"name": "a", "params": {}}]}))
    with pytest.raises(UserError, match="none of the 1 runs in sweep.json has TensorBoard scalars"):
        write_report(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"metric": "val/acc1", "runs": []}))
    with pytest.raises(UserError, match="lists no runs"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()
