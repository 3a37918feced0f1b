"""torch.compile (`train.compile`): the model compiled in place, and the compiled code cached in
the run folder, so that a resumed or requeued run does not compile it all again."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from launcher.config.schema import CompileOptions
from launcher.models.build import modules_of_classes

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def compile_model(net: nn.Module, options: CompileOptions | None, per_block: list[str] | None = None) -> None:
    """Compile `net` in place as `train.compile` says (None: leave it eager). Lazily: the first
    forward pass compiles (the first training step's time says how long it took), and a new
    mode (evaluation, no gradients) or a new shape compiles again.

    In place (nn.Module.compile), so that `net` stays the module checkpoints hold, with the same
    state-dict keys as eager: `torch.compile(net)` would return a wrapper whose keys start with
    `_orig_mod.`, and a checkpoint of a compiled run would not load into an eager model.

    `per_block`: class names whose every instance is compiled on its own instead of the whole
    of `net` (the rest then runs eagerly), as torchtitan compiles each transformer block before
    FSDP2 shards it: fully_shard's hooks then run between the compiled blocks. None: the whole
    net, for one process and DDP.

    Order: activation checkpointing first (models.activation_checkpointing: dynamo then traces
    the checkpoints into the graph), then this, then the wrap over the ranks (DDP, fully_shard).
    A DDP wrapped around a whole compiled net reduces the gradients once the compiled backward
    has finished: its hooks fire as gradients are ready, and the compiled backward gives them
    all at its end (per_block would let them fire between blocks; not measured).
    """
    if options is None:
        return
    arguments = options.model_dump(exclude_none=True)
    if per_block is None:
        net.compile(**arguments)
        return
    for block in modules_of_classes(net, per_block, "train.compile (per block)"):
        block.compile(**arguments)


@contextlib.contextmanager
def compile_cache(folder: Path | None) -> Iterator[None]:
    """Inductor's on-disk caches (FX graphs, AOTAutograd's, kernels, Triton's) in `folder` for
    the duration (None: left where they are), then as before.

    The run folder's `compile_cache/` by default: it is on the filesystem every node of the run
    sees, so a run resumed or requeued on another node finds its compiled code (torch's default
    is /tmp/torchinductor_<user>, on the node that compiled); it goes with the run when the run
    folder is deleted; and no two runs' compilations share a folder. The cache keys hold torch's
    version and the graphs, so a stale entry is missed, never wrongly hit.

    An environment variable because it is torch's only setting for the folder (inductor reads it
    at each use; there is no torch._inductor.config field), set in the process that compiles.
    """
    if folder is None:
        yield
        return
    before = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(folder.resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_VARIABLE, None)
        else:
            os.environ[CACHE_VARIABLE] = before


def graphs_compiled() -> tuple[int, int]:
    """(from the cache, compiled) inductor graphs so far in this process: the FX graph cache's hits
    and misses. Private: torch has no public count of them; torch._dynamo.utils.counters is what
    its own cache tests read."""
    # Here, not at the top: importing torch._dynamo takes a second, which a run that does not compile need not pay.
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return inductor["fxgraph_cache_hit"], inductor["fxgraph_cache_miss"]
