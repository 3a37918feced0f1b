"""The single-host SLURM cluster of slurm/cluster.sh, used for real: two nodes, accounting, submitit.

Marked `slurm`: skipped where no SLURM controller answers, except where LAUNCHER_REQUIRE_SLURM=1
(CI brings the cluster up and sets it), where a missing cluster fails instead (conftest.slurm_cluster).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_two_nodes_run_one_task_each() -> None:
    result = subprocess.run(
        ["srun", "-N2", "-n2", "bash", "-c", "echo $SLURM_PROCID $SLURMD_NODENAME"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:2]) == ["0 node1", "1 node2"]


def test_submitit_job_on_two_nodes_and_its_accounting(tmp_path: Path) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(nodes=2, tasks_per_node=1, timeout_min=5, slurm_partition="debug")
    # A function the job can import (a test module is not importable there): a shell command.
    job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", "echo $SLURM_PROCID $SLURMD_NODENAME"]))
    results = [line.strip() for line in job.results()]
    assert results == ["0 node1", "1 node2"]
    # submitit reads states through sacct: accounting must know the job (slurmdbd hears of the
    # end a moment after the job's output is there: seen PENDING in CI just after).
    deadline = time.monotonic() + 60
    while (state := sacct_state(job.job_id)) in (["PENDING"], ["RUNNING"], []) and time.monotonic() < deadline:
        time.sleep(1)
    assert state == ["COMPLETED"]


def sacct_state(job_id: str) -> list[str]:
    return subprocess.run(
        ["sacct", "-n", "-X", "-j", job_id, "-o", "state"], check=False, capture_output=True, text=True
    ).stdout.split()
