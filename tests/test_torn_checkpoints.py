"""Checkpoint files that are torn or cannot be written: a truncated newest checkpoint, a
process killed while writing one, a full disk, an output folder that cannot be created.

Nothing half-written is loaded, and a resumed run ends as one never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, ROOT, assert_same_weights, final_weights, launch, run_dirs, run_launch

from launcher import checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DIGITS = ROOT / "recipes" / "digits.yaml"


def test_a_truncated_newest_checkpoint_is_passed_over_and_the_resumed_run_ends_the_same(tmp_path: Path) -> None:
    recipe = (DIGITS, "--cpu", "train.epochs=4", "checkpoint.every_n_epochs=1", f"run.output={tmp_path}")
    assert launch(*recipe) == 0
    (run,) = run_dirs(tmp_path, "digits")
    uninterrupted = final_weights(run)
    newest = checkpoint.step_path(run / "checkpoints", 88)
    newest.write_bytes(newest.read_bytes()[:1000])  # a crash of the disk, not of the writer
    torch.set_num_threads(2)
    assert launch(*recipe, "--resume", run) == 0
    log = (run / "log.txt").read_text()
    assert f"{newest} is damaged" in log
    assert (
        f"resuming from the newest complete checkpoint before it instead: {checkpoint.step_path(run / 'checkpoints', 66)}"
        in log
    )
    assert (run / "checkpoints" / "step-00000088.pt.abandoned").exists()  # set aside, not deleted
    assert_same_weights(final_weights(run), uninterrupted)


def test_sigkill_while_a_checkpoint_is_written_leaves_no_partial_file_and_the_previous_loads(tmp_path: Path) -> None:
    # No best.pt: where accuracy improves, the step checkpoint is a second name for best.pt, and
    # the slow write this test cuts short would be best.pt's.
    recipe = (DIGITS, "--cpu", "train.epochs=3", "checkpoint.every_n_epochs=1", "checkpoint.best=null")
    process = subprocess.Popen(
        [sys.executable, FIXTURES / "slow_writes.py", *map(str, recipe), f"run.output={tmp_path / 'killed'}"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("killed/digits/*/checkpoints/.step-00000044.pt.*.tmp")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    time.sleep(0.15)  # part of it written
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(tmp_path / "killed", "digits")
    partial = next((run / "checkpoints").glob(".step-00000044.pt.*.tmp"))
    assert partial.stat().st_size > 0
    assert not checkpoint.step_path(run / "checkpoints", 44).exists()
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000022.pt"]
    assert checkpoint.load(checkpoint.step_path(run / "checkpoints", 22))["progress"]["step"] == 22
    # ... and the run goes on from it to the same end as a run never killed.
    torch.set_num_threads(2)
    assert launch(*recipe, "--resume", run, f"run.output={tmp_path / 'killed'}") == 0
    assert launch(*recipe, f"run.output={tmp_path / 'whole'}") == 0
    (whole,) = run_dirs(tmp_path / "whole", "digits")
    assert_same_weights(final_weights(run), final_weights(whole))


def test_a_full_disk_names_the_checkpoint_and_leaves_the_earlier_ones_whole(tmp_path: Path) -> None:
    import resource

    recipe = (DIGITS, "--cpu", "checkpoint.every_n_epochs=1", f"run.output={tmp_path}")
    assert launch(*recipe, "train.epochs=1") == 0
    (run,) = run_dirs(tmp_path, "digits")
    first = checkpoint.step_path(run / "checkpoints", 22)
    before = first.read_bytes()

    def small_disk() -> None:  # files may not grow past 200 kB: writing a checkpoint fails as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    result = run_launch(*recipe, "train.epochs=3", "--resume", run, cwd=tmp_path, preexec_fn=small_disk)
    assert result.returncode == 1
    assert f"error: cannot write the checkpoint {run / 'checkpoints'}" in result.stderr
    assert "File too large; the complete checkpoints already in" in result.stderr
    assert "Traceback" not in result.stderr
    assert first.read_bytes() == before and checkpoint.load(first)["progress"]["step"] == 22
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000022.pt"]


def test_an_output_folder_that_cannot_be_created_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert launch(DIGITS, "--cpu", f"run.output={blocker}") == 1
    err = capsys.readouterr().err
    assert (
        f"error: run.output={blocker}: cannot create the run folder under {blocker / 'digits'}: Not a directory" in err
    )
    assert "Traceback" not in err
