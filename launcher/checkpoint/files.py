"""Checkpoints: written atomically, counted only when complete, pruned to the last K, loaded safely.

A checkpoint is one file `checkpoints/step-<N>.pt` (plus `best.pt` when asked) and, beside it,
its checksum `step-<N>.pt.sha256` (sha256sum's format: `sha256sum -c` checks it). The file is
written to a temporary name in the same folder, flushed to disk and renamed into place; the
checksum is written the same way, last. Only a `step-*.pt` with its checksum counts, so neither
a temporary file left by a crash nor a file whose checksum never got written is mistaken for a
checkpoint, and loading compares the checksum, so a file damaged later (truncated, a disk
error) is refused with a clear error instead of half-loaded. Loading uses `weights_only=True`:
a checkpoint cannot run code; everything saved is tensors and plain Python data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import logging
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch

from launcher.errors import RunFailed, UserError

log = logging.getLogger("launcher")

STEP_NAME = re.compile(r"^step-(\d+)\.pt$")
BEST = "best.pt"
SHARDED_META = (
    "meta.pt"  # in a sharded checkpoint's folder: everything but the model and optimizer (checkpoint.sharded)
)
CHECKSUM = ".sha256"


class DamagedCheckpoint(UserError):
    """A checkpoint whose bytes are not those that were written."""


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM)


def save(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to `path` atomically, then its checksum: the mark that it is complete."""
    return _complete(_serialize(state, path), path)


def _serialize(state: dict[str, Any], path: Path) -> Path:
    """`state` in a temporary file beside `path` (not yet flushed to disk): the part of a save
    that must happen before training changes the state again."""
    with _errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary(path)
        try:
            with temporary.open("wb") as file:
                _torch_save(state, file)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return temporary


def _complete(temporary: Path, path: Path) -> Path:
    """Flush the temporary file to disk, rename it to `path`, then write its checksum."""
    with _errors_named(path):
        try:
            digest = _sha256(temporary, fsync=True)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _publish(temporary, path, digest)
    return path


def _publish(temporary: Path, path: Path, digest: str) -> None:
    """Rename the temporary file, on disk already with sha256 `digest`, to `path`; then write the
    checksum, the mark that `path` is complete."""
    try:
        # Overwriting (best.pt): the old checksum goes just before its file is replaced, so
        # that a crash in between leaves no checksum that disagrees with the file.
        checksum_path(path).unlink(missing_ok=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    _write_atomically(checksum_path(path), f"{digest}  {path.name}\n".encode())


@contextlib.contextmanager
def _errors_named(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:  # disk full, quota, read-only or vanished folder
        raise RunFailed(
            f"cannot write the checkpoint {path}: {error.strerror or error}; "
            f"the complete checkpoints already in {path.parent} are untouched"
        ) from None


class _ReportingFile:
    """A file whose write errors survive torch.save, which turns them into a vague RuntimeError."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(state: dict[str, Any], file: Any) -> None:
    reporting = _ReportingFile(file)
    try:
        torch.save(state, cast(IO[bytes], reporting))  # torch.save calls only write() and flush() on it
    except RuntimeError:
        if reporting.error is not None:
            raise reporting.error from None
        raise


_SAVES = itertools.count()


def _temporary(path: Path) -> Path:
    """Where `path` is written before its rename: hidden, this process's own and this save's own
    (best.pt's next save is serialized while the one before may still be finishing under its
    temporary name)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{next(_SAVES)}.tmp")


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = _temporary(path)
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _sha256(path: Path, fsync: bool = False) -> str:
    """The file's sha256; with `fsync`, its bytes flushed to disk first."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        if fsync:
            os.fsync(file.fileno())
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Writer:
    """Rank 0's checkpoints, written beside the training loop.

    The loop waits only for what must happen before it changes the state again: the state
    serialized to a temporary file, or with `asynchronous` only copied in memory. Flushing to
    disk, the checksum, the rename and pruning to the last `keep_last` happen in a background
    thread. A checkpoint counts only once its checksum is written, so one cut short by a crash is
    never taken for a complete one. At most one checkpoint is finishing while the next is
    serialized; an asynchronous save first waits for the one before, whose buffers it reuses. A
    step checkpoint of the step best.pt was just saved at is a second name for that file
    (`save_link`), not a second serialization. `save` and `close()` raise the error of a save
    that failed beside training (a full disk, named as `save` names it).
    """

    def __init__(self, keep_last: int, asynchronous: bool = False) -> None:
        self.keep_last, self.asynchronous = keep_last, asynchronous
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._in_flight: list[concurrent.futures.Future] = []
        self._buffers: list[torch.Tensor] = []  # the asynchronous copies, reused from save to save

    def save(self, state: dict[str, Any], path: Path) -> None:
        self.wait(keep=0 if self.asynchronous else 1)
        if self.asynchronous:
            copy = self._copy(state)
            self._in_flight.append(self._thread.submit(lambda: self._finish(_serialize(copy, path), path)))
        else:
            temporary = _serialize(state, path)
            self._in_flight.append(self._thread.submit(self._finish, temporary, path))

    def save_link(self, source: Path, path: Path) -> None:
        """`path` as a second name of `source`, the checkpoint handed over just before with the
        same state (the step checkpoint of the step best.pt was saved at). The loop does not wait:
        once `source` is complete, the writer's thread hard-links it (copies it where the
        filesystem has no hard links) and writes the checksum. A later best.pt replaces its own
        name only: this file keeps its bytes."""
        self._in_flight.append(self._thread.submit(self._finish_link, source, path))

    def _finish(self, temporary: Path, path: Path) -> None:
        _complete(temporary, path)
        self._prune(path)

    def _finish_link(self, source: Path, path: Path) -> None:
        with _errors_named(path):
            temporary = _temporary(path)
            try:
                try:
                    os.link(source, temporary)
                    digest = checksum_path(source).read_text().split()[0]  # the same bytes, on disk already
                except OSError:
                    shutil.copyfile(source, temporary)
                    digest = _sha256(temporary, fsync=True)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            _publish(temporary, path, digest)
        self._prune(path)

    def _prune(self, path: Path) -> None:
        prune_after(path, self.keep_last)

    def _copy(self, state: Any) -> Any:
        """`state` with every tensor copied into a CPU buffer kept for the next save."""
        copied = self._copy_into(state, itertools.count())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the device-to-host copies are done
        return copied

    def _copy_into(self, state: Any, positions: Iterator[int]) -> Any:
        """The walk behind `_copy`: the n-th tensor met goes into the n-th buffer."""
        if isinstance(state, torch.Tensor):
            i = next(positions)
            if (
                i == len(self._buffers)
                or self._buffers[i].shape != state.shape
                or self._buffers[i].dtype != state.dtype
            ):
                buffer = torch.empty_like(state, device="cpu", pin_memory=state.is_cuda)
                self._buffers[i : i + 1] = [buffer]
            return self._buffers[i].copy_(state.detach(), non_blocking=True)
        if isinstance(state, dict):
            return {k: self._copy_into(v, positions) for k, v in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self._copy_into(v, positions) for v in state)
        return state

    def wait(self, keep: int = 0) -> None:
        """Until no more than the newest `keep` saves are still finishing; the error of one that failed."""
        while len(self._in_flight) > keep or any(f.done() for f in self._in_flight):
            self._in_flight.pop(0).result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._thread.shutdown()


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def saved_steps(folder: Path) -> list[Path]:
    """The complete `step-N.pt` checkpoints in `folder` (those with their checksum), oldest first."""
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_NAME.match(p.name)) and checksum_path(p).exists()
    ]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    steps = saved_steps(folder)
    return steps[-1] if steps else None


def prune(folder: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints; return what could not be deleted."""
    failed = []
    for path in saved_steps(folder)[:-keep_last]:
        try:
            checksum_path(path).unlink()  # first: a file left behind no longer counts
            if path.is_dir():  # a sharded checkpoint (checkpoint.sharded); no other folder is deleted
                if not (path / SHARDED_META).exists():
                    raise IsADirectoryError(path)
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            failed.append(path)
    return failed


def prune_after(path: Path, keep_last: int) -> None:
    """After the step checkpoint `path` is complete: the last `keep_last` kept, a warning for any
    that could not be deleted (training goes on)."""
    if STEP_NAME.match(path.name):
        for stuck in prune(path.parent, keep_last):
            log.warning("could not delete the old checkpoint %s; training goes on", stuck)


def newer_than(folder: Path, step: int) -> list[Path]:
    """Set aside (rename to `*.abandoned`) the step checkpoints after `step`: a run resumed from an
    older checkpoint takes another path, and pruning by step number would delete its new files."""
    moved = []
    for path in folder.glob("step-*.pt") if folder.is_dir() else []:
        match = STEP_NAME.match(path.name)
        if match and int(match.group(1)) > step:
            checksum_path(path).unlink(missing_ok=True)
            path.rename(path.with_name(path.name + ".abandoned"))
            moved.append(path)
    return sorted(moved)


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, after checking its checksum where it has one (a file from
    elsewhere may not); raises DamagedCheckpoint if the bytes differ from those written."""
    if path.is_dir():
        raise DamagedCheckpoint(
            f"{path} is a sharded checkpoint (a folder, from distributed.strategy=fsdp): train with fsdp to resume "
            f"from it, or make it one file with `launch export {path} --out model.pt`"
        )
    written = checksum_path(path)
    if written.exists() and written.read_text().split()[0] != _sha256(path):
        raise DamagedCheckpoint(
            f"{path} is damaged: its bytes no longer match {written.name} ({path.stat().st_size} bytes now)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as error:  # not a whole zip file: a truncated or foreign file
        raise DamagedCheckpoint(
            f"{path} cannot be read as a checkpoint: {' '.join(str(error).split())[:200]}"
        ) from None


def progress_of(path: Path) -> dict[str, Any] | None:
    """The training position saved in a checkpoint (epoch, step...), read without reading the
    tensors (a memory map: a fraction of a second whatever the size); None where the file cannot
    be read that way (`load` then says why, with the checksum)."""
    try:
        source = path / SHARDED_META if path.is_dir() else path  # a sharded checkpoint: its rank 0's part
        progress = torch.load(source, map_location="cpu", weights_only=True, mmap=True).get("progress")
    except (RuntimeError, OSError, AttributeError, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


# --- random number generators: saved as tensors and plain data, so weights_only can load them ---


def rng_states() -> dict[str, Any]:
    # legacy=True is the default; numpy's stub reads a bare call as legacy=False (a dict).
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # the global RandomState is an MT19937: always the legacy tuple
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    n = states["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a round trip through storage may give lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
