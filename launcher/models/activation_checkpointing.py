"""Activation checkpointing (`model.activation_checkpointing`): the named blocks keep only their
inputs for the backward pass and run their forward again there, trading compute for memory."""

from __future__ import annotations

import types
from typing import Any

import torch.utils.checkpoint
from torch import nn

from launcher.models.build import modules_of_classes


def apply_activation_checkpointing(net: nn.Module, class_names: list[str]) -> None:
    """Checkpoint every submodule of `net` whose class is named in `class_names`, in place: the
    module structure, the parameter names and the state-dict keys stay as they are, so that a
    checkpoint of a run with it loads into one without, and optimizer.param_groups' name
    patterns match alike. A UserError, before training, where a name matches no class of `net`.

    Order (see `training.compilation.compile_model`): this, then torch.compile, then the wrap
    over the ranks (DDP; FSDP2's fully_shard on the same blocks).

    How: each such module's forward is replaced, on the instance, by torch.utils.checkpoint's
    non-reentrant checkpoint of its class's forward (what torch's checkpoint_wrapper does, minus
    the wrapper). The alternatives, measured on torch 2.14.1 with the tiny GPT:
    - torch.distributed._composable.checkpoint (the same idea, as forward hooks) gives the same
      gradients eagerly and with each block compiled on its own, but with the whole model
      compiled the backward fails (CheckpointError: the recomputed tensors' metadata differ;
      turning dynamo's LRU cache off, as the message advises after pytorch/pytorch#166926, does
      not help), and the whole model is what train.compile compiles for one process and DDP.
    - torch's checkpoint_wrapper (torchtitan's choice) nests each block under
      `_checkpoint_wrapped_module`: its state-dict keys are kept by a hook, but not the parameter
      names that optimizer.param_groups match and the logs show.
    torch.utils.checkpoint is public, dynamo traces it into the graph (a higher-order op whose
    recomputation inductor plans), and a block sharded by fully_shard afterwards is gathered by
    FSDP2's pre-backward hook before its recomputation, as under torchtitan's wrapper.
    """
    for module in modules_of_classes(net, class_names, "model.activation_checkpointing"):
        module.forward = types.MethodType(_checkpointed(type(module).forward), module)


def _checkpointed(forward: Any) -> Any:
    """`forward` (a class's, unbound) run under a non-reentrant checkpoint. Non-reentrant: it
    takes keyword arguments and inputs that need no gradient, works with torch.compile, and is
    the one torch recommends. The RNG state is kept (dropout draws the same mask again)."""

    def checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return torch.utils.checkpoint.checkpoint(forward, self, *args, use_reentrant=False, **kwargs)

    return checkpointed_forward
