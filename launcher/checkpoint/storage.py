"""The checkpoint storage: how a checkpoint's state reaches the disk and comes back. One file
written by rank 0 (`OneFile`, with DDP: `files`, atomic, checksummed, beside training), or a
folder each rank writes its own part of (`Sharded`, with FSDP: `sharded`, through
torch.distributed.checkpoint), behind the same four methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from launcher.checkpoint import files, sharded

State = dict[str, Any]


class CheckpointStorage(Protocol):
    def save(self, state: Callable[[], State], path: Path) -> None:
        """Write the checkpoint at `path`, maybe beside training. Every rank calls it; `state`
        builds the state on the ranks that write (building it costs a copy of the model)."""
        ...

    def link(self, existing: Path, path: Path) -> None:
        """A second name `path` for the checkpoint at `existing` (the same state)."""
        ...

    def load(self, path: Path, template: Callable[[], State]) -> State:
        """The state at `path`; files.DamagedCheckpoint where it is incomplete or corrupt.
        `template` gives this run's own model and optimizer state ({'model', 'optimizer'}), for a
        storage that loads into it in place (every rank calls `load`)."""
        ...

    def close(self) -> None:
        """Every save complete, or its error raised."""
        ...


class OneFile:
    """The whole state in one file, written by rank 0 only (every rank's random states are
    gathered into it); other ranks write nothing. Loading reads the file on every rank."""

    def __init__(self, keep_last: int, asynchronous: bool, is_main: bool) -> None:
        self.writer = files.Writer(keep_last, asynchronous) if is_main else None

    def save(self, state: Callable[[], State], path: Path) -> None:
        if self.writer is not None:
            self.writer.save(state(), path)

    def link(self, existing: Path, path: Path) -> None:
        if self.writer is not None:
            self.writer.save_link(existing, path)

    def load(self, path: Path, template: Callable[[], State]) -> State:
        return files.load(path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Sharded:
    """A folder per checkpoint, each rank writing its own shards of the model and optimizer
    state (`sharded`: torch.distributed.checkpoint), rank 0 the rest; loaded on any world size."""

    def __init__(self, keep_last: int, asynchronous: bool, rank: int, world_size: int, timeout_s: float) -> None:
        self.rank = rank
        self.writer = sharded.ShardedWriter(keep_last, asynchronous, rank, world_size, timeout_s)

    def save(self, state: Callable[[], State], path: Path) -> None:
        tensors, meta = sharded.split(state())
        self.writer.save(tensors, meta if self.rank == 0 else None, path)

    def link(self, existing: Path, path: Path) -> None:
        self.writer.link(existing, path)

    def load(self, path: Path, template: Callable[[], State]) -> State:
        if not sharded.is_sharded(path):
            raise files.DamagedCheckpoint(
                f"{path} is a one-file checkpoint (distributed.strategy=ddp); this run shards its model "
                "(distributed.strategy=fsdp): resume it with strategy ddp"
            )
        return {**sharded.load_meta(path), **sharded.load_into(path, template())}

    def close(self) -> None:
        self.writer.close()
