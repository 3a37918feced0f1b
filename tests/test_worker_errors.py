"""A recipe problem found inside a worker reads as it does in one process: one `error:` line,
exit 2, no traceback, no "rank N failed", no run folder left behind; the rank is named only
where the ranks found different problems."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, run_launch

pytestmark = pytest.mark.slow

RECIPE = """
data:
  dataset: {name: "user_data:%s"}
  num_workers: 0
model: {name: mlp}
train: {epochs: 1, batch_size: 16}
run: {output: runs}
"""


def launch_with_user_data(tmp_path: Path, dataset: str, *flags: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(FIXTURES / "user_data.py", tmp_path / "user_data.py")
    recipe = tmp_path / "user.yaml"
    recipe.write_text(RECIPE % dataset)
    return run_launch(recipe, *flags, cwd=tmp_path)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


MESSAGE = "error: the dataset does not say its classes: set data.classes to the list of class names"


@pytest.mark.parametrize("flags", [("--cpu",), ("--nproc", "2")], ids=["one process", "two workers"])
def test_a_dataset_without_classes_is_one_error_line_exit_2_and_no_run_folder(tmp_path: Path, flags) -> None:
    result = launch_with_user_data(tmp_path, "unlabelled", *flags)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [MESSAGE], result.stderr
    assert "Traceback" not in result.stderr
    assert "rank" not in result.stderr.replace("where the ranks", "")  # no "rank 0 failed", no rank named
    assert "stalled" not in result.stderr
    assert not any((tmp_path / "runs" / "user").iterdir())  # the run folder made for it is gone
    assert "nothing was trained: the run folder" in result.stderr


def test_ranks_that_find_different_problems_are_each_named(tmp_path: Path) -> None:
    result = launch_with_user_data(tmp_path, "per_rank", "--nproc", "2")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    text = result.stderr
    assert "error: the ranks found different problems:" in text
    assert "rank 0: shard 0 of the table is missing" in text
    assert "rank 1: shard 1 of the table is missing" in text


def test_one_process_names_no_rank_for_the_same_problem(tmp_path: Path) -> None:
    result = launch_with_user_data(tmp_path, "per_rank", "--cpu")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: shard 0 of the table is missing"]
