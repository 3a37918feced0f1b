"""A user's own task (`task: {name: module:attr}`): the README's segmentation example, written to a
file by the test as the README shows it, trains, evaluates (its own metric, on 2 ranks as in 1
process) and predicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, launch, run_dirs, run_launch
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

MARKER = "<!-- user-task-example: segmentation.py -->"
SHORT = ("data.num_workers=0", "logging.every_n_steps=2")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """segmentation.py and its recipe, copied from the README."""
    folder = tmp_path_factory.mktemp("project")
    readme = (ROOT / "README.md").read_text()
    code, recipe = re.findall(r"```(?:python|yaml)\n(.*?)```", readme.split(MARKER, 1)[1], flags=re.S)[:2]
    (folder / "segmentation.py").write_text(code)
    (folder / "segmentation.yaml").write_text(recipe)
    assert yaml.safe_load(recipe)["task"]["name"] == "segmentation:Segmentation"
    return folder


def test_the_readme_task_trains_evaluates_and_predicts(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe, output = project / "segmentation.yaml", project / "one"
    assert launch(recipe, "--cpu", f"run.output={output}", *SHORT) == 0
    (run,) = run_dirs(output, "segmentation")
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["final"]["val/iou"] > 0.95, summary  # mean IoU of background and square; 0.999 seen
    assert summary["best"]["metric"] == "val/iou"
    capsys.readouterr()
    assert launch("eval", recipe, "--checkpoint", run) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(printed["val/iou"]) == pytest.approx(summary["final"]["val/iou"], abs=1e-6)  # 6 decimals
    image = Image.new("L", (32, 32), 60)
    ImageDraw.Draw(image).rectangle((4, 8, 13, 17), fill=200)  # 10 x 10 pixels: 9.8% of 1024
    image.save(project / "square.png")
    assert launch("predict", recipe, "--checkpoint", run, project / "square.png") == 0
    (line,) = capsys.readouterr().out.splitlines()
    what, answer = line.split("\t")
    assert what.endswith("square.png") and answer.startswith("square: ")
    assert float(answer.split()[1].rstrip("%")) == pytest.approx(9.8, abs=2.0)


def test_its_metric_on_two_ranks_equals_one_process(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = project / "two"
    # 80 validation images over 2 ranks, in batches of 7: unequal last batches on each rank
    result = run_launch(
        project / "segmentation.yaml", "--nproc", "2", f"run.output={output}", *SHORT, "eval.batch_size=7",
        cwd=project, timeout=None,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(output, "segmentation")
    final = json.loads((run / "metrics.json").read_text())["final"]
    capsys.readouterr()
    assert launch("eval", run / "recipe.yaml", "--checkpoint", run, "eval.batch_size=80") == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    for tag in ("val/loss", "val/iou"):
        assert float(printed[tag]) == pytest.approx(final[tag], abs=1e-6), tag  # printed with 6 decimals
