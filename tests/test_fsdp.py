"""distributed.strategy: fsdp on 2 gloo ranks, for real: the same loss curve as DDP with half the
optimizer state per rank; sharded checkpoints (torch.distributed.checkpoint) that resume bitwise
after a SIGKILL, go on on another world size, refuse a truncated shard and survive a kill during
an asynchronous save; `launch eval`, `predict` and `export` read them directly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, RECIPES, SMALL_LM, run_dirs, run_launch, scalars, start_launch

from launcher import checkpoint
from launcher.checkpoint import sharded
from launcher.config.loading import load_recipe
from launcher.models.gpt import GPT

TINY_LM = RECIPES / "tiny_lm.yaml"
DIGITS = RECIPES / "digits.yaml"
SHARDED_LM = (*SMALL_LM, "distributed.fsdp.shard=[TransformerBlock]")
FSDP = "distributed.strategy=fsdp"


def _run(tmp_path: Path, name: str, *overrides: str, recipe: Path = TINY_LM, nproc: int = 2) -> Path:
    """A run to its end on `nproc` gloo ranks (1: one process); its folder."""
    output = tmp_path / name
    where = ("--nproc", str(nproc)) if nproc > 1 else ("--cpu",)
    result = run_launch(recipe, *where, f"run.output={output}", *overrides, cwd=tmp_path, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(output, recipe.stem)
    return run


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The newest complete checkpoint's model, put together from its shards."""
    newest = checkpoint.latest(run / "checkpoints")
    assert newest is not None and sharded.is_sharded(newest)
    return sharded.load_whole(newest)


def _memory(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["memory"]


@pytest.mark.slow
def test_fsdp_follows_ddp_and_holds_half_the_optimizer_state_per_rank(tmp_path: Path) -> None:
    steps = ("train.max_steps=8", "train.grad_accum_steps=2", "checkpoint.every_n_steps=4")
    ddp = _run(tmp_path, "ddp", *SHARDED_LM, *steps)
    fsdp = _run(tmp_path, "fsdp", *SHARDED_LM, *steps, FSDP)
    a, b = scalars(ddp), scalars(fsdp)
    assert [s for s, _ in a["train/loss"]] == [s for s, _ in b["train/loss"]] == list(range(1, 9))
    for (_, x), (_, y) in zip(a["train/loss"] + a["val/loss"], b["train/loss"] + b["val/loss"], strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-6)
    # Sharded over 2 ranks: each holds about half of every parameter, gradient and optimizer state.
    for whole, part in zip(_memory(ddp), _memory(fsdp), strict=True):
        for key in ("parameters", "gradients", "optimizer_state"):
            assert 0.45 < part[key] / whole[key] < 0.55, (key, part[key], whole[key])
    assert (
        "memory per rank: parameters 67.8 kB, gradients 67.8 kB, optimizer state 135.6 kB (each of 2 rank(s))"
        in (fsdp / "log.rank0.txt").read_text()
    )
    # The checkpoints: a folder each, every rank's shard listed with its digest beside it.
    newest = checkpoint.latest(fsdp / "checkpoints")
    assert newest is not None and newest.is_dir()
    listed = checkpoint.checksum_path(newest).read_text()
    assert f"{newest.name}/__0_0.distcp" in listed and f"{newest.name}/__1_0.distcp" in listed
    assert [p.name for p in checkpoint.saved_steps(fsdp / "checkpoints")] == ["step-00000004.pt", "step-00000008.pt"]
    # Keeping the gathered blocks from the forward to the backward changes when, not what, it computes.
    kept = scalars(_run(tmp_path, "kept", *SHARDED_LM, *steps, FSDP, "distributed.fsdp.reshard_after_forward=false"))
    assert kept["train/loss"] == b["train/loss"] and kept["val/loss"] == b["val/loss"]


@pytest.mark.slow
def test_fsdp_with_compiled_units_and_activation_checkpointing_follows_eager_fsdp(tmp_path: Path) -> None:
    steps = (*SHARDED_LM, FSDP, "train.max_steps=6", "checkpoint.every_n_steps=3")
    eager = _run(tmp_path, "eager", *steps)
    compiled = _run(
        tmp_path, "compiled", *steps, "train.compile=true", "model.activation_checkpointing=[TransformerBlock]"
    )
    a, b = scalars(eager), scalars(compiled)
    for (_, x), (_, y) in zip(a["train/loss"] + a["val/loss"], b["train/loss"] + b["val/loss"], strict=True):
        assert y == pytest.approx(x, rel=1e-5)
    assert "first step:" in (compiled / "log.rank0.txt").read_text()
    assert _weights(eager).keys() == _weights(compiled).keys()


@pytest.mark.slow
def test_bf16_fsdp_gathers_bf16_parameters_and_follows_ddp_under_autocast(tmp_path: Path) -> None:
    steps = (*SHARDED_LM, "train.max_steps=6", "checkpoint.every_n_steps=3", "train.precision=bf16")
    ddp, fsdp = scalars(_run(tmp_path, "ddp", *steps)), scalars(_run(tmp_path, "fsdp", *steps, FSDP))
    losses = [(x, y) for (_, x), (_, y) in zip(ddp["train/loss"], fsdp["train/loss"], strict=True)]
    # bf16 parameters (FSDP's policy) against fp32 ones under bf16 autocast (DDP): close, not equal.
    assert all(y == pytest.approx(x, rel=2e-3) for x, y in losses)
    assert any(x != y for x, y in losses[1:])


@pytest.mark.slow
def test_fsdp_trains_the_digits_cnn_as_ddp_does(tmp_path: Path) -> None:
    steps = ("train.epochs=1", "train.max_steps=6", "train.batch_size=32", "logging.every_n_steps=1")
    fsdp = _run(tmp_path, "fsdp", *steps, FSDP, recipe=DIGITS)
    a, b = scalars(_run(tmp_path, "ddp", *steps, recipe=DIGITS)), scalars(fsdp)
    # The last step is best.pt's too: its checkpoint is a second name for best.pt's files (hard links).
    best, last = fsdp / "checkpoints" / "best.pt", checkpoint.step_path(fsdp / "checkpoints", 6)
    assert (best / "__1_0.distcp").stat().st_ino == (last / "__1_0.distcp").stat().st_ino
    sharded.verify(last)
    for tag in ("train/loss", "val/loss", "val/acc1"):
        for (_, x), (_, y) in zip(a[tag], b[tag], strict=True):
            assert y == pytest.approx(x, rel=1e-5, abs=1e-6), tag


@pytest.mark.slow
def test_bf16_channels_last_fsdp_trains_the_batchnorm_cnn_as_ddp_under_autocast_does(tmp_path: Path) -> None:
    """bf16 BatchNorm weights against fp32 running statistics fail inside FSDP's bf16 forward,
    and FSDP2 cannot shard channels-last parameters: each BatchNorm is its own fp32 unit, and
    only the batches go channels-last."""
    steps = (
        "train.epochs=1", "train.max_steps=6", "train.batch_size=32", "logging.every_n_steps=1",
        "train.precision=bf16", "train.channels_last=true",
    )  # fmt: skip
    fsdp, ddp = _run(tmp_path, "fsdp", *steps, FSDP, recipe=DIGITS), _run(tmp_path, "ddp", *steps, recipe=DIGITS)
    a, b = scalars(ddp), scalars(fsdp)
    log = (fsdp / "log.rank0.txt").read_text()
    assert "FSDP with bf16: 3 BatchNorm module(s) sharded as units of their own that compute in fp32" in log
    assert "train.channels_last with FSDP: the image batches channels-last, the parameters as they are" in log
    # bf16 parameters (FSDP) against fp32 ones under bf16 autocast (DDP): close, not equal.
    for tag in ("train/loss", "val/loss"):
        for (_, x), (_, y) in zip(a[tag], b[tag], strict=True):
            assert y == pytest.approx(x, rel=5e-3), tag
    assert max(abs(y - x) for (_, x), (_, y) in zip(a["train/loss"], b["train/loss"], strict=True)) > 0
    # The BatchNorm units change how the model is sharded, not its checkpoint's names or dtypes.
    ddp_last = checkpoint.latest(ddp / "checkpoints")
    assert ddp_last is not None
    whole = checkpoint.load(ddp_last)["model"]
    assert {k: v.dtype for k, v in _weights(fsdp).items()} == {k: v.dtype for k, v in whole.items()}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_and_eval_export_read_the_shards(tmp_path: Path) -> None:
    steps = (*SHARDED_LM, FSDP, "train.max_steps=12", "checkpoint.every_n_steps=4", "checkpoint.keep_last=2")
    whole = _run(tmp_path, "whole", *steps)
    assert [p.name for p in checkpoint.saved_steps(whole / "checkpoints")] == ["step-00000008.pt", "step-00000012.pt"]
    sharded.verify(whole / "checkpoints" / "best.pt")
    process = start_launch(TINY_LM, "--nproc", "2", f"run.output={tmp_path / 'killed'}", *steps, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed").glob("tiny_lm/*/checkpoints/step-00000004.pt.sha256")):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.stdout else ""
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (killed,) = run_dirs(tmp_path / "killed", "tiny_lm")
    assert checkpoint.latest(killed / "checkpoints") is not None
    time.sleep(1.1)  # a later second for TensorBoard's event file
    result = run_launch(TINY_LM, "--nproc", "2", *steps, "--resume", killed, cwd=tmp_path, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert dict(scalars(whole)["train/loss"]) == dict(scalars(killed)["train/loss"])

    # launch eval reads the shards in one process: the run's own validation loss.
    newest = checkpoint.latest(whole / "checkpoints")
    result = run_launch("eval", TINY_LM, "--cpu", "--checkpoint", newest, *steps, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    evaluated = dict(line.split() for line in result.stdout.splitlines() if line.startswith("val/"))
    final = json.loads((whole / "metrics.json").read_text())["final"]
    assert float(evaluated["val/loss"]) == pytest.approx(final["val/loss"], rel=1e-5)
    # launch export: one file, loaded by plain PyTorch into the model class.
    result = run_launch("export", whole, "--out", tmp_path / "model.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    model = GPT(vocab_size=256, block_size=32, width=32, layers=2, heads=2)
    model.load_state_dict(state)
    assert all(torch.equal(state[k], a[k]) for k in a)
    result = run_launch("predict", TINY_LM, "--cpu", "--checkpoint", whole, "--prompt", "def ", *steps, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("prompt 1\tdef "), result.stdout + result.stderr


@pytest.mark.slow
def test_two_ranks_go_on_in_one_process_and_a_truncated_shard_is_refused(tmp_path: Path) -> None:
    steps = (*SHARDED_LM, FSDP, "checkpoint.every_n_steps=3", "checkpoint.best=null")
    run = _run(tmp_path, "two", *steps, "train.max_steps=6")
    shard = checkpoint.step_path(run / "checkpoints", 6) / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])  # a disk that lost the end of rank 1's file
    result = run_launch(TINY_LM, "--cpu", *steps, "train.max_steps=9", "--resume", run, cwd=tmp_path, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "log.txt").read_text()
    assert "step-00000006.pt is damaged: the bytes of step-00000006.pt/__1_0.distcp no longer match" in log
    assert "resuming from the newest complete checkpoint before it instead" in log
    assert "the checkpoint is from 2 rank(s), this run has 1" in log
    assert "resumed from" in log and "step 3" in log
    assert json.loads((run / "metrics.json").read_text())["final"]["step"] == 9
    assert (run / "checkpoints" / "step-00000006.pt.abandoned").is_dir()
    recipe = load_recipe(run / "recipe.yaml")
    assert recipe.distributed.strategy == "fsdp"


@pytest.mark.slow
@pytest.mark.faults
def test_a_kill_during_an_asynchronous_save_leaves_the_previous_checkpoint_the_newest(tmp_path: Path) -> None:
    # Every shard's fsync takes 3 s here (tests/fixtures/slow_disk: a slow disk), so that a save is
    # in flight, beside training, when the run is killed.
    steps = (*SHARDED_LM, FSDP, "train.max_steps=40", "checkpoint.every_n_steps=4", "checkpoint.asynchronous=true")
    env = {**os.environ, "PYTHONPATH": f"{FIXTURES / 'slow_disk'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["SLOW_DISK_S"] = "3"
    process = start_launch(TINY_LM, "--nproc", "2", f"run.output={tmp_path}", *steps, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 300
    folder = tmp_path / "tiny_lm"
    while not list(folder.glob("*/checkpoints/.step-00000008.pt.partial/__1_0.distcp")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(tmp_path, "tiny_lm")
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000004.pt"]
    assert not checkpoint.step_path(run / "checkpoints", 8).exists()
    sharded.verify(checkpoint.step_path(run / "checkpoints", 4))  # whole
    result = run_launch(
        TINY_LM, "--nproc", "2", *steps, "train.max_steps=6", "--resume", run, cwd=tmp_path, timeout=None
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((run / "metrics.json").read_text())["final"]["step"] == 6


def test_fp16_with_fsdp_and_an_unknown_unit_are_named_before_anything_runs(tmp_path: Path) -> None:
    result = run_launch(TINY_LM, "--cpu", FSDP, "train.precision=fp16", "train.max_steps=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.precision: fp16 is not supported with distributed.strategy=fsdp: use bf16" in result.stderr
    result = run_launch(
        TINY_LM, "--cpu", *SHARDED_LM, FSDP, "distributed.fsdp.shard=[Block]", f"run.output={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "distributed.fsdp.shard: 'Block' matches no module of GPT; its module classes:" in result.stderr
    assert "TransformerBlock" in result.stderr
