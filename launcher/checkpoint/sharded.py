"""Sharded checkpoints (`distributed.strategy: fsdp`): every rank writes its own part of the
model and optimizer state with torch.distributed.checkpoint (DCP), and loads its part back on
any world size (DCP reshards).

A sharded checkpoint is a folder with a checkpoint's usual name, `step-<N>.pt/` or `best.pt/`:
DCP's files (`__<rank>_<n>.distcp`, `.metadata`) and rank 0's `meta.pt` (everything but the
model and optimizer tensors: position, every rank's random states, schedule, recipe). The same
promises as a one-file checkpoint (`files`) hold: it is written under a hidden name
(`.step-<N>.pt.partial/`) and renamed into place once every rank's files are on disk; then
`step-<N>.pt.sha256` is written beside it, the sha256 of each of its files in sha256sum's format
(`sha256sum -c step-<N>.pt.sha256` checks it), each rank hashing the files it wrote. Only a
folder with that file counts, and loading compares every file's size and digest, so a torn or
truncated shard is refused by name and the resume falls back to the checkpoint before.

With `asynchronous`, training waits only for DCP's copy of the state in memory (`async_save`);
the files are written, hashed and published beside training, over a process group of their
own, one save in flight at a time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist

from launcher.checkpoint.files import (
    SHARDED_META,
    DamagedCheckpoint,
    _errors_named,
    _fsync_folder,
    _sha256,
    _write_atomically,
    checksum_path,
    prune_after,
)
from launcher.distributed.process_group import barrier, is_distributed
from launcher.errors import RunFailed

log = logging.getLogger("launcher")

META = SHARDED_META
State = dict[str, Any]
TENSORS = ("model", "optimizer")  # the parts DCP writes sharded; the rest goes into META


def _dcp() -> Any:
    # start-up: torch.distributed.checkpoint (with FSDP's modules, about 0.9 s of imports) only
    # where a checkpoint is sharded
    import torch.distributed.checkpoint as dcp

    return dcp


def is_sharded(path: Path) -> bool:
    return path.is_dir()


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is complete: the same name on every rank."""
    return path.with_name(f".{path.name}.partial")


def _digests_path(folder: Path, rank: int) -> Path:
    return folder / f".rank-{rank}.sha256"


class ShardedWriter:
    """This rank's part of each sharded checkpoint, and (rank 0) its publication.

    `save` returns once DCP has written this rank's files (or, `asynchronous`, once DCP has
    copied the state in memory). Then, beside training, each rank hashes its own files into a
    digest file, and rank 0 waits for every rank's, writes `meta.pt`, renames the folder into
    place, writes the checksum file (the mark that the checkpoint is complete) and prunes to
    the last `keep_last`. A second save first waits for the one before; `close` for all."""

    def __init__(self, keep_last: int, asynchronous: bool, rank: int, world_size: int, timeout_s: float) -> None:
        self.keep_last, self.asynchronous = keep_last, asynchronous
        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._in_flight: list[concurrent.futures.Future] = []
        # DCP's asynchronous writes run collectives from a thread of their own: not on the group
        # training uses, whose collectives they would interleave with.
        self._group = (
            cast(dist.ProcessGroup, dist.new_group(backend="gloo")) if asynchronous and is_distributed() else None
        )

    def save(self, tensors: State, meta: State | None, path: Path) -> None:
        """Write `tensors` (every rank's part) and `meta` (rank 0's) as the checkpoint `path`."""
        self.wait()
        partial = partial_path(path)
        with _errors_named(path):
            if self.rank == 0:
                shutil.rmtree(partial, ignore_errors=True)  # a save cut short before, under this name
                partial.mkdir(parents=True)
            barrier()
            if self.asynchronous:
                pending: Any = _dcp().async_save(tensors, checkpoint_id=partial, process_group=self._group)
            else:
                with _one_process_is_meant():
                    _dcp().save(tensors, checkpoint_id=partial)
                pending = None
        self._in_flight.append(self._thread.submit(self._finish, pending, meta, partial, path))

    def link(self, existing: Path, path: Path) -> None:
        """`path` as a second name of the checkpoint `existing` handed over just before: its files
        hard-linked (copied where the filesystem has none) once it is complete. Rank 0 only."""
        if self.rank == 0:
            self._in_flight.append(self._thread.submit(self._finish_link, existing, path))

    def _finish(self, pending: Any, meta: State | None, partial: Path, path: Path) -> None:
        with _errors_named(path):
            if pending is not None:
                pending.result()  # every rank's files and DCP's .metadata are written
            own = sorted(partial.glob(f"__{self.rank}_*"))
            lines = [f"{_sha256(file, fsync=True)}  {path.name}/{file.name}\n" for file in own]
            _hand_over(_digests_path(partial, self.rank), "".join(lines))
            if self.rank != 0:
                return
            assert meta is not None
            with (partial / META).open("wb") as file:
                torch.save(meta, file)
            lines = [f"{_sha256(partial / name, fsync=True)}  {path.name}/{name}\n" for name in (".metadata", META)] + [
                line for rank in range(self.world_size) for line in self._digests_of(partial, rank)
            ]
            _publish(partial, path, "".join(lines))
        self._prune(path)

    def _digests_of(self, partial: Path, rank: int) -> list[str]:
        """Rank `rank`'s digest lines, once its thread has written them."""
        digests, deadline = _digests_path(partial, rank), time.monotonic() + self.timeout_s
        while not digests.exists():
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"the checkpoint {partial.name}: rank {rank} did not finish its part within "
                    f"{self.timeout_s:.0f} s (distributed.timeout_s); the complete checkpoints are untouched"
                )
            time.sleep(0.01)
        lines = digests.read_text().splitlines(keepends=True)
        digests.unlink()
        return lines

    def _finish_link(self, existing: Path, path: Path) -> None:
        with _errors_named(path):
            partial = partial_path(path)
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for file in existing.iterdir():
                try:
                    os.link(file, partial / file.name)
                except OSError:
                    shutil.copyfile(file, partial / file.name)
            manifest = checksum_path(existing).read_text().replace(f"  {existing.name}/", f"  {path.name}/")
            _publish(partial, path, manifest)
        self._prune(path)

    def _prune(self, path: Path) -> None:
        if self.rank == 0:
            prune_after(path, self.keep_last)

    def wait(self) -> None:
        """Until every save handed over is complete; the error of one that failed."""
        while self._in_flight:
            self._in_flight.pop(0).result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._thread.shutdown()
            if self._group is not None and dist.is_initialized():
                dist.destroy_process_group(self._group)
                self._group = None


def _hand_over(digests: Path, lines: str) -> None:
    """This rank's digest lines for rank 0, which takes them (and renames their folder) as soon as
    the file appears: so the file appears whole, by a rename, and this rank touches the folder no
    more after it (no fsync of the folder, which rank 0 does before publishing)."""
    temporary = digests.with_name(f"{digests.name}.tmp")
    temporary.write_text(lines)
    os.replace(temporary, digests)


def _publish(partial: Path, path: Path, manifest: str) -> None:
    """Rename the complete folder `partial` to `path`, then write its checksum file: the mark
    that it counts. A `path` there already (best.pt) stops counting first, then goes."""
    _fsync_folder(partial)  # every rank's file names in it on disk
    checksum_path(path).unlink(missing_ok=True)
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    partial.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_folder(path.parent)
    _write_atomically(checksum_path(path), manifest.encode())


def verify(path: Path) -> None:
    """DamagedCheckpoint unless every file the checksum file lists is there with its digest."""
    written = checksum_path(path)
    if not written.exists():
        raise DamagedCheckpoint(f"{path} is incomplete: it has no {written.name}, written once every rank's part is")
    for line in written.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        file = path.parent / name
        if not file.is_file():
            raise DamagedCheckpoint(f"{path} is damaged: {name} is missing")
        if _sha256(file) != digest:
            raise DamagedCheckpoint(
                f"{path} is damaged: the bytes of {name} no longer match {written.name} ({file.stat().st_size} bytes now)"
            )


def load_meta(path: Path) -> State:
    """Everything in the checkpoint but the model and optimizer tensors, after `verify`."""
    verify(path)
    try:
        return torch.load(path / META, map_location="cpu", weights_only=True)
    except RuntimeError as error:
        raise DamagedCheckpoint(f"{path / META} cannot be read: {' '.join(str(error).split())[:200]}") from None


def load_into(path: Path, template: State) -> State:
    """`template`'s tensors ({'model': ..., 'optimizer': ...}, this rank's shards or whole
    tensors in one process) filled in place from the checkpoint, resharded from the world size
    it was saved on. Every rank calls it."""
    try:
        with _one_process_is_meant():
            _dcp().load(template, checkpoint_id=path)
    except (RuntimeError, ValueError, KeyError) as error:
        raise DamagedCheckpoint(f"{path} does not fit: {' '.join(str(error).split())[:400]}") from None
    return template


def load_whole(path: Path, part: str = "model") -> State:
    """The checkpoint's `part` ('model') as whole tensors in this one process, keyed as its
    state dict is, without the model itself: the shapes come from DCP's metadata."""
    verify(path)
    # start-up: see _dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = _dcp().FileSystemReader(path).read_metadata()
    prefix = f"{part}."
    whole = {
        key: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }
    with _one_process_is_meant():
        _dcp().load(whole, checkpoint_id=path, no_dist=True)
    return {key.removeprefix(prefix): tensor for key, tensor in whole.items()}


@contextlib.contextmanager
def _one_process_is_meant() -> Iterator[None]:
    # DCP warns where no process group exists, "assuming the intent is to load in a single process": it is.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (load|save) in a single process")
        yield


def split(state: State) -> tuple[State, State]:
    """(what DCP writes sharded, what goes into META)."""
    return {k: v for k, v in state.items() if k in TENSORS}, {k: v for k, v in state.items() if k not in TENSORS}
