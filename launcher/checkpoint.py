"""Checkpoints: written atomically, found newest-first, pruned to the last K, loaded safely.

A checkpoint is one file `checkpoints/step-<N>.pt` (plus `best.pt` when asked). It is written
to a temporary name in the same folder, flushed to disk, then renamed into place: a reader sees
either the whole file or none of it. Only names matching `step-*.pt` count, so a temporary file
left by a crash is never mistaken for a checkpoint. Loading uses `weights_only=True`, so a
checkpoint cannot run code: everything saved is tensors and plain Python data.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEP_NAME = re.compile(r"^step-(\d+)\.pt$")
BEST = "best.pt"


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def save(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def saved_steps(folder: Path) -> list[Path]:
    """The `step-N.pt` checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    steps = saved_steps(folder)
    return steps[-1] if steps else None


def prune(folder: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints; return what could not be deleted."""
    failed = []
    for path in saved_steps(folder)[:-keep_last]:
        try:
            path.unlink()
        except OSError:
            failed.append(path)
    return failed


def newer_than(folder: Path, step: int) -> list[Path]:
    """Set aside (rename to `*.abandoned`) the step checkpoints after `step`: a run resumed from an
    older checkpoint takes another path, and pruning by step number would delete its new files."""
    moved = []
    for path in saved_steps(folder):
        if int(STEP_NAME.match(path.name).group(1)) > step:  # type: ignore[union-attr]
            path.rename(path.with_name(path.name + ".abandoned"))
            moved.append(path)
    return moved


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- random number generators: saved as tensors and plain data, so weights_only can load them ---


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
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
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a round trip through storage may give lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
