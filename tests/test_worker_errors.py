"""A recipe problem found inside a worker reads as it does in one process: one `error:` line,
exit 2, no traceback, no "rank N failed", no run folder left behind; the rank is named only
where the ranks found different problems."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATASETS = '''
import os

import torch
from torch.utils.data import TensorDataset

from launcher.errors import UserError


def unlabelled():
    """A TensorDataset: it does not say its classes."""
    return TensorDataset(torch.randn(200, 8), torch.randint(0, 3, (200,)))


def per_rank():
    """Fails differently on each rank (RANK is set in workers, not in one process), on all ranks
    at once: the agent, which polls every 0.2 s, stops the others only after they have raised."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    raise UserError(f"shard {os.environ.get('RANK', 0)} of the table is missing")
'''

RECIPE = """
data:
  dataset: {name: "user_data:%s"}
  num_workers: 0
model: {name: mlp}
train: {epochs: 1, batch_size: 16}
run: {output: runs}
"""


def run_launch(tmp_path: Path, dataset: str, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "user_data.py").write_text(textwrap.dedent(DATASETS))
    recipe = tmp_path / "user.yaml"
    recipe.write_text(RECIPE % dataset)
    return subprocess.run(
        [sys.executable, "-m", "launcher", str(recipe), *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


MESSAGE = "error: the dataset does not say its classes: set data.classes to the list of class names"


@pytest.mark.parametrize("flags", [("--cpu",), ("--nproc", "2")], ids=["one process", "two workers"])
def test_a_dataset_without_classes_is_one_error_line_exit_2_and_no_run_folder(tmp_path: Path, flags) -> None:
    result = run_launch(tmp_path, "unlabelled", *flags)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [MESSAGE], result.stderr
    assert "Traceback" not in result.stderr
    assert "rank" not in result.stderr.replace("where the ranks", "")  # no "rank 0 failed", no rank named
    assert "stalled" not in result.stderr
    assert not any((tmp_path / "runs" / "user").iterdir())  # the run folder made for it is gone
    assert "nothing was trained: the run folder" in result.stderr


def test_ranks_that_find_different_problems_are_each_named(tmp_path: Path) -> None:
    result = run_launch(tmp_path, "per_rank", "--nproc", "2")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    text = result.stderr
    assert "error: the ranks found different problems:" in text
    assert "rank 0: shard 0 of the table is missing" in text
    assert "rank 1: shard 1 of the table is missing" in text


def test_one_process_names_no_rank_for_the_same_problem(tmp_path: Path) -> None:
    result = run_launch(tmp_path, "per_rank", "--cpu")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: shard 0 of the table is missing"]
