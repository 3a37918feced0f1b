"""A recipe problem found inside a worker reads as it does in one process: one `error:` line,
exit 2, no traceback, no "rank N failed", no run folder left behind; the rank is named only
where the ranks found different problems."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BLOBS_DATASET, FIXTURES, USER_DATASET_RECIPE, run_launch, session_members, start_launch

pytestmark = pytest.mark.slow


def launch_with_user_data(tmp_path: Path, dataset: str, *flags: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(FIXTURES / "user_data.py", tmp_path / "user_data.py")
    recipe = tmp_path / "user.yaml"
    recipe.write_text(USER_DATASET_RECIPE % f"user_data:{dataset}")
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


# A user's module that notes which processes import it, and takes a moment to (as scikit-learn does).
NOTED_MODULE = (
    """
import os, pathlib, time
pathlib.Path(os.environ["IMPORTED_BY"], str(os.getpid())).touch()
time.sleep(0.5)
"""
    + BLOBS_DATASET
)
BAD_RECIPE = """
data:
  dataset: {name: "noted_data:Blobs", sise: 64}
  num_workers: 0
model: {name: mlp}
optimizer: {name: AdamWW, lr: 0.01}
eval: {metrics: [acc1, f1_macr]}
train: {epochs: 1, batch_size: 16}
run: {output: runs}
"""


def test_a_bad_recipe_on_two_workers_is_refused_with_every_problem_by_the_workers_and_none_is_left(
    tmp_path: Path,
) -> None:
    # The problems that need the user's module imported are found in the workers, which import it
    # anyway, not by `launch` first: the same lines as `launch check` prints, exit 2, before any step.
    (tmp_path / "noted_data.py").write_text(NOTED_MODULE)
    (tmp_path / "imported").mkdir()
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_RECIPE)
    env = {**os.environ, "IMPORTED_BY": str(tmp_path / "imported")}
    checked = run_launch("check", recipe, cwd=tmp_path, env=env)
    assert checked.returncode == 2, checked.stderr
    expected = checked.stderr[checked.stderr.index("error:") :].splitlines()
    assert len(expected) == 4 and "data.dataset.sise" in expected[1], expected  # 3 problems, each on its line
    for noted in (tmp_path / "imported").iterdir():
        noted.unlink()

    process = start_launch(recipe, "--nproc", "2", cwd=tmp_path, env=env)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2, output
    assert output[output.index("error:") :].splitlines() == expected, output
    assert "Traceback" not in output and "rank" not in output
    deadline = time.monotonic() + 10  # the last ones gone a moment after launch (multiprocessing's resource tracker)
    while (left := session_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_text(errors="replace") for pid in left]  # no worker left
    importers = {int(p.name) for p in (tmp_path / "imported").iterdir()}
    assert len(importers) == 2 and process.pid not in importers  # the two workers; `launch` itself did not
    assert not any((tmp_path / "runs" / "bad").iterdir())  # nothing trained: the run folder made for it is gone
