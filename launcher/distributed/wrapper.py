"""The model wrapper: how the model the loop calls is spread over the ranks. Today DDP (the
model itself in one process); FSDP plugs in here, behind the same two methods."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch.distributed as dist
from torch import nn

from launcher.distributed.process_group import is_distributed
from launcher.distributed.runtime import Runtime


class ModelWrapper(Protocol):
    def wrap(self, model: nn.Module) -> nn.Module:
        """What the loop calls: `model` spread over the ranks. Checkpoints hold `model` itself."""
        ...

    def accumulating(self, wrapped: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager[None]:
        """Around a micro-batch's forward and backward: with `skip_sync`, its gradients stay local
        (they add up over the micro-batches of one optimizer step, and only the last one syncs)."""
        ...


class DataParallel:
    """DDP across the workers (with SyncBatchNorm if asked); the model itself in one process."""

    def __init__(self, runtime: Runtime, sync_batchnorm: bool) -> None:
        self.runtime, self.sync_batchnorm = runtime, sync_batchnorm

    def wrap(self, model: nn.Module) -> nn.Module:
        if not is_distributed():
            return model
        if self.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.runtime.local_rank] if self.runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    @contextlib.contextmanager
    def accumulating(self, wrapped: nn.Module, skip_sync: bool) -> Iterator[None]:
        if skip_sync and isinstance(wrapped, nn.parallel.DistributedDataParallel):
            with wrapped.no_sync():
                yield
        else:
            yield


def for_evaluation(wrapped: nn.Module) -> nn.Module:
    """The model to evaluate this rank's own validation shard with, running no collective per
    batch: ranks may have different numbers of validation batches (an odd last batch, an empty
    shard where there are more ranks than samples), and DDP's forward broadcasts the buffers
    from rank 0 at every call, so a rank with a batch more would wait for the others forever.
    DDP's module itself, then, with rank 0's buffers broadcast once (BatchNorm's running
    statistics, which each rank's last training batch moved its own way): what DDP's forward
    would have used. Every rank calls it."""
    if not isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped
    if wrapped.broadcast_buffers:
        for buffer in wrapped.module.buffers():
            dist.broadcast(buffer, src=0)
    return wrapped.module
