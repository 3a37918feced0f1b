"""A rank that hangs: the run ends within its timeout and says where each rank was."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, run_dirs, run_launch

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_rank_that_hangs_ends_the_run_within_the_timeout_with_its_stack_in_its_log(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "hangs.py", tmp_path / "hangs.py")
    recipe = tmp_path / "hangs.yaml"
    recipe.write_text("data: {dataset: {name: digits}, num_workers: 0, transforms: {train: [ToTensor], val: [ToTensor]}}\n"
                      "model: {name: 'hangs:HangsOnRank1'}\ntrain: {epochs: 2, batch_size: 16}\n"
                      "distributed: {timeout_s: 10, stall_s: 3}\n")  # fmt: skip
    result = run_launch(recipe, "--nproc", "2", f"run.output={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    # Ended by the recipe's 10 s timeout on the rank left waiting...
    assert "rank 0 failed" in result.stderr and "Timed out waiting 10000ms" in result.stderr
    assert (
        "where the ranks were: rank 0: last finished step 2" in result.stderr
        and "rank 1: last finished step 2" in result.stderr
    )
    (run,) = run_dirs(tmp_path, "hangs")
    rank1 = (run / "log.rank1.txt").read_text()
    assert (
        "Timeout (0:00:04)!" in rank1
    )  # faulthandler's dump (stall_s 3, wound up at most once a second), with the frame it sleeps in
    assert re.search(r'File ".*hangs\.py", line 13 in forward', rank1), rank1[-3000:]
    # ... and the sleeping rank went at the agent's SIGTERM, not after its 30 s grace and a SIGKILL.
    assert "received SIGTERM, but no step has finished for" in rank1
