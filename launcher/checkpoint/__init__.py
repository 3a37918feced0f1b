"""Checkpoints: files written atomically and checksummed, so that a half-written one is never taken
for a good one; step-N.pt and best.pt in a run's checkpoints/ folder; the random states of every rank.

The package's names are those of `files`, so that code reads `checkpoint.save(...)`,
`checkpoint.latest(folder)`; `storage` is the seam a sharded format plugs into.
"""

from launcher.checkpoint.files import (
    BEST,
    CHECKSUM,
    STEP_NAME,
    DamagedCheckpoint,
    Writer,
    checksum_path,
    latest,
    load,
    newer_than,
    progress_of,
    prune,
    restore_rng_states,
    rng_states,
    save,
    saved_steps,
    step_path,
)

__all__ = [
    "STEP_NAME",
    "BEST",
    "CHECKSUM",
    "DamagedCheckpoint",
    "step_path",
    "checksum_path",
    "save",
    "Writer",
    "saved_steps",
    "latest",
    "prune",
    "newer_than",
    "load",
    "progress_of",
    "rng_states",
    "restore_rng_states",
]
