"""Resuming on another number of ranks: the learning-rate schedule goes on as it would have.

A run is trained for 3 epochs on one world size, then resumed from a mid-epoch checkpoint on
the other (2 -> 1 and 1 -> 2 ranks). The learning rate of every step of the resumed run, read
back from TensorBoard, must be what the schedule gives a run that took the same steps and ended
the same epochs: the schedule replayed here with torch's own classes on one parameter.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, final_checkpoint, launch, run_dirs, run_launch, scalars

from launcher import checkpoint

pytestmark = pytest.mark.slow

DIGITS = ROOT / "recipes" / "digits.yaml"
LR = 0.003  # digits.yaml's

# Each: the recipe override, and the same schedule built on an optimizer (None: no schedule).
SCHEDULES = {
    "none": ("scheduler=null", None),
    "per_step": (
        "scheduler={name: StepLR, step_size: 4, gamma: 0.8, interval: step}",
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8),
    ),
    "per_epoch": (
        "scheduler={name: StepLR, step_size: 1, gamma: 0.5, interval: epoch}",
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    ),
    # mode max on a falling loss: every epoch is "no better", so the rate halves after each.
    "plateau": (
        "scheduler={name: ReduceLROnPlateau, mode: max, patience: 0, factor: 0.5}",
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5),
    ),
}


def expected_rates(schedule, last_step: int, epoch_ends: dict[int, float], per_step: bool) -> dict[int, float]:
    """The rate each step 1..last_step trains with, for a schedule stepped after every optimizer
    step (`per_step`) or at each epoch's end (`epoch_ends`: step -> that evaluation's val/loss)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = schedule(optimizer) if schedule else None
    rates = {}
    for step in range(1, last_step + 1):
        rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()  # no gradient: changes nothing, but keeps torch's order of calls
        if scheduler is None:
            continue
        if per_step:
            scheduler.step()
        elif step in epoch_ends:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(epoch_ends[step])
            else:
                scheduler.step()
    return rates


def two_ranks(*args: str | Path, cwd: Path) -> None:
    result = run_launch(*args, "--nproc", "2", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr


def train_then_resume(override: str, direction: str, tmp_path: Path) -> tuple[Path, int, int]:
    """Train 3 epochs of digits on one world size, resume from a mid-epoch checkpoint on the
    other; the run folder, the step resumed from, and the first run's steps in all."""
    common = (
        override,
        "train.epochs=3",
        "logging.every_n_steps=1",
        "checkpoint.every_n_steps=5",
        "checkpoint.keep_last=10",
        f"run.output={tmp_path}",
    )
    torch.set_num_threads(2)
    if direction == "2->1":
        two_ranks(DIGITS, *common, cwd=tmp_path)  # 11 steps an epoch
        (run,) = run_dirs(tmp_path, "digits")
        stop_at, first_total = 15, 33  # 4 steps into epoch 2
        assert launch(DIGITS, "--cpu", *common, "--resume", checkpoint.step_path(run / "checkpoints", stop_at)) == 0
    else:
        assert launch(DIGITS, "--cpu", *common) == 0  # 22 steps an epoch
        (run,) = run_dirs(tmp_path, "digits")
        stop_at, first_total = 25, 66  # 3 steps into epoch 2
        two_ranks(DIGITS, *common, "--resume", checkpoint.step_path(run / "checkpoints", stop_at), cwd=tmp_path)
    final = final_checkpoint(run)["progress"]
    assert final["epoch"] == 3  # the resumed run trained to its end
    return run, stop_at, first_total


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_the_schedule_goes_on_as_it_would_have_after_resuming_on_another_world_size(
    schedule: str, direction: str, tmp_path: Path
) -> None:
    override, build = SCHEDULES[schedule]
    run, stop_at, _ = train_then_resume(override, direction, tmp_path)
    logged = scalars(run)
    rates = dict(logged["train/lr"])
    epoch_ends = dict(logged["val/loss"])
    last = max(rates)
    assert final_checkpoint(run)["progress"]["step"] == last
    assert sorted(rates) == list(range(1, last + 1))  # every step once: no gap, no duplicate
    assert len(epoch_ends) == 3
    expected = expected_rates(build, last, epoch_ends, per_step="interval: step" in override)
    resumed = {step: rate for step, rate in rates.items() if step > stop_at}
    assert resumed == pytest.approx({step: expected[step] for step in resumed}, rel=1e-6), (rates, expected)
    if schedule != "none":  # the schedule did change the rate after the resume
        assert len(set(resumed.values())) > 1


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_a_cosine_goes_on_from_the_same_fraction_and_ends_with_the_resumed_run(direction: str, tmp_path: Path) -> None:
    # T_max is filled in from the first run's steps; the resumed run has another number of them.
    run, stop_at, first_total = train_then_resume(
        "scheduler={name: CosineAnnealingLR, interval: step}", direction, tmp_path
    )
    rates = dict(scalars(run)["train/lr"])
    last = max(rates)
    assert last != first_total and sorted(rates) == list(range(1, last + 1))
    # Before the resume: the cosine over the first run's length. After it: from the same fraction
    # of the curve, to its end at the resumed run's last step, in that run's number of steps.
    done, left = stop_at / first_total, last - stop_at
    fraction = {step: (step - 1) / first_total for step in range(1, stop_at + 1)}
    fraction.update({stop_at + j: done + (j - 1) * (1 - done) / left for j in range(1, left + 1)})
    expected = {step: LR * (1 + math.cos(math.pi * f)) / 2 for step, f in fraction.items()}
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert rates[last] < 0.01 * LR  # it ends at the bottom, not part-way or climbing back


@pytest.mark.faults
def test_resuming_on_another_number_of_ranks_keeps_the_position_in_samples(tmp_path: Path) -> None:
    common = ("train.epochs=2", "checkpoint.every_n_steps=5", "checkpoint.keep_last=10", f"run.output={tmp_path}")
    result = run_launch(DIGITS, "--nproc", "2", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path, "digits")
    step15 = checkpoint.step_path(run / "checkpoints", 15)  # 2 ranks x 64: 11 steps an epoch; 4 into the 2nd
    assert checkpoint.load(step15)["progress"]["samples_done"] == 4 * 64 * 2
    torch.set_num_threads(2)
    assert launch(DIGITS, "--cpu", *common, "--resume", step15) == 0  # 1 rank x 64: 22 steps an epoch
    log = (run / "log.txt").read_text()
    assert "the checkpoint is from 2 rank(s), this run has 1: the epoch goes on after 512 of its samples" in log
    final = final_checkpoint(run)["progress"]
    assert (final["epoch"], final["step"]) == (2, 15 + (22 - 8))  # the rest of the epoch: 14 batches of 64
