"""TensorBoard, rank 0's first tracker: scalars, histograms, images and hparams; and reading the scalars back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


IMAGE_BATCH_DIMS = 4  # (batch, channels, height, width)


class TensorBoardTracker:
    """Rank 0's TensorBoard writer (the Tracker that also takes histograms and image grids).

    `resume_step`: the step of the checkpoint a resumed run starts from. Events a crashed run
    logged after it are purged, so the curves continue without duplicate steps.
    """

    def __init__(self, tensorboard_dir: Path, resume_step: int | None = None) -> None:
        # start-up: TensorBoard's writer (about 1 s) only on rank 0, the one process that logs
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(tensorboard_dir), purge_step=purge)

    def run_id(self) -> str | None:
        return None  # the event files are in the run folder, found again by a resumed run

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
            if parameter.grad is not None:
                self.writer.add_histogram(f"grads/{name}", parameter.grad.detach().float().cpu(), step)

    def image_grid(self, tag: str, images: torch.Tensor, step: int) -> None:
        # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
        import torchvision

        if images.dim() == IMAGE_BATCH_DIMS and images.shape[1] in (1, 3):
            grid = torchvision.utils.make_grid(images[:64].detach().float().cpu(), normalize=True, scale_each=True)
            self.writer.add_image(tag, grid, step)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
        # Written into this run's own event file (SummaryWriter.add_hparams would make a subfolder);
        # the metrics are the val/* scalars already logged, so TensorBoard's HParams tab finds them.
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for summary in hparams_summary(hparams, metrics):
            self.writer.file_writer.add_summary(summary)  # type: ignore[attr-defined]  # torch infers file_writer as None (its __init__ sets None, then opens it)

    def close(self) -> None:
        self.writer.close()


def scalar_series(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series a run logged, tag -> [(step, value), ...], read with TensorBoard's own
    reader (which honours the purges of resumed runs); {} where there is no folder or nothing yet."""
    # start-up: TensorBoard's reader only where scalars are read back (report, status, sweep results)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tensorboard_dir.is_dir():
        return {}
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in sorted(events.Tags()["scalars"])}


def last_scalars(series: dict[str, list[tuple[int, float]]]) -> tuple[int, dict[str, float]] | None:
    """The newest value of each series (scalar_series's, csv_series's), and the newest step; None before anything was logged."""
    latest = {tag: points[-1] for tag, points in series.items() if points}
    if not latest:
        return None
    return max(step for step, _ in latest.values()), {tag: value for tag, (_, value) in latest.items()}
