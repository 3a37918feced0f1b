"""Fault injection: what a run survives, for real (CPU, gloo, subprocesses, real signals).

Each test breaks a run the way machines break them and checks that no finished step is lost,
nothing half-written is loaded, and the resumed run is the run that would have happened.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_same_weights, launch, launch_process, run_dirs, scalars, session_members, weights

from launcher import checkpoint
from launcher.training import stopping

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DIGITS = ROOT / "recipes" / "digits.yaml"


def wait_for_file_text(pattern: str, text: str, folder: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(text in p.read_text(errors="replace") for p in folder.glob(pattern)):
            return
        time.sleep(0.1)
    raise AssertionError(f"'{text}' did not appear in {folder}/{pattern} within {timeout_s} s")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 143)])
def test_a_signal_on_a_local_run_checkpoints_the_step_and_resume_ends_as_if_never_stopped(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    recipe = (DIGITS, "--cpu", "train.epochs=6", "checkpoint.every_n_epochs=100")
    process = launch_process(*recipe, f"run.output={tmp_path / 'stopped'}", cwd=tmp_path)
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
    assert_same_weights(weights(run), weights(whole))


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
    assert_same_weights(weights(run), weights(whole))
    resumed, uninterrupted = scalars(run), scalars(whole)
    for tag in ("train/loss", "val/acc1", "val/loss"):
        assert [s for s, _ in resumed[tag]] == [s for s, _ in uninterrupted[tag]], tag  # each evaluation once
    assert resumed["val/acc1"] == uninterrupted["val/acc1"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_on_two_workers_with_loader_workers_stops_all_at_one_step_with_a_checkpoint(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    process = launch_process(DIGITS, "--nproc", "2", "data.num_workers=2", "train.epochs=100", "checkpoint.every_n_epochs=100",
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


def test_a_truncated_newest_checkpoint_is_passed_over_and_the_resumed_run_ends_the_same(tmp_path: Path) -> None:
    recipe = (DIGITS, "--cpu", "train.epochs=4", "checkpoint.every_n_epochs=1", f"run.output={tmp_path}")
    assert launch(*recipe) == 0
    (run,) = run_dirs(tmp_path, "digits")
    uninterrupted = weights(run)
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
    assert_same_weights(weights(run), uninterrupted)


SLOW_WRITES = """
import io, sys, time, torch
real_save = torch.save

def slow_save(obj, file, *args, **kwargs):
    # The checkpoint's bytes reach the file in small pieces, slowly: a big model on a slow disk.
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    for start in range(0, len(data), 64 * 1024):
        file.write(data[start:start + 64 * 1024])
        file.flush()
        time.sleep(0.1)

torch.save = slow_save
from launcher.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_while_a_checkpoint_is_written_leaves_no_partial_file_and_the_previous_loads(tmp_path: Path) -> None:
    # No best.pt: where accuracy improves, the step checkpoint is a second name for best.pt, and
    # the slow write this test cuts short would be best.pt's.
    recipe = (DIGITS, "--cpu", "train.epochs=3", "checkpoint.every_n_epochs=1", "checkpoint.best=null")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITES, *map(str, recipe), f"run.output={tmp_path / 'killed'}"], cwd=tmp_path,
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
    assert_same_weights(weights(run), weights(whole))


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

    result = subprocess.run(
        [sys.executable, "-m", "launcher", *map(str, recipe), "train.epochs=3", "--resume", run],
        check=False, capture_output=True, text=True, cwd=tmp_path, preexec_fn=small_disk, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"error: cannot write the checkpoint {run / 'checkpoints'}" in result.stderr
    assert "File too large; the complete checkpoints already in" in result.stderr
    assert "Traceback" not in result.stderr
    assert first.read_bytes() == before and checkpoint.load(first)["progress"]["step"] == 22
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000022.pt"]


HANGS = '''
import os, time
from torch import nn

class HangsOnRank1(nn.Module):
    """A linear model whose rank 1 falls asleep for good in its 3rd training forward."""
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.layer, self.calls = nn.Linear(in_features, num_classes), 0
    def forward(self, x):
        self.calls += self.training
        if self.training and os.environ["RANK"] == "1" and self.calls == 3:
            time.sleep(10**6)
        return self.layer(x.flatten(1))
'''


def test_a_rank_that_hangs_ends_the_run_within_the_timeout_with_its_stack_in_its_log(tmp_path: Path) -> None:
    (tmp_path / "hangs.py").write_text(HANGS)
    recipe = tmp_path / "hangs.yaml"
    recipe.write_text("data: {dataset: {name: digits}, num_workers: 0, transforms: {train: [ToTensor], val: [ToTensor]}}\n"
                      "model: {name: 'hangs:HangsOnRank1'}\ntrain: {epochs: 2, batch_size: 16}\n"
                      "distributed: {timeout_s: 10, stall_s: 3}\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "launcher", recipe, "--nproc", "2", f"run.output={tmp_path}"],
                            check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
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


def listening_addresses(pids: list[int]) -> set[str]:
    """The addresses the processes `pids` listen on (TCP, from /proc), as 'ip:port'."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                ip = (
                    ".".join(str(b) for b in raw[::-1])
                    if width == 8
                    else ":".join(raw[i : i + 4][::-1].hex() for i in range(0, 16, 4))
                )
                found.add(f"{ip}:{int(port, 16)}")
    return found


def test_a_single_node_run_listens_on_loopback_only(tmp_path: Path) -> None:
    process = launch_process(DIGITS, "--nproc", "2", "train.epochs=100", f"run.output={tmp_path}", cwd=tmp_path)
    wait_for_file_text("digits/*/log.rank1.txt", "epoch 1/100", tmp_path)
    addresses = listening_addresses(session_members(process.pid))
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert addresses  # the workers' store and gloo's own listeners
    assert all(a.startswith("127.") for a in addresses), addresses


@pytest.mark.parametrize(("loader_workers", "asynchronous"), [(0, False), (2, True)])
def test_two_ranks_killed_mid_epoch_resume_bitwise_to_the_uninterrupted_run(
    loader_workers: int, asynchronous: bool, tmp_path: Path
) -> None:
    # 2 ranks, 5 batches an epoch each (719 samples a rank, batch 128); a checkpoint at step 7,
    # mid-epoch; SIGKILL to every process; resume to step 15. The recipe augments at random.
    recipe = (DIGITS, "--nproc", "2", "train.batch_size=128", "train.max_steps=15", "checkpoint.every_n_steps=7",
              "checkpoint.every_n_epochs=null", "logging.every_n_steps=1", f"data.num_workers={loader_workers}",
              f"checkpoint.asynchronous={asynchronous}")  # fmt: skip
    process = launch_process(*recipe, f"run.output={tmp_path / 'killed'}", cwd=tmp_path)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("killed/digits/*/checkpoints/step-00000007.pt.sha256")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint at step 7"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # no goodbye: a machine that dies
    process.wait()
    (run,) = run_dirs(tmp_path / "killed", "digits")
    progress = checkpoint.load(checkpoint.latest(run / "checkpoints"))["progress"]
    assert (progress["epoch"], progress["batches_done"], progress["step"]) == (1, 2, 7)  # 2 batches into the 2nd epoch
    assert subprocess.run([sys.executable, "-m", "launcher", *map(str, recipe), "--resume", run, f"run.output={tmp_path / 'killed'}"],
                          check=False, capture_output=True, cwd=tmp_path, timeout=300).returncode == 0  # fmt: skip
    assert subprocess.run([sys.executable, "-m", "launcher", *map(str, recipe), f"run.output={tmp_path / 'whole'}"],
                          check=False, capture_output=True, cwd=tmp_path, timeout=300).returncode == 0  # fmt: skip
    (whole,) = run_dirs(tmp_path / "whole", "digits")
    resumed, uninterrupted = (checkpoint.load(checkpoint.latest(r / "checkpoints")) for r in (run, whole))
    assert resumed["progress"]["step"] == uninterrupted["progress"]["step"] == 15
    assert_same_weights(resumed["model"], uninterrupted["model"])
    for a, b in zip(resumed["optimizer"]["state"].values(), uninterrupted["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)  # AdamW's moments and step counts
    losses, expected = scalars(run)["train/loss"], scalars(whole)["train/loss"]
    assert [s for s, _ in losses] == list(range(1, 16))
    assert losses == expected  # every step's loss, bitwise


def test_resuming_with_another_model_data_or_optimizer_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = (DIGITS, "--cpu", f"run.output={tmp_path}")
    assert launch(*recipe, "train.epochs=1") == 0
    (run,) = run_dirs(tmp_path, "digits")
    capsys.readouterr()
    assert launch(*recipe, "train.epochs=2", "optimizer.lr=0.01", "--resume", run) == 2
    err = capsys.readouterr().err
    assert f"--resume {run}: this recipe trains something else than the run did:\n  optimizer.lr: 0.003 -> 0.01" in err
    assert "add --force to go on anyway" in err and "train.epochs" not in err  # a longer run is the same run
    assert len(checkpoint.saved_steps(run / "checkpoints")) == 1  # nothing ran
    assert launch(*recipe, "train.epochs=2", "optimizer.lr=0.01", "--resume", run, "--force") == 0
    assert "--force: resuming with optimizer.lr: 0.003 -> 0.01" in capsys.readouterr().err


def test_resuming_on_another_number_of_ranks_keeps_the_position_in_samples(tmp_path: Path) -> None:
    common = ("train.epochs=2", "checkpoint.every_n_steps=5", "checkpoint.keep_last=10", f"run.output={tmp_path}")
    result = subprocess.run(
        [sys.executable, "-m", "launcher", DIGITS, "--nproc", "2", *common],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path, "digits")
    step15 = checkpoint.step_path(run / "checkpoints", 15)  # 2 ranks x 64: 11 steps an epoch; 4 into the 2nd
    assert checkpoint.load(step15)["progress"]["samples_done"] == 4 * 64 * 2
    torch.set_num_threads(2)
    assert launch(DIGITS, "--cpu", *common, "--resume", step15) == 0  # 1 rank x 64: 22 steps an epoch
    log = (run / "log.txt").read_text()
    assert "the checkpoint is from 2 rank(s), this run has 1: the epoch goes on after 512 of its samples" in log
    final = checkpoint.load(checkpoint.latest(run / "checkpoints"))["progress"]
    assert (final["epoch"], final["step"]) == (2, 15 + (22 - 8))  # the rest of the epoch: 14 batches of 64


def test_keep_last_two_of_six_and_a_checkpoint_that_cannot_be_deleted_does_not_stop_training(tmp_path: Path) -> None:
    recipe = (DIGITS, "--cpu", "checkpoint.every_n_epochs=1", "checkpoint.keep_last=2", f"run.output={tmp_path}")
    assert launch(*recipe, "train.epochs=1") == 0
    (run,) = run_dirs(tmp_path, "digits")
    stuck = checkpoint.step_path(run / "checkpoints", 1)
    stuck.mkdir()  # an old "checkpoint" that unlink cannot remove, even as root
    (stuck / "x").write_text("")
    checkpoint.checksum_path(stuck).write_text(f"0  {stuck.name}\n")
    torch.set_num_threads(2)
    assert launch(*recipe, "train.epochs=6", "--resume", run) == 0  # 5 more saves, each followed by pruning
    assert f"could not delete the old checkpoint {stuck}; training goes on" in (run / "log.txt").read_text()
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000110.pt", "step-00000132.pt"]
    assert (run / "checkpoints" / "best.pt").exists() and stuck.is_dir()


def test_an_output_folder_that_cannot_be_created_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert launch(DIGITS, "--cpu", f"run.output={blocker}") == 1
    err = capsys.readouterr().err
    assert (
        f"error: run.output={blocker}: cannot create the run folder under {blocker / 'digits'}: Not a directory" in err
    )
    assert "Traceback" not in err
