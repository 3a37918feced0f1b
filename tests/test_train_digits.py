"""End to end on the real digits data: accuracy, TensorBoard logs, the run folder, resume, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import RECIPES, final_checkpoint, launch, run_dirs, scalars
from PIL import Image

from launcher import checkpoint

pytestmark = pytest.mark.slow

DIGITS = RECIPES / "digits.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full run of the shipped digits recipe, as a user runs it (--cpu, defaults untouched)."""
    output = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(2)
    assert launch(DIGITS, "--cpu", f"run.output={output}") == 0
    (run,) = run_dirs(output, "digits")
    return run


def test_digits_reaches_95_percent(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["final"]["val/acc1"] >= 0.95, metrics
    assert metrics["best"]["metric"] == "val/acc1" and metrics["best"]["value"] >= metrics["final"]["val/acc1"]
    assert metrics["final"]["epoch"] == 15 and metrics["final"]["step"] == 15 * 22


def test_run_folder_holds_recipe_checkpoints_logs(trained: Path) -> None:
    resolved = yaml.safe_load((trained / "recipe.yaml").read_text())
    assert resolved["train"]["epochs"] == 15 and resolved["model"]["name"] == "small_cnn"
    assert resolved["train"]["precision"] == "fp32"  # defaults are written out, not left implicit
    steps = [p.name for p in checkpoint.saved_steps(trained / "checkpoints")]
    assert steps == ["step-00000220.pt", "step-00000330.pt"]  # every 5 epochs, keep_last 2
    assert (trained / "checkpoints" / "best.pt").is_file()
    assert not list((trained / "checkpoints").glob(".*tmp"))
    log = (trained / "log.txt").read_text()
    assert "epoch 15/15" in log and "val/acc1" in log


def test_tensorboard_has_the_expected_tags_and_steps(trained: Path) -> None:
    series = scalars(trained)
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/loss", "val/acc1", "val/acc5"} <= set(series)
    assert [step for step, _ in series["train/loss"]] == list(range(10, 331, 10))
    assert [step for step, _ in series["val/acc1"]] == [22 * e for e in range(1, 16)]
    lr = dict(series["train/lr"])
    assert lr[10] > lr[330]  # the cosine schedule decays per step
    final = json.loads((trained / "metrics.json").read_text())["final"]
    assert series["val/acc1"][-1][1] == pytest.approx(final["val/acc1"])


def test_checkpoint_loads_with_weights_only(trained: Path) -> None:
    state = torch.load(checkpoint.latest(trained / "checkpoints"), weights_only=True)
    assert state["progress"]["step"] == 330 and state["data"]["classes"] == [str(d) for d in range(10)]
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "recipe"} <= set(state)


def test_the_resolved_recipe_repeats_the_run(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch("check", trained / "recipe.yaml", f"run.output={tmp_path}") == 0
    assert "one forward/backward step" in capsys.readouterr().out


def test_eval_reports_the_checkpoint_metrics(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = trained / "checkpoints" / "best.pt"
    assert launch("eval", DIGITS, "--checkpoint", best, "--cpu") == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    saved = json.loads((trained / "metrics.json").read_text())["best"]
    assert float(printed["val/acc1"]) == pytest.approx(saved["value"], abs=1e-4)


def test_predict_names_the_digit_in_image_files(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    files = []
    for index in range(20):
        path = tmp_path / f"digit{index}_is_{digits.target[index]}.png"
        Image.fromarray((digits.images[index] * 255 / 16).astype("uint8"), mode="L").resize((32, 32)).save(path)
        files.append(path)
    assert launch("predict", DIGITS, "--checkpoint", trained / "checkpoints" / "best.pt", *files) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 20
    right = sum(Path(what).stem.endswith(f"_is_{name}") for what, name, _ in lines)
    assert right >= 18, lines


# A schedule whose length does not depend on train.epochs, so a 2-epoch run is the start of a 4-epoch run.
SAME_SCHEDULE = ("scheduler.T_max=88", "checkpoint.best=null", "checkpoint.keep_last=10")


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert launch(DIGITS, "--cpu", f"run.output={straight}", "train.epochs=4", *SAME_SCHEDULE) == 0
    assert (
        launch(DIGITS, "--cpu", f"run.output={pieces}", "train.epochs=2", "checkpoint.every_n_epochs=1", *SAME_SCHEDULE)
        == 0
    )
    assert launch(DIGITS, "--cpu", f"run.output={pieces}", "train.epochs=4", "--resume", *SAME_SCHEDULE) == 0
    (one,), (resumed,) = run_dirs(straight, "digits"), run_dirs(pieces, "digits")

    a, b = final_checkpoint(one), final_checkpoint(resumed)
    assert a["progress"] == b["progress"] and b["progress"]["step"] == 88
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][field]), (key, field)
    assert a["scheduler"] == b["scheduler"]

    series_one, series_resumed = scalars(one), scalars(resumed)
    for tag in ("train/loss", "val/loss", "val/acc1", "train/lr"):
        steps = [step for step, _ in series_resumed[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert series_resumed[tag] == series_one[tag], tag  # same steps, same values
    assert "resumed from" in (resumed / "log.txt").read_text()


def test_resume_from_a_mid_epoch_checkpoint(tmp_path: Path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert launch(DIGITS, "--cpu", f"run.output={straight}", "train.epochs=3", *SAME_SCHEDULE) == 0
    # Stops at step 30: epoch 2, 8 batches in; the checkpoint records that position.
    assert launch(DIGITS, "--cpu", f"run.output={pieces}", "train.epochs=3", "train.max_steps=30", *SAME_SCHEDULE) == 0
    (stopped,) = run_dirs(pieces, "digits")
    assert final_checkpoint(stopped)["progress"]["batches_done"] == 8
    assert launch(DIGITS, "--cpu", f"run.output={pieces}", "train.epochs=3", "--resume", stopped, *SAME_SCHEDULE) == 0
    a, b = final_checkpoint(run_dirs(straight, "digits")[0]), final_checkpoint(stopped)
    assert b["progress"]["step"] == 66
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    steps = [step for step, _ in scalars(stopped)["train/loss"]]
    assert steps == list(range(10, 61, 10))
