"""Schedules made of schedules (warmup then cosine through SequentialLR) and optimizer parameter
groups (weight decay on matrices only), both from the recipe.

The built schedules are compared with torch's own classes built by hand for the same steps; the
trained runs' learning rates are read back from TensorBoard; a run stopped mid-epoch and resumed
ends with the same weights, bit for bit, as the run that was not interrupted.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, final_checkpoint, launch, run_dirs, run_launch, scalars

from launcher import checkpoint
from launcher.cli.recipe_checks import problems_in
from launcher.config.components import ComponentError
from launcher.config.loading import load_recipe
from launcher.config.schema import Scheduler
from launcher.distributed.runtime import single_process
from launcher.training.optim import build_scheduler
from launcher.training.setup import Setup, setup

LR, ETA_MIN, WARMUP = 3.0e-3, 3.0e-4, 8

# A tiny run: digits through a small MLP (hidden layer of 32, batch norm on the inputs), 22 steps
# an epoch in one process; warmup for WARMUP steps, then a cosine to ETA_MIN at the run's end.
RECIPE = f"""
data:
  dataset: {{name: digits}}
  transforms: {{train: [ToTensor], val: [ToTensor]}}
  num_workers: 0
model: {{name: mlp, hidden: [32]}}
optimizer:
  name: AdamW
  lr: {LR}
  betas: [0.9, 0.95]
  weight_decay: 0.1
  param_groups:
    - {{ndim: 1, weight_decay: 0.0}}
scheduler:
  name: SequentialLR
  interval: step
  schedulers:
    - {{name: LinearLR, start_factor: 0.01, total_iters: {WARMUP}}}
    - {{name: CosineAnnealingLR, eta_min: {ETA_MIN}}}
  milestones: [{WARMUP}]
train: {{max_steps: 30, batch_size: 64}}
logging: {{every_n_steps: 1}}
checkpoint: {{every_n_epochs: 1, every_n_steps: 13, keep_last: 10, best: null}}
"""


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def built(folder: Path, *overrides: str) -> Setup:
    return setup(load_recipe(write_recipe(folder), overrides, check=problems_in), single_process(True))


def by_hand(steps: int, milestone: int = WARMUP, lr: float = LR) -> list[float]:
    """The learning rate of each of `steps` steps under torch's own SequentialLR(LinearLR, CosineAnnealingLR)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=milestone)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - milestone, eta_min=ETA_MIN)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[milestone])
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def rates_of(scheduler: object, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]
    return rates


# --- schedules made of schedules ---------------------------------------------------------------


def test_the_inner_cosine_lasts_the_rest_of_the_run_after_the_warmup(tmp_path: Path) -> None:
    s = built(tmp_path)
    assert isinstance(s.scheduler, torch.optim.lr_scheduler.SequentialLR)
    (end,) = s.schedule_ends  # the cosine: the schedule that ends with the run
    assert isinstance(end.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (end.scheduler.T_max, end.start) == (30 - WARMUP, WARMUP)
    assert rates_of(s.scheduler, s.optimizer, 30) == pytest.approx(by_hand(30), rel=1e-12)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(ETA_MIN, rel=1e-9)  # at the bottom after the last step


def test_schedules_inside_schedules_get_the_optimizer_and_their_share_of_the_run() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    nested = Scheduler.model_validate(
        {
            "name": "SequentialLR",
            "milestones": [5, 20],
            "schedulers": [
                {"name": "LinearLR", "start_factor": 0.1, "total_iters": 5},
                {"name": "CosineAnnealingLR"},  # between the milestones: T_max 15
                {"name": "ChainedScheduler", "schedulers": [{"name": "CosineAnnealingLR"}, {"name": "ConstantLR"}]},
            ],
        }
    )
    scheduler, ends = build_scheduler(nested, optimizer, length=50)
    first, middle, chained = scheduler._schedulers  # torch keeps them there; no public accessor
    assert middle.T_max == 15 and chained._schedulers[0].T_max == 30  # the rest of the run, after 20
    assert [(type(e.scheduler).__name__, e.argument, e.start) for e in ends] == [("CosineAnnealingLR", "T_max", 20)]
    assert all(s.optimizer is optimizer for s in (first, middle, chained, *chained._schedulers))
    # The recipe's own T_max is kept.
    given = Scheduler.model_validate(
        {"name": "ChainedScheduler", "schedulers": [{"name": "CosineAnnealingLR", "T_max": 7}]}
    )
    scheduler, ends = build_scheduler(given, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), length=50)
    assert scheduler._schedulers[0].T_max == 7 and ends == []


def test_milestones_past_the_run_leave_no_room_for_a_filled_in_length(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"scheduler\.schedulers\.1 \(CosineAnnealingLR\): .*milestones"):
        built(tmp_path, "scheduler.milestones=[30]", "scheduler.schedulers.0.total_iters=30")


# --- parameter groups --------------------------------------------------------------------------


def groups_of(s: Setup) -> dict[str, dict]:
    """Each trainable parameter's name -> its optimizer group's options."""
    by_id = {id(p): name for name, p in s.net.named_parameters()}
    found: dict[str, dict] = {}
    for group in s.optimizer.param_groups:
        for parameter in group["params"]:
            assert by_id[id(parameter)] not in found  # each parameter in one group only
            found[by_id[id(parameter)]] = {k: v for k, v in group.items() if k != "params"}
    return found


def test_weight_decay_on_matrices_only(tmp_path: Path) -> None:
    s = built(tmp_path)
    groups = groups_of(s)
    assert set(groups) == {name for name, _ in s.net.named_parameters()}  # every trainable parameter
    for name, parameter in s.net.named_parameters():
        assert groups[name]["weight_decay"] == (0.0 if parameter.ndim == 1 else 0.1), name
    assert [len(g["params"]) for g in s.optimizer.param_groups] == [2, 4]  # the rest (matrices) first
    # The optimizer's own arguments in each (lr as the schedule started it: initial_lr).
    assert all(g["initial_lr"] == LR and list(g["betas"]) == [0.9, 0.95] for g in s.optimizer.param_groups)


def test_the_first_group_that_chooses_a_parameter_wins_and_frozen_ones_join_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    groups = (
        "[{params: ['net.1.*'], lr: 0.5}, {params: ['*.bias'], weight_decay: 0.0}, {params: ['net.5.bias'], lr: 9.0}]"
    )
    with caplog.at_level("INFO", logger="launcher"):
        s = built(tmp_path, f"optimizer.param_groups={groups}", "model.freeze=['net.2.*']", "scheduler=null")
    found = groups_of(s)
    assert "net.2.weight" not in found and "net.2.bias" not in found  # frozen
    assert found["net.1.bias"]["lr"] == 0.5 and found["net.1.bias"]["weight_decay"] == 0.1  # the first group's
    assert (found["net.5.bias"]["lr"], found["net.5.bias"]["weight_decay"]) == (
        LR,
        0.0,
    )  # the second's, not the third's
    assert found["net.5.weight"]["weight_decay"] == 0.1
    assert len(s.optimizer.param_groups) == 3  # the third chose only net.5.bias, taken: dropped
    assert "optimizer group optimizer.param_groups.2: no trainable parameter left" in caplog.text
    assert (
        "optimizer group optimizer.param_groups.1: 1 tensors, 10 parameters with {'weight_decay': 0.0}: net.5.bias"
        in caplog.text
    )


def test_a_group_that_chooses_no_parameter_is_an_error(tmp_path: Path) -> None:
    groups = "[{params: ['*.bais', '*.bias']}, {ndim: 3}, {params: ['net.1.*'], ndim: 2}]"
    with pytest.raises(ComponentError) as caught:
        built(tmp_path, f"optimizer.param_groups={groups}")
    message = str(caught.value)
    assert "optimizer.param_groups.0.params: '*.bais' matches no parameter; names look like net.1.weight" in message
    assert "optimizer.param_groups.1.ndim: no parameter has 3 dimension(s)" in message
    assert "optimizer.param_groups.2: no parameter is named 'net.1.*' with 2 dimension(s)" in message


# --- trained end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_warmup_then_cosine_as_logged_and_a_mid_epoch_resume_is_bitwise(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    assert launch(recipe, "--cpu", f"run.output={tmp_path}") == 0
    (run,) = run_dirs(tmp_path, "tiny")
    rates = dict(scalars(run)["train/lr"])
    assert sorted(rates) == list(range(1, 31))
    assert [rates[step] for step in range(1, 31)] == pytest.approx(by_hand(30), rel=1e-6)  # float32 in TensorBoard
    assert rates[1] == pytest.approx(0.01 * LR) and max(rates.values()) == pytest.approx(LR)
    uninterrupted = final_checkpoint(run)
    assert uninterrupted["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        ETA_MIN
    )  # the bottom, after the last step
    assert [g["weight_decay"] for g in uninterrupted["optimizer"]["param_groups"]] == [0.1, 0.0]

    # Step 13 is mid-epoch 1 (22 steps an epoch) and mid-cosine. TensorBoard's reader orders event
    # files by the second their writer started: the resumed one must start in a later second.
    time.sleep(1.1)
    assert (
        launch(recipe, "--cpu", f"run.output={tmp_path}", "--resume", checkpoint.step_path(run / "checkpoints", 13))
        == 0
    )
    resumed = final_checkpoint(run)
    assert resumed["progress"] == uninterrupted["progress"]
    assert_same_weights(resumed["model"], uninterrupted["model"])
    assert resumed["optimizer"]["param_groups"] == uninterrupted["optimizer"]["param_groups"]
    assert dict(scalars(run)["train/lr"]) == rates  # steps 14..30 logged again, the same rates


@pytest.mark.slow
def test_two_ranks_scale_every_groups_rate_and_a_nested_cosine_stretches_to_one_rank(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    common = (
        f"run.output={tmp_path}", "train.max_steps=null", "train.epochs=3", "checkpoint.every_n_steps=5",
        "optimizer.param_groups=[{ndim: 1, weight_decay: 0.0, lr: 0.001}]", "distributed.scale_lr=true",
    )  # fmt: skip
    result = run_launch(recipe, "--nproc", "2", *common, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path, "tiny")
    two_ranks = checkpoint.load(checkpoint.step_path(run / "checkpoints", 15))
    # 11 steps an epoch on 2 ranks: 33 in all, the cosine's 25 after the warmup.
    assert [g["initial_lr"] for g in two_ranks["optimizer"]["param_groups"]] == [2 * LR, 2 * 0.001]

    stop_at, first_total = 15, 33
    assert launch(recipe, "--cpu", *common, "--resume", checkpoint.step_path(run / "checkpoints", stop_at)) == 0
    rates = dict(scalars(run)["train/lr"])
    last = max(rates)
    assert last == final_checkpoint(run)["progress"]["step"] and last != first_total
    # Up to the resume: warmup, then the cosine over 33 - 8 steps (twice the rate: scale_lr).
    # After it, on 1 rank (and the recipe's rate, from the checkpoint: 2 x LR): the cosine goes on
    # from the same fraction of its curve and ends at the resumed run's end.
    expected = {step: rate for step, rate in enumerate(by_hand(first_total, lr=2 * LR), start=1) if step <= stop_at}
    done, left = (stop_at - WARMUP) / (first_total - WARMUP), last - stop_at
    for j in range(1, left + 1):
        fraction = done + (j - 1) * (1 - done) / left
        expected[stop_at + j] = (
            ETA_MIN + (2 * LR - ETA_MIN) * (1 + torch.cos(torch.tensor(torch.pi * fraction)).item()) / 2
        )
    assert rates == pytest.approx(expected, rel=1e-5)
    assert final_checkpoint(run)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(ETA_MIN, rel=1e-6)
    assert "CosineAnnealingLR was 25 steps long, for 2 rank(s)" in (run / "log.txt").read_text()
