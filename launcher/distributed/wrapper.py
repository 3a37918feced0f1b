"""The model wrapper: how the model the loop calls is spread over the ranks, and how its state
is read and loaded. DDP (`DataParallel`: every rank holds the whole model) or FSDP2
(`FullyShard`: each rank holds a shard of every parameter, gradient and optimizer state)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from launcher.config.schema import Fsdp
from launcher.distributed.process_group import is_distributed
from launcher.distributed.runtime import Runtime
from launcher.models.build import modules_of_classes

log = logging.getLogger("launcher")

StateDicts = tuple[dict[str, Any], dict[str, Any]]  # the model's and the optimizer's


class ModelWrapper(Protocol):
    def wrap(self, model: nn.Module) -> nn.Module:
        """What the loop calls: `model` spread over the ranks. Checkpoints hold `model` itself."""
        ...

    def accumulating(self, wrapped: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager[None]:
        """Around a micro-batch's forward and backward: with `skip_sync`, its gradients stay local
        (they add up over the micro-batches of one optimizer step, and only the last one syncs)."""
        ...

    def state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> StateDicts:
        """The model's and the optimizer's state, as this wrapper's checkpoints hold them."""
        ...

    def load_state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer, model: Any, optim: Any) -> None:
        """Load what `state_dicts` gave (from this world size or another)."""
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

    def state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> StateDicts:
        return net.state_dict(), optimizer.state_dict()

    def load_state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer, model: Any, optim: Any) -> None:
        net.load_state_dict(model)
        optimizer.load_state_dict(optim)


class FullyShard:
    """FSDP2 (`fully_shard`): every module whose class is named in `fsdp.shard`, then the whole
    model, becomes a unit whose parameters, gradients and optimizer state are split over the
    ranks; a unit's parameters are gathered just before it runs and freed after. With bf16, the
    gathered parameters are bf16 and gradients are reduced in fp32. The state dicts are
    sharded (DTensors keyed by parameter name, torch.distributed.checkpoint's format), so that
    each rank saves and loads its own part, on any world size.

    The device mesh is on the run's own device type: a gloo run on a machine with GPUs must not
    put it on CUDA. In a single process nothing is sharded; the state dicts keep the same keys."""

    def __init__(self, runtime: Runtime, section: Fsdp, precision: str, sync_batchnorm: bool) -> None:
        self.runtime, self.section, self.sync_batchnorm, self.precision = runtime, section, sync_batchnorm, precision

    def wrap(self, model: nn.Module) -> nn.Module:
        units = {id(m) for m in modules_of_classes(model, self.section.shard, "distributed.fsdp.shard")}
        if not is_distributed():
            return model
        if self.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Each rank built the model from its own random state; DDP starts every rank from rank 0's
        # weights, and so does this (fully_shard keeps each rank's slice of its own weights).
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.detach(), src=0)
        # start-up: FSDP's modules (with DCP's, about 0.9 s of imports) only for strategy fsdp
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.runtime.device.type, (self.runtime.world_size,))
        bf16 = self.precision == "bf16"
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
        reshard = self.section.reshard_after_forward
        # BatchNorm in fp32, as under autocast: its bf16 weights against its fp32 running
        # statistics fail, so with bf16 each BatchNorm is a unit of its own, fp32 inside, bf16 out.
        norms = [m for m in model.modules() if bf16 and _is_batchnorm(m) and m is not model and m.affine]
        fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, output_dtype=torch.bfloat16)
        # Innermost first (a reversed pre-order walk): a unit is sharded before any unit holding it.
        for module in reversed(list(model.modules())):
            if any(module is norm for norm in norms):
                fully_shard(module, mesh=mesh, reshard_after_forward=reshard, mp_policy=fp32)
            elif id(module) in units and module is not model:
                fully_shard(module, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
        if norms:
            log.info(
                "FSDP with bf16: %d BatchNorm module(s) sharded as units of their own that compute in fp32", len(norms)
            )
        # The root's parameters (embeddings, the head...) are needed again as soon as the backward starts.
        fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
        return model

    @contextlib.contextmanager
    def accumulating(self, wrapped: nn.Module, skip_sync: bool) -> Iterator[None]:
        if is_fsdp(wrapped):
            # Without sync, each unit keeps its unsharded gradient and adds the next micro-batch's to it.
            wrapped.set_requires_gradient_sync(not skip_sync)  # type: ignore[operator]
        yield

    def state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> StateDicts:
        # start-up: DCP's modules only for strategy fsdp (see wrap)
        from torch.distributed.checkpoint.state_dict import get_state_dict

        share_buffers(net)
        return get_state_dict(net, optimizer)

    def load_state_dicts(self, net: nn.Module, optimizer: torch.optim.Optimizer, model: Any, optim: Any) -> None:
        # start-up: DCP's modules only for strategy fsdp (see wrap)
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(net, optimizer, model_state_dict=model, optim_state_dict=optim)


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def share_buffers(net: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. FSDP does not shard
    buffers, and unlike DDP does not broadcast them at each forward, so each rank's training
    moves its own; a checkpoint holds one copy of each, and the evaluation uses rank 0's, as
    under DDP. Every rank calls it."""
    if is_distributed():
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)


def is_fsdp(model: nn.Module) -> bool:
    """The model is sharded by FSDP2 (whose module is imported only where a run shards: `wrap`)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def forwards_run_collectives(model: nn.Module) -> bool:
    """The model's forward all-gathers parameters (FSDP): every rank must run the same number of them."""
    return is_fsdp(model) and is_distributed()


def for_evaluation(wrapped: nn.Module) -> nn.Module:
    """The model to evaluate this rank's own validation shard with, running no collective per
    batch: ranks may have different numbers of validation batches (an odd last batch, an empty
    shard where there are more ranks than samples), and DDP's forward broadcasts the buffers
    from rank 0 at every call, so a rank with a batch more would wait for the others forever.
    DDP's module itself, then, with rank 0's buffers broadcast once (BatchNorm's running
    statistics, which each rank's last training batch moved its own way): what DDP's forward
    would have used. Every rank calls it."""
    if is_fsdp(wrapped):
        share_buffers(wrapped)  # its forward gathers parameters: `evaluate` keeps the ranks in step
        return wrapped
    if not isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped
    if wrapped.broadcast_buffers:
        share_buffers(wrapped.module)
    return wrapped.module
