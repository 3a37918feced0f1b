"""When the loop saves a checkpoint and what goes in it: the checkpoint policy."""

from __future__ import annotations

from dataclasses import asdict

from launcher import checkpoint
from launcher.checkpoint.storage import CheckpointStorage, OneFile, Sharded
from launcher.config.schema import Recipe
from launcher.data.loaders import StreamBatches
from launcher.distributed.process_group import barrier, gather
from launcher.distributed.runtime import Runtime
from launcher.rundir import RunDir
from launcher.training.progress import Progress, due
from launcher.training.setup import Setup


class Checkpoints:
    """When rank 0 saves and what: step checkpoints, best.pt, and a step checkpoint of the step
    best.pt was just saved at (a hard link to it). Rank 0's files are flushed, checksummed and
    pruned beside training (the storage: checkpoint.storage.OneFile); every rank takes part in each save."""

    def __init__(self, recipe: Recipe, run: RunDir, runtime: Runtime) -> None:
        self.section, self.folder, self.recipe = recipe.checkpoint, run.checkpoints, recipe.to_dict()
        keep_last, asynchronous = self.section.keep_last, self.section.asynchronous
        self.storage: CheckpointStorage = (
            Sharded(keep_last, asynchronous, runtime.rank, runtime.world_size, recipe.distributed.timeout_s)
            if recipe.distributed.strategy == "fsdp"
            else OneFile(keep_last, asynchronous, runtime.is_main)
        )
        self.last_saved_step = self.best_saved_step = -1
        self.tracker_runs: dict[str, str] = {}  # rank 0's MLflow and W&B run ids: a resumed run reopens them

    def due_mid_epoch(self, progress: Progress, batches_per_epoch: int | None) -> bool:
        # At the end of an epoch the save there covers this step (a stream's end is not known ahead).
        return due(self.section.every_n_steps, progress.step) and (
            batches_per_epoch is None or progress.batches_done < batches_per_epoch
        )

    def due_at_epoch_end(self, progress: Progress, finished: bool, last: bool) -> bool:
        by_epoch = finished and due(self.section.every_n_epochs, progress.epoch)
        return by_epoch or last or due(self.section.every_n_steps, progress.step)

    def save(self, s: Setup, progress: Progress, best: bool = False) -> None:
        """Hand a checkpoint of this step to the storage (rank 0's writer); every rank then waits at
        a barrier, so that none changes the model while the storage still reads it."""
        if not best and progress.step == self.last_saved_step:
            return
        path = self.folder / checkpoint.BEST if best else checkpoint.step_path(self.folder, progress.step)
        if not best and progress.step == self.best_saved_step:
            # best.pt holds this very state (nothing drew a random number since): a second name for it.
            self.storage.link(self.folder / checkpoint.BEST, path)
        else:
            rng = gather(checkpoint.rng_states())  # each rank's own: a resumed rank draws what it would have
            # A stream's position mid-epoch, each rank's (at an epoch's start it starts afresh).
            stream, mid_epoch = s.train_batches, progress.batches_done > 0
            loader = {"loader": gather(stream.state_dict())} if isinstance(stream, StreamBatches) and mid_epoch else {}
            self.storage.save(
                lambda: {
                    **s.state_dict(),
                    **loader,
                    "progress": asdict(progress),
                    "rng": rng,
                    "data": asdict(s.data.info),
                    "recipe": self.recipe,
                    "trackers": self.tracker_runs,
                },
                path,
            )
        if best:
            self.best_saved_step = progress.step
        else:
            self.last_saved_step = progress.step
        barrier()

    def close(self) -> None:
        """The last checkpoint complete, or its error raised."""
        self.storage.close()
