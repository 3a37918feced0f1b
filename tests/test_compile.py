"""train.compile and model.activation_checkpointing on the tiny GPT: a compiled run trains as the
eager one does, with the same checkpoint keys, and `launch eval` reads its checkpoint; a resumed
run finds its compiled code in the run folder's compile cache; activation checkpointing gives
the same gradients from fewer saved activations, eagerly and compiled (whole or block by block),
and a class name that matches nothing is an error that names the model's classes; runs from
before these keys resume as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    RECIPES,
    assert_same_weights,
    final_checkpoint,
    final_weights,
    launch,
    run_dirs,
    run_launch,
    scalars,
)

from launcher.cli.recipe_checks import problems_in
from launcher.cli.train import refuse_a_different_run
from launcher.config.loading import load_recipe
from launcher.config.problems import RecipeError
from launcher.config.schema import CompileOptions
from launcher.distributed.runtime import single_process
from launcher.errors import UserError
from launcher.models.activation_checkpointing import apply_activation_checkpointing
from launcher.models.gpt import GPT
from launcher.rundir import RunDir
from launcher.training.compilation import compile_model
from launcher.training.setup import Setup, setup
from launcher.training.summary import RunSummary
from launcher.training.trainer import recipe_differences

TINY_LM = RECIPES / "tiny_lm.yaml"
# The recipe's model and data at a size that compiles and trains in seconds (test_language_model's).
SMALL = (
    "model.width=32", "model.layers=1", "model.heads=2", "data.dataset.block_size=32", "data.dataset.val_blocks=24",
    "train.batch_size=8", "eval.batch_size=8", "logging.every_n_steps=1",
    "scheduler.milestones=[2]", "scheduler.schedulers.0.total_iters=2",
)  # fmt: skip
# The training loss of a compiled run against the eager one's, step by step over 20 steps: inductor
# fuses and reorders float32 arithmetic; measured 4.8e-7 apart at most (the losses go from 5.5 to 4.2).
LOSS_TOLERANCE = 1e-4


def _losses(run: Path) -> list[float]:
    return [value for _, value in scalars(run)["train/loss"]]


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one_and_its_checkpoint_loads_eagerly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert launch(TINY_LM, "--cpu", f"run.output={eager}", *SMALL, "train.max_steps=20") == 0
    assert launch(TINY_LM, "--cpu", f"run.output={compiled}", *SMALL, "train.max_steps=20", "train.compile=true") == 0
    (eager_run,), (compiled_run,) = run_dirs(eager, "tiny_lm"), run_dirs(compiled, "tiny_lm")
    a, b = _losses(eager_run), _losses(compiled_run)
    assert len(a) == len(b) == 20
    difference = max(abs(x - y) for x, y in zip(a, b, strict=True))
    print(f"\ncompiled against eager, 20 steps: training losses at most {difference:.2e} apart")
    assert difference < LOSS_TOLERANCE
    assert list(final_weights(compiled_run)) == list(final_weights(eager_run))  # no `_orig_mod.` prefix
    assert (compiled_run / "compile_cache").is_dir() and not (eager_run / "compile_cache").exists()
    assert RunSummary.read(compiled_run / "metrics.json").first_step_s is not None
    # `launch eval` with the run's own recipe (train.compile: true) loads its checkpoint into an eager model.
    capsys.readouterr()
    assert launch("eval", compiled_run / "recipe.yaml", "--cpu", "--checkpoint", compiled_run) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    final = RunSummary.read(compiled_run / "metrics.json").final
    print(f"val/loss: {final['val/loss']:.6f} compiled, {printed['val/loss']} eager")
    assert float(printed["val/loss"]) == pytest.approx(final["val/loss"], abs=1e-5)


@pytest.mark.slow
def test_a_resumed_compiled_run_finds_its_compiled_code_in_the_run_folder(tmp_path: Path) -> None:
    """A new process (a restart, a requeue) with the run's compile cache compiles nothing again,
    and goes on from the mid-epoch checkpoint to the same weights, bitwise, as a run that was not
    stopped."""
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    # The schedule's length is the recipe's own: the stopped run (max_steps=7) follows the same curve.
    schedule = "scheduler={name: CosineAnnealingLR, interval: step, T_max: 12, eta_min: 0.0003}"
    # train.deterministic: inductor's CPU kernels otherwise add an embedding's gradient rows up with
    # atomics, in any order; two compiled runs without it measured 1.4e-6 apart after 5 steps.
    steps = (
        "train.compile=true",
        "train.deterministic=true",
        "train.max_steps=12",
        "checkpoint.every_n_steps=5",
        schedule,
    )
    assert launch(TINY_LM, "--cpu", f"run.output={straight}", *SMALL, *steps) == 0
    cold = run_launch(TINY_LM, "--cpu", f"run.output={pieces}", *SMALL, *steps, "train.max_steps=7", cwd=tmp_path)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    (run,) = run_dirs(pieces, "tiny_lm")
    assert final_checkpoint(run)["progress"]["batches_done"] == 7  # mid-epoch
    cold_first_step = RunSummary.read(run / "metrics.json").first_step_s
    cached = sorted(p.relative_to(run) for p in (run / "compile_cache" / "fxgraph").rglob("*") if p.is_file())
    assert cached, "the first process wrote no compiled graph to the run's compile cache"
    warm = run_launch(TINY_LM, "--cpu", f"run.output={pieces}", *SMALL, *steps, "--resume", run, cwd=tmp_path)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    warm_first_step = RunSummary.read(run / "metrics.json").first_step_s
    print(f"\nfirst step: {cold_first_step} s compiling, {warm_first_step} s from the compile cache")
    lines = {
        name: next(line for line in (done.stdout + done.stderr).splitlines() if "first step:" in line)
        for name, done in (("cold", cold), ("warm", warm))
    }
    print("\n".join(f"{name}: {line}" for name, line in lines.items()))
    assert ": 0 graph(s) compiled" not in lines["cold"] and ", 0 found in" in lines["cold"]
    assert ": 0 graph(s) compiled" in lines["warm"] and ", 0 found in" not in lines["warm"]
    # Evaluation (no gradients, eval mode) compiled graphs of its own in the first process: found too.
    assert sorted(p.relative_to(run) for p in (run / "compile_cache" / "fxgraph").rglob("*") if p.is_file()) == cached
    (uninterrupted,) = run_dirs(straight, "tiny_lm")
    assert final_checkpoint(run)["progress"]["step"] == 12
    assert_same_weights(final_weights(uninterrupted), final_weights(run))
    assert scalars(uninterrupted)["train/loss"] == scalars(run)["train/loss"]


# --- activation checkpointing ---------------------------------------------------------------------


def _built(*overrides: str) -> Setup:
    return setup(load_recipe(TINY_LM, [*SMALL, *overrides], check=problems_in), single_process(True))


def _gradients(s: Setup, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """The gradients of one training batch's loss, and the bytes autograd saved for the backward."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    torch.manual_seed(1)  # the same dropout masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = s.task.step(s.model, batch).loss
    loss.backward()
    return {name: p.grad.clone() for name, p in s.net.named_parameters() if p.grad is not None}, saved


def test_checkpointed_blocks_give_the_same_gradients_from_fewer_saved_activations() -> None:
    plain = _built("model.dropout=0.1", "model.layers=2")
    checkpointed = _built("model.dropout=0.1", "model.layers=2", "model.activation_checkpointing=[TransformerBlock]")
    assert list(checkpointed.net.state_dict()) == list(plain.net.state_dict())
    assert [n for n, _ in checkpointed.net.named_parameters()] == [n for n, _ in plain.net.named_parameters()]
    batch = next(iter(plain.train_batches))
    expected, saved_without = _gradients(plain, batch)
    found, saved_with = _gradients(checkpointed, batch)
    assert found.keys() == expected.keys()
    for name, gradient in expected.items():  # the recomputation draws the same dropout masks
        torch.testing.assert_close(found[name], gradient, rtol=1e-6, atol=1e-8, msg=name)
    difference = max((found[name] - gradient).abs().max().item() for name, gradient in expected.items())
    print(
        f"\nactivation checkpointing: gradients {difference:.1e} apart; {saved_with:,} bytes saved for the backward, not {saved_without:,}"
    )
    assert saved_with < saved_without / 2, (saved_with, saved_without)  # measured 0.31 of it


@pytest.mark.slow
@pytest.mark.parametrize("per_block", [None, ["TransformerBlock"]], ids=["whole", "per_block"])
def test_checkpointed_blocks_compiled_give_the_eager_gradients(per_block: list[str] | None) -> None:
    torch.manual_seed(0)
    eager = GPT(vocab_size=256, block_size=32, width=32, layers=2, heads=2)
    net = GPT(vocab_size=256, block_size=32, width=32, layers=2, heads=2)
    net.load_state_dict(eager.state_dict())
    apply_activation_checkpointing(net, ["TransformerBlock"])
    compile_model(net, CompileOptions(), per_block)
    tokens = torch.randint(0, 256, (4, 32))
    for model in (eager, net):
        model(tokens).logsumexp(-1).mean().backward()
    assert list(net.state_dict()) == list(eager.state_dict())
    difference = max(
        (p.grad - q.grad).abs().max().item() for p, q in zip(eager.parameters(), net.parameters(), strict=True)
    )
    print(
        f"\nactivation checkpointing, compiled ({'per block' if per_block else 'whole'}): gradients {difference:.2e} apart"
    )
    assert difference < 1e-6  # measured 2.2e-8: inductor's float32 arithmetic


def test_a_class_name_that_matches_no_module_is_an_error_naming_the_models_classes() -> None:
    with pytest.raises(UserError) as caught:
        _built("model.activation_checkpointing=[Block]")
    assert str(caught.value) == (
        "model.activation_checkpointing: 'Block' matches no module of GPT; its module classes: CausalSelfAttention, "
        "Dropout, Embedding, GELU, GPT, LayerNorm, Linear, ModuleList, Sequential, TransformerBlock"
    )


def test_compile_settings_are_checked_with_their_dotted_paths() -> None:
    recipe = load_recipe(TINY_LM, ["train.compile=true"])
    assert recipe.train.compile == CompileOptions() and recipe.to_dict()["train"]["compile"]["backend"] == "inductor"
    assert load_recipe(TINY_LM).to_dict()["train"]["compile"] is False  # recipe.yaml says false, not null
    with pytest.raises(RecipeError) as caught:
        load_recipe(TINY_LM, ["train.compile={modee: max-autotune, dynamic: maybe}"])
    assert [str(problem) for problem in caught.value.problems] == [
        "train.compile.dynamic: input should be a valid boolean, unable to interpret input, got 'maybe'",
        "train.compile.modee: unknown key (did you mean 'mode'?)",
    ]


def test_a_run_from_before_these_keys_resumes_and_checkpointing_may_be_switched_on(tmp_path: Path) -> None:
    """A run folder whose recipe.yaml predates train.compile and model.activation_checkpointing
    resumes as the same run; switching either on is a warning, not another run (--force)."""
    older = load_recipe(TINY_LM).to_dict()
    del older["train"]["compile"], older["model"]["activation_checkpointing"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(older))
    assert recipe_differences(older, load_recipe(TINY_LM).to_dict()) == []
    switched = load_recipe(TINY_LM, ["model.activation_checkpointing=[TransformerBlock]", "train.compile=true"])
    refuse_a_different_run(switched, RunDir(tmp_path), force=False)  # no UserError
    assert [d.split(":")[0] for d in recipe_differences(older, switched.to_dict())] == [
        "model.activation_checkpointing",
        "train.compile",
    ]
