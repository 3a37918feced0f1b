"""Batches of any structure: a tensor, or tuples, lists and dicts of them (nested), as a
DataLoader's collate gives them. Moved to the device as they are; counted by their first tensor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

IMAGE_BATCH_DIMS = 4  # N, C, H, W: what channels_last applies to


def to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """`batch` with every tensor in it on `device` (copied without blocking where the memory is
    pinned); with `channels_last`, 4-D floating-point tensors (images) in that memory format."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.dim() == IMAGE_BATCH_DIMS and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, Mapping):
        return {key: to_device(value, device, channels_last=channels_last) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple keeps its type
        return type(batch)(*(to_device(value, device, channels_last=channels_last) for value in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(value, device, channels_last=channels_last) for value in batch)
    return batch


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor of `batch` in order (a dict's in its key order), or None."""
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, list | tuple) else ()
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def batch_size(batch: Any) -> int:
    """The samples in `batch`: the length of its first tensor (0 where it holds none)."""
    found = first_tensor(batch)
    return 0 if found is None or found.dim() == 0 else len(found)
