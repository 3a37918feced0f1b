"""NCCL's flight recorder, switched on for every GPU run: each rank keeps its last collectives
in a ring buffer and, when a collective times out, dumps it into the run folder
(`flight_recorder/rank_<N>`). A failed run's message points at the dumps and at torch's reader,
which lines the ranks' collectives up and names the first that did not match or finish."""

from __future__ import annotations

import os
from pathlib import Path

import torch

ENTRIES = 2000  # collectives kept per rank: torchtitan's setting
PREFIX = "rank_"


def folder(run_path: Path) -> Path:
    return run_path / "flight_recorder"


def environment(run_path: Path) -> dict[str, str]:
    """The variables that switch it on, dumping into the run folder (torch reads them when the
    NCCL process group starts)."""
    return {
        "TORCH_FR_BUFFER_SIZE": str(ENTRIES),
        "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
        "TORCH_FR_DUMP_TEMP_FILE": str(folder(run_path) / PREFIX),
    }


def switch_on(run_path: Path, device: torch.device) -> None:
    """On CUDA (NCCL), before the process group starts; values the user set are kept."""
    if device.type != "cuda":
        return  # gloo: no watchdog dumps on a timeout
    folder(run_path).mkdir(parents=True, exist_ok=True)
    for name, value in environment(run_path).items():
        os.environ.setdefault(name, value)


def pointer(run_path: Path) -> str | None:
    """Where a failed run's dumps are and how to read them; None where there are none."""
    dumps = sorted(folder(run_path).glob(f"{PREFIX}*"))
    if not dumps:
        return None
    return (
        f"NCCL's flight recorder dumped {len(dumps)} rank(s)' last collectives into {folder(run_path)}: "
        f"`torchfrtrace {folder(run_path)} --prefix {PREFIX}` (torch.distributed.flight_recorder) lines the ranks' "
        "collectives up and names the first they did not all reach"
    )
