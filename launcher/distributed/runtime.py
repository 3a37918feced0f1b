"""Where this process runs: its rank among the workers and its device."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
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


def make_deterministic(enabled: bool = True) -> None:
    """Deterministic algorithms only (`train.deterministic`): CPU runs are bitwise repeatable
    already; on GPUs this also needs cuBLAS's fixed workspace and cuDNN without autotuning.
    Set both ways: the runs of a sweep train one after another in one process."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA work
    if enabled or torch.are_deterministic_algorithms_enabled():
        # Not where it is off already (every run's start): the call imports torch._inductor,
        # 1.2 s of a worker's start-up on torch 2.14 (measured).
        torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20
_TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed host memory for the next step (`train.reuse_freed_memory`);
    False where the C library is not glibc (macOS, musl), where nothing changes.

    A training step frees and allocates the same large tensors every time: gradients (freed by
    zero_grad), the optimizer's temporaries, activations. By default glibc hands blocks over its
    mmap threshold back to the kernel on free, and trims the top of its heap, so the next step
    faults every page in again: on the bench's W2 (a 10M-parameter MLP, 2 gloo processes), about
    17,000 page faults a step and a third of the run's CPU time in the kernel. Serving blocks of
    up to 32 MiB from the heap and trimming it only above 1 GiB free cuts those faults about 5x.
    The price: a process keeps its peak memory instead of returning it between steps.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
