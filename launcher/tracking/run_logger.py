"""Rank 0's logger: a tqdm bar, and each scalar fanned out to the trackers the recipe names
(logging.trackers: TensorBoard, metrics.csv, MLflow, W&B)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from launcher.config.schema import Logging, TrackerName
from launcher.rundir import RunDir
from launcher.tracking.loggers import T, Tracker
from launcher.tracking.metrics_csv import CsvTracker
from launcher.tracking.mlflow_tracker import MlflowTracker, default_tracking_uri
from launcher.tracking.tensorboard import TensorBoardTracker
from launcher.tracking.wandb_tracker import WandbTracker

if TYPE_CHECKING:
    import torch

# The trackers that need a package of their own, and the extra that installs it.
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}


def missing_package(tracker: str) -> str | None:
    """'mlflow is not installed: pip install ...' where the tracker's package is not importable; else None.
    (find_spec: whether it is there, without the seconds of importing it.)"""
    package = EXTRAS.get(tracker)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{tracker} is not installed: pip install 'launcher[{package}]'"


class RunLogger:
    """Rank 0's progress bar, and its scalars sent to every tracker. Histograms and image grids
    are TensorBoard's alone (the others have no such view of them)."""

    def __init__(self, trackers: dict[str, Tracker], files: list[Path]) -> None:
        self.trackers, self.files = trackers, files
        self.bar: tqdm | None = None

    def progress(self, batches: Iterable[T], total: int | None, done: int, description: str) -> Iterator[T]:
        # disable=None: a bar on a terminal, nothing in a log file or CI.
        self.bar = tqdm(
            batches, total=total, initial=done, desc=description, disable=None, leave=False, dynamic_ncols=True
        )
        try:
            yield from self.bar
        finally:
            self.bar.close()
            self.bar = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers.values():
            tracker.scalars(values, step)
        if self.bar is not None and "train/loss" in values:
            shown = {"loss": f"{values['train/loss']:.4f}", "lr": f"{values['train/lr']:.3g}"}
            if "train/tokens_per_s" in values:
                shown["tok/s"] = f"{values['train/tokens_per_s']:,.0f}"
            self.bar.set_postfix(shown, refresh=False)

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        if isinstance(board := self.trackers.get("tensorboard"), TensorBoardTracker):
            board.histograms(model, step)

    def image_grid(self, tag: str, images: torch.Tensor, step: int) -> None:
        if isinstance(board := self.trackers.get("tensorboard"), TensorBoardTracker):
            board.image_grid(tag, images, step)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run is complete: each tracker's hparams and artifacts (recipe.yaml, metrics.json)."""
        for tracker in self.trackers.values():
            tracker.finish(hparams, metrics, self.files)

    def run_ids(self) -> dict[str, str]:
        """Each tracker's run id, for the checkpoint: a resumed run reopens the same runs."""
        return {name: run_id for name, tracker in self.trackers.items() if (run_id := tracker.run_id()) is not None}

    def close(self) -> None:
        """Close every tracker, even where one fails (the first error is raised after)."""
        errors = []
        for tracker in self.trackers.values():
            try:
                tracker.close()
            except Exception as error:  # noqa: BLE001 - the other trackers still close
                errors.append(error)
        if errors:
            raise errors[0]


def where_to_look(section: Logging, run: RunDir, output: Path) -> list[tuple[str, str]]:
    """(tracker, the command that shows the run) for the trackers with a viewer of their own."""
    shown = []
    if "tensorboard" in section.trackers:
        shown.append(("TensorBoard", f"tensorboard --logdir {run.tensorboard(section.tensorboard_dir)}"))
    if "mlflow" in section.trackers:
        shown.append(
            ("MLflow", f"mlflow ui --backend-store-uri {section.mlflow.tracking_uri or default_tracking_uri(output)}")
        )
    return shown


def open_run_logger(
    section: Logging, run: RunDir, *, name: str, output: Path, params: dict[str, Any],
    resume_step: int | None = None, run_ids: dict[str, str] | None = None,
) -> RunLogger:  # fmt: skip
    """Rank 0's logger with the trackers of `section`. `name`: run.name (the default MLflow
    experiment and W&B project); `output`: run.output (where MLflow's default store is);
    `params`: the flattened recipe; a resumed run's `resume_step` and the `run_ids` its checkpoint kept."""
    ids, trackers = run_ids or {}, dict[str, Tracker]()
    try:
        for tracker in dict.fromkeys(section.trackers):
            trackers[tracker] = _open(tracker, section, run, name, output, params, resume_step, ids.get(tracker))
    except BaseException:
        RunLogger(trackers, []).close()
        raise
    return RunLogger(trackers, [run.recipe, run.metrics])


def _open(
    tracker: TrackerName, section: Logging, run: RunDir, name: str, output: Path, params: dict[str, Any],
    resume_step: int | None, run_id: str | None,
) -> Tracker:  # fmt: skip
    if tracker == "tensorboard":
        return TensorBoardTracker(run.tensorboard(section.tensorboard_dir), resume_step)
    if tracker == "csv":
        return CsvTracker(run.metrics_csv, resume_step)
    if tracker == "mlflow":
        return MlflowTracker(
            section.mlflow, output=output, name=name, run_name=run.path.name, params=params, run_id=run_id
        )
    return WandbTracker(section.wandb, folder=run.path, name=name, params=params, run_id=run_id)
