"""task: regression on scikit-learn's bundled diabetes data (built in, and as the shipped CSV
recipe): the metrics (torchmetrics) equal scikit-learn's on the same predictions, on 2 ranks as in
1 process, and a mid-epoch resume is bitwise, as for classification, and goes on to the end on
another number of ranks."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, final_checkpoint, launch, run_dirs, run_launch, scalars
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from launcher import checkpoint
from launcher.config.loading import load_recipe
from launcher.data.build import build_datasets
from launcher.training.inference import load_model

pytestmark = pytest.mark.slow

DIABETES = ROOT / "recipes" / "diabetes.yaml"
CSV_REGRESSION = ROOT / "recipes" / "csv_regression.yaml"
SHORT = ("train.epochs=4", "eval.metrics=[mae, mse, rmse, r2]", "logging.every_n_steps=2")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("regression")
    result = run_launch(DIABETES, "--nproc", "2", f"run.output={output}", *SHORT, cwd=output, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(output, "diabetes")
    return run


def _predictions(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The final checkpoint's predictions on the run's validation split, and the targets, in one process."""
    recipe = load_recipe(run / "recipe.yaml")
    model, _, trained_with = load_model(recipe, checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    val = build_datasets(recipe.data, seed=trained_with["train"]["seed"], classes=False).val
    inputs = torch.stack([val[i][0] for i in range(len(val))])
    targets = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        return model(inputs).squeeze(-1), targets


def test_metrics_on_two_ranks_equal_scikit_learn_on_the_same_predictions(two_ranks: Path) -> None:
    final = json.loads((two_ranks / "metrics.json").read_text())["final"]
    predictions, targets = _predictions(two_ranks)
    assert len(targets) == 88  # 442 x 0.2, split over 2 ranks: 44 each (the odd case is below)
    y, p = targets.double().numpy(), predictions.double().numpy()
    assert final["val/mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-5)
    assert final["val/mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-5)
    assert final["val/rmse"] == pytest.approx(mean_squared_error(y, p) ** 0.5, rel=1e-5)
    assert final["val/r2"] == pytest.approx(r2_score(y, p), rel=1e-5)
    assert final["val/loss"] == pytest.approx(mean_squared_error(y, p), rel=1e-5)  # MSELoss


def test_one_process_evaluates_the_checkpoint_as_two_ranks_did(
    two_ranks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = json.loads((two_ranks / "metrics.json").read_text())["final"]
    capsys.readouterr()
    assert launch("eval", two_ranks / "recipe.yaml", "--checkpoint", checkpoint.latest(two_ranks / "checkpoints")) == 0
    single = {name: float(value) for name, value in (line.split() for line in capsys.readouterr().out.splitlines())}
    for name in ("val/loss", "val/mae", "val/mse", "val/rmse", "val/r2"):
        assert single[name] == pytest.approx(final[name], rel=1e-5), name


def test_an_odd_validation_set_is_counted_once_on_two_ranks(tmp_path: Path) -> None:
    # 442 x 0.25 = 110 validation rows over... make it odd: 0.2015 -> 89 rows, 45 and 44 per rank.
    result = run_launch(
        DIABETES, "--nproc", "2", f"run.output={tmp_path}", "data.val_fraction=0.2015", *SHORT, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path, "diabetes")
    predictions, targets = _predictions(run)
    assert len(targets) == 89
    final = json.loads((run / "metrics.json").read_text())["final"]
    y, p = targets.double().numpy(), predictions.double().numpy()
    assert final["val/mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-5)
    assert final["val/r2"] == pytest.approx(r2_score(y, p), rel=1e-5)


def test_resume_from_a_mid_epoch_checkpoint_is_bitwise(tmp_path: Path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert launch(DIABETES, "--cpu", f"run.output={straight}", *SHORT) == 0
    # 354 training rows, batch 32, the last partial batch dropped: 11 steps an epoch; step 17 is mid-epoch 2.
    assert launch(DIABETES, "--cpu", f"run.output={pieces}", *SHORT, "train.max_steps=17") == 0
    (stopped,) = run_dirs(pieces, "diabetes")
    assert final_checkpoint(stopped)["progress"]["batches_done"] == 6
    # TensorBoard's reader orders event files by name, whose first field is the second the writer
    # started: a resumed writer started within the same second (this run takes 0.4 s) may be read
    # first, and the older file's steps are then dropped as out of order. A real resume is later.
    time.sleep(1.1)
    assert launch(DIABETES, "--cpu", f"run.output={pieces}", *SHORT, "--resume", stopped) == 0
    a, b = final_checkpoint(run_dirs(straight, "diabetes")[0]), final_checkpoint(stopped)
    assert a["progress"] == b["progress"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    resumed, uninterrupted = scalars(stopped), scalars(run_dirs(straight, "diabetes")[0])
    for tag in ("val/mae", "val/r2"):  # the stopped run also evaluated where it stopped, at step 17
        assert [(s, v) for s, v in resumed[tag] if s != 17] == uninterrupted[tag], tag


def test_the_shipped_csv_recipe_reads_its_last_column_as_values_and_predicts_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As shipped, from the repository root: the recipe's CSV path is relative to the working directory.
    monkeypatch.chdir(ROOT)
    result = run_launch(CSV_REGRESSION, "--cpu", f"run.output={tmp_path}", "train.epochs=8", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path, "csv_regression")
    final = json.loads((run / "metrics.json").read_text())["final"]
    predictions, targets = _predictions(run)
    assert len(targets) == 88 and targets.dtype == torch.float32  # 442 rows x 0.2, progression 25 to 346
    y, p = targets.double().numpy(), predictions.double().numpy()
    assert final["val/mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-5)
    assert final["val/rmse"] == pytest.approx(mean_squared_error(y, p) ** 0.5, rel=1e-5)
    assert final["val/r2"] == pytest.approx(r2_score(y, p), rel=1e-5)
    assert final["val/r2"] > 0.2  # it learned something: a constant guess scores about 0
    # launch predict: a value per row of a CSV file (its last column, the target, is left out)
    rows = tmp_path / "rows.csv"
    rows.write_text("".join((ROOT / "recipes" / "data" / "diabetes.csv").read_text().splitlines(keepends=True)[:3]))
    capsys.readouterr()
    assert launch("predict", run / "recipe.yaml", "--checkpoint", checkpoint.latest(run / "checkpoints"), rows) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    recipe = load_recipe(run / "recipe.yaml")
    model, _, _ = load_model(recipe, checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    features = torch.tensor([[float(v) for v in line.split(",")[:-1]] for line in rows.read_text().splitlines()[1:]])
    with torch.no_grad():
        expected = model(features).squeeze(-1).tolist()
    assert [what for what, _ in printed] == [f"{rows}:2", f"{rows}:3"]  # the header is line 1
    assert [float(value) for _, value in printed] == pytest.approx(expected, rel=1e-5)


def test_a_csv_target_that_is_not_a_number_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,3.5\n1,2,high\n")
    assert launch("check", CSV_REGRESSION, f"data.dataset.path={tmp_path / 'bad.csv'}") == 2
    assert f"{tmp_path / 'bad.csv'}: line 3: the target 'high' is not a number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("first", "then", "stop_at", "last_step"),
    [
        # 354 training rows, batch 32, the last partial batch dropped. 2 ranks: 5 steps an epoch;
        # step 7 is 2 steps (128 rows) into epoch 2, which 1 process goes on after its 4th batch of
        # 11: 7 + 7 + 2 x 11 = 36. 1 process: 11 steps an epoch; step 15 is 4 batches (128 rows)
        # into epoch 2, which 2 ranks go on after their 2nd step of 5: 15 + 3 + 2 x 5 = 28.
        ("2", "1", 7, 36),
        ("1", "2", 15, 28),
    ],
)
def test_resume_mid_epoch_on_another_world_size(
    first: str, then: str, stop_at: int, last_step: int, tmp_path: Path
) -> None:
    common = (*SHORT, "logging.every_n_steps=1", f"run.output={tmp_path}")
    result = run_launch(DIABETES, "--nproc", first, *common, f"train.max_steps={stop_at}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path, "diabetes")
    assert final_checkpoint(run)["progress"]["step"] == stop_at
    time.sleep(1.1)  # a later second for the resumed TensorBoard writer: see the bitwise test above
    result = run_launch(DIABETES, "--nproc", then, *common, "--resume", run, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"the checkpoint is from {first} rank(s), this run has {then}" in result.stderr + (run / "log.txt").read_text()
    )

    progress = final_checkpoint(run)["progress"]
    assert (progress["epoch"], progress["step"]) == (4, last_step)
    summary = json.loads((run / "metrics.json").read_text())
    assert (summary["final"]["epoch"], summary["final"]["step"]) == (4, last_step)
    for tag in ("val/loss", "val/mae", "val/mse", "val/rmse", "val/r2"):
        assert math.isfinite(summary["final"][tag]), tag
    logged = scalars(run)
    assert [step for step, _ in logged["train/loss"]] == list(range(1, last_step + 1))  # each step once, no gap
    assert all(math.isfinite(value) for _, value in logged["train/loss"])
