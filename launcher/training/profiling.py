"""`logging.profile`: torch.profiler on rank 0 over one window of optimizer steps, its trace
written into the run folder (`profile/<host>_rank0.<time>.pt.trace.json`, Chrome's trace format:
Perfetto and TensorBoard's profile plugin open it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import torch

from launcher.config.schema import Profile

log = logging.getLogger("launcher")


class StepProfiler(Protocol):
    def step(self) -> None:
        """An optimizer step is done."""
        ...

    def close(self) -> None: ...


class NoProfiler:
    def step(self) -> None:
        pass

    def close(self) -> None:
        pass


class WindowProfiler:
    """Skips `wait` steps, warms up for `warmup`, records `active`, writes the trace, stops."""

    def __init__(self, section: Profile, folder: Path, device: torch.device) -> None:
        # start-up: the profiler's modules only where a run profiles
        from torch import profiler

        activities = [profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(profiler.ProfilerActivity.CUDA)
        else:
            # Kineto (the profiler's C++ side) otherwise prints stage lines and, with torch's CUDA
            # build on a machine without a GPU, "ERROR: gpuGetDeviceCount failed": not an error here.
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self.folder, self.section = folder, section
        self.steps_left = section.wait + section.warmup + section.active
        self.profiler: Any = profiler.profile(
            activities=activities,
            schedule=profiler.schedule(wait=section.wait, warmup=section.warmup, active=section.active, repeat=1),
            on_trace_ready=profiler.tensorboard_trace_handler(str(folder), worker_name="rank0"),
            record_shapes=True,
            profile_memory=section.memory,
            with_stack=section.with_stack,
        )
        self.profiler.start()

    def step(self) -> None:
        if self.profiler is None:
            return
        self.profiler.step()
        self.steps_left -= 1
        if self.steps_left == 0:  # the trace is written at the window's last step: done
            self.close()
            first = self.section.wait + self.section.warmup + 1
            log.info(
                "profile of this process's steps %d-%d written to %s: open it at ui.perfetto.dev, or with "
                "TensorBoard's profile plugin", first, first + self.section.active - 1, self.folder,
            )  # fmt: skip

    def close(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None


def step_profiler(section: Profile | None, folder: Path, device: torch.device, is_main: bool) -> StepProfiler:
    return WindowProfiler(section, folder, device) if section is not None and is_main else NoProfiler()
