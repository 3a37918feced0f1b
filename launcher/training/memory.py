"""What training holds in memory on each rank: the bytes of its parameters, gradients and
optimizer state (its own shards under FSDP, everything under DDP), and the peak memory of the
process (CUDA's most allocated on a GPU; the peak resident set on the CPU)."""

from __future__ import annotations

import resource
import sys

import torch
from pydantic import BaseModel


class Memory(BaseModel):
    """One rank's figures, in bytes."""

    rank: int
    parameters: int
    gradients: int
    optimizer_state: int
    peak: int
    peak_kind: str  # cuda_max_allocated | max_rss


def _local(tensor: torch.Tensor) -> torch.Tensor:
    # A DTensor's own shard (FSDP); DTensor's module is imported only where a run shards.
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _bytes(tensor: torch.Tensor) -> int:
    local = _local(tensor)
    return local.numel() * local.element_size()


def measure(net: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, rank: int) -> Memory:
    """This rank's figures now: taken after an optimizer step, before the gradients are cleared."""
    parameters = list(net.parameters())  # a tied weight once
    state = [value for states in optimizer.state.values() for value in states.values() if torch.is_tensor(value)]
    return Memory(
        rank=rank,
        parameters=sum(_bytes(p) for p in parameters),
        gradients=sum(_bytes(p.grad) for p in parameters if p.grad is not None),
        optimizer_state=sum(_bytes(v) for v in state),
        **peak(device),
    )


def peak(device: torch.device) -> dict[str, int | str]:
    if device.type == "cuda":
        return {"peak": torch.cuda.max_memory_allocated(device), "peak_kind": "cuda_max_allocated"}
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return {"peak": usage if sys.platform == "darwin" else usage * 1024, "peak_kind": "max_rss"}


def describe(figures: list[Memory]) -> str:
    """One line for the log: the ranks' figures (once where every rank's are the same)."""

    def one(m: Memory) -> str:
        return (
            f"parameters {_size(m.parameters)}, gradients {_size(m.gradients)}, "
            f"optimizer state {_size(m.optimizer_state)}"
        )

    if len({one(m) for m in figures}) == 1:
        return f"memory per rank: {one(figures[0])} (each of {len(figures)} rank(s))"
    return "memory per rank: " + "; ".join(f"rank {m.rank}: {one(m)}" for m in figures)


def _size(count: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
