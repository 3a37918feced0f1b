"""The `launch` command as a user runs it: a separate process, its exit code and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import RECIPES


def launch_process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


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
        result = launch_process(*command, cwd=tmp_path)
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
    result = launch_process("check", RECIPES / "digits.yaml", "train.batch_size=16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "batch_size: 16" in result.stdout  # the resolved recipe, override applied
    assert "# model: small_cnn, 94,186 parameters" in result.stdout
    assert "# one batch: inputs [16, 1, 8, 8] float32, targets [16] int64, outputs [16, 10] float32" in result.stdout
    assert "# one forward/backward step: loss" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_dry_run_is_check(tmp_path: Path) -> None:
    result = launch_process(RECIPES / "digits.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0 and "# one forward/backward step" in result.stdout


def test_resume_with_nothing_to_resume_says_where_it_looked(tmp_path: Path) -> None:
    result = launch_process(RECIPES / "digits.yaml", "--resume", "--cpu", cwd=tmp_path)
    assert result.returncode == 1
    assert f"--resume: no run of 'digits' with a checkpoint under runs/digits" in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = launch_process("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("--cpu", "--resume", "--dry-run", "key.sub=value"):
        assert word in result.stdout
