"""Run folders: `<output>/<name>/<run-id>/`, and finding the one to resume."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import checkpoint
from launcher.errors import RunFailed, UserError


@dataclass(frozen=True)
class RunDir:
    """The files of one run."""

    path: Path

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log_file(self) -> Path:
        return self.path / "log.txt"

    def rank_log(self, rank: int, world_size: int) -> Path:
        """A worker's own log; one process writes log.txt."""
        return self.log_file if world_size == 1 else self.path / f"log.rank{rank}.txt"

    @property
    def heartbeats(self) -> Path:
        return self.path / "heartbeat"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def metrics_csv(self) -> Path:
        """Rank 0's scalars, a row per logged step (logging.trackers: csv)."""
        return self.path / "metrics.csv"

    @property
    def compile_cache(self) -> Path:
        """torch.compile's caches (train.compile): found again by a resumed or requeued run."""
        return self.path / "compile_cache"

    @property
    def profile(self) -> Path:
        """logging.profile's trace (rank 0's)."""
        return self.path / "profile"

    def tensorboard(self, configured: str | None) -> Path:
        return Path(configured) if configured else self.path / "tensorboard"

    def discard_if_untrained(self) -> bool:
        """Remove this run folder where nothing was trained in it (no checkpoint, no TensorBoard
        events, no metrics.json, no rank past its setup): a run refused for its recipe leaves
        nothing behind. Whether it was removed."""
        trained = any(self.checkpoints.glob("*.pt*")) or any(self.path.glob("**/events.out.tfevents.*"))
        # A heartbeat says "setup" until the rank's first step (TensorBoard may log elsewhere).
        stepped = any(not beat.read_text().startswith("setup") for beat in self.heartbeats.glob("*"))
        if trained or stepped or self.metrics.exists() or self.metrics_csv.exists():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True


def new_run_dir(output: str, name: str, run_id: str | None = None) -> RunDir:
    """A new run folder named by the time it starts (with a suffix if two start together), or
    `run_id` (shared: every node of a multi-node run names the same folder)."""
    parent = Path(output) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if run_id is not None:
            (parent / run_id).mkdir(exist_ok=True)
            return RunDir(parent / run_id)
    except OSError as error:
        raise RunFailed(
            f"run.output={output}: cannot create the run folder under {parent}: {error.strerror or error}"
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise RunFailed(
                f"run.output={output}: cannot create the run folder {path}: {error.strerror or error}"
            ) from None
        return RunDir(path)
    raise RuntimeError(f"could not create a run folder under {parent}")


class NothingToResume(UserError):
    """--resume found no checkpoint where it looked."""


def find_resume(target: str | None, output: str, name: str) -> tuple[RunDir, Path]:
    """The run folder and checkpoint that `--resume [target]` means.

    No target: the newest run of this recipe (`<output>/<name>/`) that has a checkpoint.
    A folder: that run's newest checkpoint. A file: that checkpoint, in its run folder.
    """
    if target is None:
        parent = Path(output) / name
        runs = (
            sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            if parent.is_dir()
            else []
        )
        for folder in reversed(runs):
            found = checkpoint.latest(RunDir(folder).checkpoints)
            if found:
                return RunDir(folder), found
        raise NothingToResume(f"--resume: no run of '{name}' with a checkpoint under {parent}{_unchecked_note(runs)}")
    path = Path(target)
    if path.is_file() or is_checkpoint_folder(path):
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return RunDir(folder), path
    if path.is_dir():
        run = RunDir(path.parent) if path.name == "checkpoints" else RunDir(path)
        found = checkpoint.latest(run.checkpoints)
        if found:
            return run, found
        raise NothingToResume(f"--resume {target}: no checkpoint in {run.checkpoints}{_unchecked_note([run.path])}")
    raise NothingToResume(f"--resume {target}: no such file or folder")


def is_checkpoint_folder(path: Path) -> bool:
    """A sharded checkpoint: a folder named as a checkpoint file is (step-N.pt, best.pt)."""
    return path.is_dir() and (checkpoint.STEP_NAME.match(path.name) is not None or path.name == checkpoint.BEST)


def _unchecked_note(runs: list[Path]) -> str:
    """Step files without their checksum do not count; say so where there are some."""
    unchecked = [
        p
        for run in runs
        for p in sorted(RunDir(run).checkpoints.glob("step-*.pt"))
        if not checkpoint.checksum_path(p).exists()
    ]
    if not unchecked:
        return ""
    newest = unchecked[-1]
    return (
        f" that counts: {newest} has no checksum beside it (written before checksums existed, or cut short before "
        f"its checksum was); if you trust it: (cd {newest.parent} && sha256sum {newest.name} > {newest.name}.sha256)"
    )
