"""The `launch` command as a user runs it: its exit code and what it prints (a separate process, but
for resuming with --force, run in this process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import RECIPES, launch, run_dirs, run_launch

from launcher import checkpoint

BAD = """\
data:
  dataset: {name: digitz}
  transforms: {train: [ToTensr]}
model: {name: small_cnn, widht: 3}
optimizer: {name: SGD, lr: fast}
train: {epocs: 3, batch_size: 0}
"""


def test_check_on_a_bad_recipe_names_every_problem_and_runs_nothing(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD)
    for command in (["check", recipe], [recipe, "--cpu"]):
        result = run_launch(*command, cwd=tmp_path)
        assert result.returncode == 2
        assert "6 problems in the recipe; nothing was run" in result.stderr
        for expected in (
            "data.dataset.name: no dataset named 'digitz'",
            "data.transforms.train.0.name: no transform named 'ToTensr'",
            "model.widht: SmallCNN takes no argument 'widht' (did you mean 'width'?)",
            "optimizer.lr: SGD wants a number for 'lr', got the text 'fast'",
            "train.epocs: unknown key (did you mean 'epochs'?)",
            "train.batch_size: input should be greater than or equal to 1, got 0",
        ):
            assert expected in result.stderr, expected
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # no run folder, nothing trained


def test_check_on_a_good_recipe_builds_and_steps_once(tmp_path: Path) -> None:
    result = run_launch("check", RECIPES / "digits.yaml", "train.batch_size=16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "batch_size: 16" in result.stdout  # the resolved recipe, override applied
    assert "# model: small_cnn, 94,186 parameters" in result.stdout
    assert "# one batch: inputs [16, 1, 8, 8] float32, targets [16] int64, outputs [16, 10] float32" in result.stdout
    assert "# one forward/backward step: loss" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_dry_run_is_check(tmp_path: Path) -> None:
    result = run_launch(RECIPES / "digits.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0 and "# one forward/backward step" in result.stdout


def test_resume_with_nothing_to_resume_says_where_it_looked(tmp_path: Path) -> None:
    result = run_launch(RECIPES / "digits.yaml", "--resume", "--cpu", cwd=tmp_path)
    assert result.returncode == 2
    assert "--resume: no run of 'digits' with a checkpoint under runs/digits" in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_launch("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("--cpu", "--resume", "--dry-run", "key.sub=value"):
        assert word in result.stdout


def test_mistakes_found_while_building_are_named_without_a_traceback(tmp_path: Path) -> None:
    digits = RECIPES / "digits.yaml"
    cases = {
        "data.transforms.train=[]": "data.transforms.train: the samples come out as Image, not tensors; end the transforms with ToTensor",
        "optimizer.lr=-0.1": "optimizer AdamW: Invalid learning rate: -0.1",
        "train.grad_accum_steps=100": "train.grad_accum_steps=100 is more than the 22 batches of an epoch",
        "checkpoint.best.metric=val/acc5": None,  # 10 classes: measured, fine
    }
    for override, expected in cases.items():
        result = run_launch("check", digits, override, cwd=tmp_path)
        if expected is None:
            assert result.returncode == 0, result.stderr
            continue
        assert result.returncode == 2, (override, result.stderr)
        assert expected in result.stderr, (override, result.stderr)
        assert "Traceback" not in result.stderr


def test_resuming_a_run_of_another_model_is_refused_and_keeps_its_recipe(tmp_path: Path) -> None:
    digits = RECIPES / "digits.yaml"
    first = run_launch(digits, "--cpu", "train.epochs=1", "run.output=out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (run,) = (tmp_path / "out" / "digits").iterdir()
    before = (run / "recipe.yaml").read_text()
    second = run_launch(
        digits, "--cpu", "--resume", run, "model.width=8", "train.epochs=2", "run.output=out", cwd=tmp_path
    )
    assert second.returncode == 2
    assert "this recipe trains something else than the run did:\n  model.width: 32 -> 8" in second.stderr
    forced = run_launch(
        digits, "--cpu", "--resume", run, "model.width=8", "train.epochs=2", "run.output=out", "--force", cwd=tmp_path
    )
    assert forced.returncode == 2  # --force gets past the recipe check, not past weights that don't fit
    assert "does not fit this recipe" in forced.stderr and "size mismatch" in forced.stderr
    assert (run / "recipe.yaml").read_text() == before
    done = run_launch(digits, "--cpu", "--resume", run, "train.epochs=1", "run.output=out", cwd=tmp_path)
    assert done.returncode == 0 and "is complete: epoch 1" in done.stderr  # nothing to do is not a failure
    assert '"val/acc1"' in (run / "metrics.json").read_text()  # the finished run's results are kept


def test_slurm_flags_outside_slurm_say_what_to_use(tmp_path: Path) -> None:
    env_without_slurm = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cases = [
        (
            ["--nodes", "2"],
            "--nodes: for --slurm runs only; add --slurm to submit the run (to join nodes yourself: --nnodes, torchrun's flag)",
        ),
        (["--partition", "debug", "--time", "10"], "--partition, --time: for --slurm runs only"),
        (["--srun"], "--srun runs as one task of an srun step, inside a SLURM job"),
        (["--slurm", "--nnodes", "2"], "--slurm places the tasks itself"),
    ]
    for flags, message in cases:
        result = run_launch(
            RECIPES / "digits.yaml", *flags, f"run.output={tmp_path}", cwd=tmp_path, env=env_without_slurm
        )
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr)
    assert not list(tmp_path.iterdir())


@pytest.mark.faults
@pytest.mark.slow
def test_resuming_with_another_model_data_or_optimizer_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = (RECIPES / "digits.yaml", "--cpu", f"run.output={tmp_path}")
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
