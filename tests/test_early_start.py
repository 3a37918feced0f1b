"""`launch --nproc N` forks its workers from a forkserver that imported torch, torch._dynamo and
the launcher while `launch` started (distributed/early_start.py): each worker reaches the user's
code with them imported. `launch` called as a function (here, in the test process) spawns them,
leaving the calling program's multiprocessing alone."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import (
    BLOBS_DATASET,
    ROOT,
    USER_DATASET_RECIPE,
    launch,
    run_dirs,
    session_members,
    start_launch,
    wait_for_file_text,
)

from launcher import checkpoint

pytestmark = pytest.mark.slow

# A user's dataset module that notes, as each process imports it, what that process had imported
# already, who started it, and what it sees of the environment `launch` was given.
NOTING_MODULE = (
    """
import json, os, pathlib, sys
with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
    parent_command = parent.read().replace(b"\\0", b" ").decode()
pathlib.Path(os.environ["NOTES"], str(os.getpid())).write_text(json.dumps({
    "parent": parent_command,
    "ppid": os.getppid(),
    "preloaded": [m for m in ("torch", "torch._dynamo", "launcher.distributed.worker") if m in sys.modules],
    "given": os.environ.get("GIVEN_TO_LAUNCH"),
}))
"""
    + BLOBS_DATASET
)


def _notes(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.iterdir())]


@pytest.fixture
def user_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "noting_data.py").write_text(NOTING_MODULE)
    (tmp_path / "notes").mkdir()
    monkeypatch.setenv("NOTES", str(tmp_path / "notes"))
    monkeypatch.setenv("GIVEN_TO_LAUNCH", "yes")
    recipe = tmp_path / "user.yaml"
    recipe.write_text(USER_DATASET_RECIPE % "noting_data:Blobs")
    return recipe


def test_launch_forks_its_workers_with_torch_and_the_launcher_imported_and_leaves_no_server(
    user_recipe: Path, tmp_path: Path
) -> None:
    process = start_launch(user_recipe, "--nproc", "2", cwd=tmp_path)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    (run,) = run_dirs(tmp_path / "runs", "user")
    assert json.loads((run / "metrics.json").read_text())["final"]["step"] == 3  # 96 samples, 2 x 16 a step: trained
    notes = _notes(tmp_path / "notes")
    assert len(notes) == 2, notes  # the two workers import the user's module; `launch` does not
    for note in notes:
        assert "multiprocessing.forkserver" in note["parent"], note  # forked from the server
        assert note["preloaded"] == ["torch", "torch._dynamo", "launcher.distributed.worker"], note
        assert note["given"] == "yes"  # the environment `launch` was started with
    deadline = time.monotonic() + 10  # the server ends once `launch` has: nothing of the run is left
    while (left := session_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_text(errors="replace") for pid in left]


def test_launch_called_as_a_function_spawns_its_workers(
    user_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where the recipe's module is, and its output goes
    assert launch(user_recipe, "--nproc", "2") == 0
    notes = _notes(tmp_path / "notes")
    assert len(notes) == 2, notes
    for note in notes:
        assert note["ppid"] == os.getpid(), note  # started by the agent in this process, not by a server
        assert "torch._dynamo" not in note["preloaded"], note  # a fresh interpreter: DDP imports it later


def test_a_sigterm_to_the_whole_group_lets_the_workers_checkpoint_before_launch_returns(tmp_path: Path) -> None:
    # As SLURM or `kill -TERM -PGID` signal a job: the forkserver too. It ignores the signal and
    # ends with launch, so the agent sees its workers to their real end, not as gone at once.
    process = start_launch(ROOT / "recipes" / "digits.yaml", "--nproc", "2", "train.epochs=100",
                           "checkpoint.every_n_epochs=100", f"run.output={tmp_path}", cwd=tmp_path)  # fmt: skip
    wait_for_file_text("digits/*/log.rank1.txt", "epoch 2/100", tmp_path)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    (run,) = run_dirs(tmp_path, "digits")
    saved = checkpoint.saved_steps(run / "checkpoints")  # complete (checksummed) when launch has returned
    assert process.stdout is not None
    output = process.stdout.read()
    assert len(saved) == 1, output
    assert output.index(f"stopped at step {int(saved[0].stem[5:])}") < output.index("stopped by SIGTERM"), output
