"""Real signals on real runs (CPU, gloo, subprocesses): SIGTERM, SIGINT, SIGUSR1 and SIGKILL.

Each test stops or kills a run the way users and machines do and checks that no finished step is
lost and that the resumed run is the run that would have happened."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    assert_same_weights,
    final_checkpoint,
    final_weights,
    launch,
    run_dirs,
    run_launch,
    scalars,
    session_members,
    start_launch,
    wait_for_file_text,
)

from launcher import checkpoint
from launcher.training import stopping

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DIGITS = ROOT / "recipes" / "digits.yaml"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 143)])
def test_a_signal_on_a_local_run_checkpoints_the_step_and_resume_ends_as_if_never_stopped(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    recipe = (DIGITS, "--cpu", "train.epochs=6", "checkpoint.every_n_epochs=100")
    process = start_launch(*recipe, f"run.output={tmp_path / 'stopped'}", cwd=tmp_path)
    wait_for_file_text("stopped/digits/*/log.txt", "epoch 2/6", tmp_path)
    os.killpg(process.pid, sig)  # as Ctrl-C does: the whole process group
    output, _ = process.communicate(timeout=120)
    assert process.returncode == code, output
    (run,) = run_dirs(tmp_path / "stopped", "digits")
    stopped = int(output.split("stopped at step ")[1].split()[0])
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == [f"step-{stopped:08d}.pt"]
    assert f"go on with: launch {run / 'recipe.yaml'} --resume {run}" in output
    assert session_members(process.pid) == []

    torch.set_num_threads(2)
    assert launch(*recipe, "--resume", run, f"run.output={tmp_path / 'stopped'}") == 0
    assert launch(*recipe, f"run.output={tmp_path / 'whole'}") == 0
    (whole,) = run_dirs(tmp_path / "whole", "digits")
    assert_same_weights(final_weights(run), final_weights(whole))


def test_a_stop_at_an_epochs_last_step_resumes_into_that_epochs_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that lands on an epoch's last step checkpoints before the epoch's evaluation; the
    resumed run says it goes on in that epoch, does the evaluation once, and ends as if never stopped."""
    recipe = (DIGITS, "--cpu", "train.epochs=4", "checkpoint.every_n_epochs=100")
    assert launch(*recipe, f"run.output={tmp_path / 'whole'}") == 0
    (whole,) = run_dirs(tmp_path / "whole", "digits")
    steps_per_epoch = json.loads((whole / "metrics.json").read_text())["final"]["step"] // 4
    last_of_epoch_2 = 2 * steps_per_epoch

    agreed, steps = stopping.StopRequests.agreed, itertools.count(1)

    def terminated_at_the_last_step_of_epoch_2(self: stopping.StopRequests) -> set[str]:
        if next(steps) == last_of_epoch_2:  # called once per optimizer step
            signal.raise_signal(signal.SIGTERM)  # a real SIGTERM, caught by the run's own handler
        return agreed(self)

    monkeypatch.setattr(stopping.StopRequests, "agreed", terminated_at_the_last_step_of_epoch_2)
    assert launch(*recipe, f"run.output={tmp_path / 'stopped'}") == 143
    monkeypatch.undo()
    (run,) = run_dirs(tmp_path / "stopped", "digits")
    assert f"stopped at step {last_of_epoch_2} (terminated)" in (run / "log.txt").read_text()
    assert "epoch 2/4" not in (run / "log.txt").read_text()  # epoch 2's evaluation has not run

    assert launch(*recipe, "--resume", run, f"run.output={tmp_path / 'stopped'}") == 0
    step_file = run / "checkpoints" / f"step-{last_of_epoch_2:08d}.pt"
    assert f"resumed from {step_file} at epoch 2, step {last_of_epoch_2}" in (run / "log.txt").read_text()
    assert_same_weights(final_weights(run), final_weights(whole))
    resumed, uninterrupted = scalars(run), scalars(whole)
    for tag in ("train/loss", "val/acc1", "val/loss"):
        assert [s for s, _ in resumed[tag]] == [s for s, _ in uninterrupted[tag]], tag  # each evaluation once
    assert resumed["val/acc1"] == uninterrupted["val/acc1"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_on_two_workers_with_loader_workers_stops_all_at_one_step_with_a_checkpoint(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    process = start_launch(DIGITS, "--nproc", "2", "data.num_workers=2", "train.epochs=100", "checkpoint.every_n_epochs=100",
                             f"run.output={tmp_path}", cwd=tmp_path)  # fmt: skip
    wait_for_file_text("digits/*/log.rank1.txt", "epoch 2/100", tmp_path)
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)  # Ctrl-C: the terminal signals the whole group
    else:
        process.send_signal(sig)  # kill PID: the launcher alone, which passes it on
    output, _ = process.communicate(timeout=120)
    assert process.returncode == code, output
    (run,) = run_dirs(tmp_path, "digits")
    steps = {int((run / f"log.rank{r}.txt").read_text().split("stopped at step ")[1].split()[0]) for r in (0, 1)}
    assert len(steps) == 1  # both ranks at the same step
    (stopped,) = steps
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == [f"step-{stopped:08d}.pt"]
    assert len(checkpoint.load(run / "checkpoints" / f"step-{stopped:08d}.pt")["rng"]) == 2
    time.sleep(1)
    assert session_members(process.pid) == []  # no orphan: workers and loader workers gone


@pytest.mark.parametrize(("loader_workers", "asynchronous"), [(0, False), (2, True)])
def test_two_ranks_killed_mid_epoch_resume_bitwise_to_the_uninterrupted_run(
    loader_workers: int, asynchronous: bool, tmp_path: Path
) -> None:
    # 2 ranks, 5 batches an epoch each (719 samples a rank, batch 128); a checkpoint at step 7,
    # mid-epoch; SIGKILL to every process; resume to step 15. The recipe augments at random.
    recipe = (DIGITS, "--nproc", "2", "train.batch_size=128", "train.max_steps=15", "checkpoint.every_n_steps=7",
              "checkpoint.every_n_epochs=null", "logging.every_n_steps=1", f"data.num_workers={loader_workers}",
              f"checkpoint.asynchronous={asynchronous}")  # fmt: skip
    process = start_launch(*recipe, f"run.output={tmp_path / 'killed'}", cwd=tmp_path)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("killed/digits/*/checkpoints/step-00000007.pt.sha256")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint at step 7"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # no goodbye: a machine that dies
    process.wait()
    (run,) = run_dirs(tmp_path / "killed", "digits")
    progress = final_checkpoint(run)["progress"]
    assert (progress["epoch"], progress["batches_done"], progress["step"]) == (1, 2, 7)  # 2 batches into the 2nd epoch
    assert run_launch(*recipe, "--resume", run, f"run.output={tmp_path / 'killed'}", cwd=tmp_path).returncode == 0
    assert run_launch(*recipe, f"run.output={tmp_path / 'whole'}", cwd=tmp_path).returncode == 0
    (whole,) = run_dirs(tmp_path / "whole", "digits")
    resumed, uninterrupted = (final_checkpoint(r) for r in (run, whole))
    assert resumed["progress"]["step"] == uninterrupted["progress"]["step"] == 15
    assert_same_weights(resumed["model"], uninterrupted["model"])
    for a, b in zip(resumed["optimizer"]["state"].values(), uninterrupted["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)  # AdamW's moments and step counts
    losses, expected = scalars(run)["train/loss"], scalars(whole)["train/loss"]
    assert [s for s, _ in losses] == list(range(1, 16))
    assert losses == expected  # every step's loss, bitwise
