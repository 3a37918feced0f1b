"""The checkpoint storage: how a checkpoint's state reaches the disk and comes back. Today one
file written by rank 0 (`files`: atomic, checksummed, beside training); a sharded format, each
rank writing its own part, plugs in here behind the same four methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from launcher.checkpoint import files

State = dict[str, Any]


class CheckpointStorage(Protocol):
    def save(self, state: Callable[[], State], path: Path) -> None:
        """Write the checkpoint at `path`, maybe beside training. Every rank calls it; `state`
        builds the state on the ranks that write (building it costs a copy of the model)."""
        ...

    def link(self, existing: Path, path: Path) -> None:
        """A second name `path` for the checkpoint at `existing` (the same state)."""
        ...

    def load(self, path: Path) -> State:
        """The state at `path`; files.DamagedCheckpoint where it is incomplete or corrupt."""
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

    def load(self, path: Path) -> State:
        return files.load(path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
