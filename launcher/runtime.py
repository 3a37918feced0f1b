"""Where this process runs: its rank among the workers and its device."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger("launcher")


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run. A single-process run is rank 0 of a world of 1."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def single_process(force_cpu: bool = False) -> Runtime:
    """One process: the first CUDA device where there is one (unless `force_cpu`), else the CPU."""
    use_cuda = torch.cuda.is_available() and not force_cpu
    return Runtime(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The mixed-precision context for `precision` on `device`; fp32 where the device can't do it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        log.warning("train.precision=fp16 needs CUDA; training in fp32 on %s (bf16 works on the CPU)", device)
        return contextlib.nullcontext()
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16; training in fp32 (try train.precision=fp16)")
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_deterministic() -> None:
    """Deterministic algorithms only (`train.deterministic`): CPU runs are bitwise repeatable
    already; on GPUs this also needs cuBLAS's fixed workspace and cuDNN without autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA work
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
