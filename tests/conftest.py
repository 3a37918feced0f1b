"""Shared helpers: run `launch` (in this process, or as a real process) and find what a run wrote."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher import checkpoint
from launcher.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAUNCH = (sys.executable, "-m", "launcher")
# recipes/tiny_lm.yaml's GPT made small for tests: 2 blocks of width 32 on blocks of 32 bytes, 2
# warmup steps, every step logged, a 20-byte sample at each evaluation.
SMALL_LM = (
    "model.width=32", "model.layers=2", "model.heads=2", "data.dataset.block_size=32", "data.dataset.val_blocks=24",
    "train.batch_size=8", "eval.batch_size=8", "logging.every_n_steps=1", "task.max_new_tokens=20",
    "scheduler.milestones=[2]", "scheduler.schedulers.0.total_iters=2",
)  # fmt: skip


# A small labelled dataset (3 classes of 8 features), the text of a user's module: tests write it
# into their folder after lines of their own (what the module notes as it is imported).
BLOBS_DATASET = """
import torch
from torch.utils.data import TensorDataset


class Blobs(TensorDataset):
    classes = ["a", "b", "c"]

    def __init__(self, train: bool = True, size: int = 96):
        g = torch.Generator().manual_seed(0 if train else 1)
        super().__init__(torch.randn(size, 8, generator=g), torch.randint(0, 3, (size,), generator=g))
"""

# A recipe training a user's dataset (`module:attr`, put in with %) for one short epoch.
USER_DATASET_RECIPE = """
data:
  dataset: {name: "%s"}
  num_workers: 0
model: {name: mlp}
train: {epochs: 1, batch_size: 16}
run: {output: runs}
"""


@pytest.fixture(autouse=True)
def _repeatable() -> None:
    # Bitwise comparisons between runs need the same thread count in each run.
    torch.set_num_threads(2)


def launch(*args: str | Path) -> int:
    """Run the `launch` command in this process; return its exit code."""
    return main([str(a) for a in args])


def run_dirs(output: Path, name: str) -> list[Path]:
    """The run folders of recipe `name` under `output`, oldest first."""
    parent = output / name
    return (
        sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime) if parent.is_dir() else []
    )


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the run's TensorBoard logs, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The SLURM cluster of slurm/cluster.sh: tests that use it skip where no controller answers,
    except where LAUNCHER_REQUIRE_SLURM=1 (CI brings the cluster up), where they fail instead."""
    if (
        shutil.which("sinfo") is not None
        and subprocess.run(["scontrol", "ping"], check=False, capture_output=True).returncode == 0
    ):
        return
    if os.environ.get("LAUNCHER_REQUIRE_SLURM") == "1":
        pytest.fail("LAUNCHER_REQUIRE_SLURM=1 but no SLURM controller answers: run slurm/cluster.sh up")
    pytest.skip("no SLURM controller answers (start one with: slurm/cluster.sh up)")


def run_launch(
    *args: str | Path, cwd: Path, timeout: float | None = 300, python_on_path: bool = False, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Run the `launch` command as a separate process to its end; its output is captured as text.
    python_on_path: this interpreter's folder first on PATH (where a SLURM job runs `launch` itself).
    A run past `timeout` fails the test with what shows where it stood: its output, the stacks the
    ranks' watchdogs wrote to their logs, and every process's stacks (py-spy); then its whole
    process tree is killed, so that no hung worker is left behind."""
    if python_on_path:
        kwargs["env"] = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [*LAUNCH, *map(str, args)]
    with subprocess.Popen(
        command, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = [where_processes_stand(process.pid), *rank_logs_under(cwd)]
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(
                "\n".join([f"{shlex.join(command)} ran past {timeout} s", "--- stderr:", stderr[-4000:], *stacks])
            ) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def where_processes_stand(session: int) -> str:
    """Every Python stack of every live process of `session`, by py-spy (where installed)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if spy is None:
        return "--- py-spy is not installed: no process stacks"
    dumps = []
    for pid in session_members(session):
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], check=False, capture_output=True, text=True, timeout=60)
        dumps.append(f"--- py-spy dump of {pid}:\n{dump.stdout[-6000:]}{dump.stderr[-500:]}")
    return "\n".join(dumps)


def rank_logs_under(folder: Path) -> list[str]:
    """The end of each rank's log under `folder`: where a watchdog wrote the stacks of a stall."""
    return [f"--- {log}:\n{log.read_text(errors='replace')[-6000:]}" for log in sorted(folder.rglob("log.rank*.txt"))]


def start_launch(*args: str | Path, cwd: Path, **kwargs) -> subprocess.Popen[str]:
    """Start the `launch` command as a separate process in a session of its own (to signal its whole
    group); stdout and stderr together in its stdout pipe."""
    return subprocess.Popen(
        [*LAUNCH, *map(str, args)], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kwargs,
    )  # fmt: skip


def wait_for_file_text(pattern: str, text: str, folder: Path, timeout_s: float = 120) -> None:
    """Wait until `text` appears in a file of `folder` that matches the glob `pattern`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(text in p.read_text(errors="replace") for p in folder.glob(pattern)):
            return
        time.sleep(0.1)
    raise AssertionError(f"'{text}' did not appear in {folder}/{pattern} within {timeout_s} s")


def session_members(session: int) -> list[int]:
    """Live processes of a session: `launch`, its workers and their data-loader workers."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def final_checkpoint(run: Path) -> dict:
    """The contents of the run's newest complete step checkpoint."""
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    """The model weights of the run's newest complete step checkpoint."""
    return final_checkpoint(run)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
