"""The stopwatch inside every contender: when each training step starts and ends, on rank 0.

A forward pre-hook on the model notes when a training forward starts (the batch is in hand), a
global optimizer step post-hook when the step ends; evaluation forwards are noted apart. The
contender's own loop is untouched, so the same clock times torchrun, `launch`, Lightning and
Accelerate. The notes go to $BENCH_OUT/<contender>-<workload>.json when the process exits
(atexit, and multiprocessing's exit hook for workers the elastic agent starts).
"""

from __future__ import annotations

import atexit
import json
import multiprocessing.util
import os
import resource
import time
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


class _Probe:
    """This process's notes: None until `attach` starts them, and again once `_write` has written them."""

    notes: dict | None = None


def attach(model: nn.Module, workload: str, contender: str) -> nn.Module:
    # Lightning's subprocess launcher sets LOCAL_RANK (and NODE_RANK) but no RANK.
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if "BENCH_OUT" not in os.environ or rank != 0 or _Probe.notes is not None:
        return model
    contender = os.environ.get("BENCH_CONTENDER", contender)
    notes = _Probe.notes = {
        "workload": workload,
        "contender": contender,
        "starts": [],
        "ends": [],
        "cpu": [],  # the process's CPU time (every thread) at each step's end
        "evals": [],
        "val": [],
        "pid": os.getpid(),
    }

    @torch.compiler.disable  # under torch.compile too (else dynamo breaks the graph at time.time, with a warning)
    def forward_starts(module: nn.Module, args: object) -> None:
        (notes["starts"] if module.training else notes["evals"]).append(time.time())

    model.register_forward_pre_hook(forward_starts)

    def step_ends(*_: object) -> None:
        notes["ends"].append(time.time())
        notes["cpu"].append(time.process_time())

    register_optimizer_step_post_hook(step_ends)
    atexit.register(_write)
    multiprocessing.util.Finalize(None, _write, exitpriority=100)
    return model


def validated(value: float) -> None:
    """The contender's own validation figure (the workload's `val_metric`: accuracy, or a language
    model's loss), noted with the time it was known."""
    if _Probe.notes is not None:
        _Probe.notes["val"].append((time.time(), float(value)))


def _write() -> None:
    if _Probe.notes is None:
        return
    notes, _Probe.notes = _Probe.notes, None
    # The peak: CUDA's most allocated where the process used a GPU, else its peak resident memory.
    cuda = torch.cuda.is_initialized()
    notes["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**20
    out = Path(os.environ["BENCH_OUT"]) / f"{notes['contender']}-{notes['workload']}.json"
    temporary = out.with_name(f".{out.name}.{os.getpid()}")
    temporary.write_text(json.dumps(notes))
    temporary.replace(out)
