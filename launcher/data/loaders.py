"""Data loaders: each rank's share of an epoch, resumable mid-epoch, in the same order on any number of workers.

A map-style dataset is shared out by a sampler (ResumableSampler, ShardSampler); a stream (an
IterableDataset) shares itself out (`data.streaming`) and is read by StreamBatches.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from launcher.config import components
from launcher.config.components import Kind
from launcher.config.schema import Data
from launcher.data.build import Transformed
from launcher.data.datasets import num_samples
from launcher.data.streaming import is_stream, resumes_exactly, stream_length
from launcher.distributed.process_group import all_reduce_sum, is_distributed

if TYPE_CHECKING:
    from torchdata.stateful_dataloader import StatefulDataLoader

log = logging.getLogger("launcher")


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch can start part-way through, for resuming mid-epoch.

    The order of an epoch depends only on (seed, epoch), never on a global random state, so a
    resumed run sees exactly the samples the uninterrupted run would have seen.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Start `epoch` after the first `start` samples of this rank's share."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def train_loader(
    dataset: Dataset,
    section: Data,
    *,
    batch_size: int,
    drop_last: bool,
    seed: int,
    rank: int,
    world_size: int,
    pin: bool,
) -> DataLoader | StreamBatches:
    """This rank's training batches: a DataLoader over its share of a map-style dataset, or a
    stream's StreamBatches."""
    if is_stream(dataset):
        return StreamBatches(
            dataset, section, batch_size=batch_size, drop_last=drop_last, seed=seed, rank=rank, pin=pin
        )
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=section.num_workers,
        pin_memory=pin,
        # Workers are started anew each epoch, so that they see the epoch `start_epoch` sets on
        # the dataset (the augmentations' seed) and draw their own seeds from this generator.
        persistent_workers=False,
        generator=torch.Generator(),
        worker_init_fn=_leave_interrupts_to_the_trainer,
        multiprocessing_context=_LOADER_START if section.num_workers > 0 else None,
        collate_fn=collate_function(section),
    )


_LOADER_START = "fork" if sys.platform == "linux" else None

# `data.collate_fn`: a function of the user's (`module:attr`) that makes a list of samples into a
# batch (padding sequences, building dicts...); None: torch's default_collate.
COLLATE = Kind("collate_fn", "module:attr", None, dict)


def collate_function(section: Data) -> Callable[[list[Any]], Any] | None:
    return None if section.collate_fn is None else components.resolve(section.collate_fn, COLLATE)


def _leave_interrupts_to_the_trainer(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training process stops at the end of its step
    # and shuts its loader workers down itself; a worker dying on the spot would fail that step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_epoch(loader: DataLoader | StreamBatches, epoch: int, skip_batches: int = 0) -> None:
    """Set the data order, the augmentations' seed and the worker seeds of `epoch`, skipping
    batches already trained on (a stream: where its loaded state says)."""
    if isinstance(loader, StreamBatches):
        loader.start_epoch(epoch)
        return
    assert isinstance(loader.sampler, ResumableSampler) and loader.generator is not None
    loader.sampler.set_epoch(epoch, start=skip_batches * (loader.batch_size or 1))
    if isinstance(loader.dataset, Transformed):
        loader.dataset.epoch = epoch
    loader.generator.manual_seed((loader.sampler.seed * 100_003 + epoch) * 1_009 + loader.sampler.rank)


class ShardSampler(torch.utils.data.Sampler[int]):
    """Every `world_size`-th index from `rank`: each sample on exactly one rank, none repeated.

    DistributedSampler pads the last round by repeating samples, which would count them twice
    in the validation metrics.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int) -> None:
        self.indices = range(rank, num_samples(dataset), world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(
    dataset: Dataset, section: Data, *, batch_size: int, pin: bool, rank: int = 0, world_size: int = 1
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        # A stream shares itself out among the ranks (data.streaming), each item to one reader.
        sampler=None if is_stream(dataset) else ShardSampler(dataset, rank, world_size),
        num_workers=section.num_workers,
        pin_memory=pin,
        persistent_workers=section.num_workers > 0,
        # Its own generator: an iterator draws a seed from it, and evaluating must not move the
        # global random state, or a run that evaluated more often would train differently.
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_leave_interrupts_to_the_trainer,
        multiprocessing_context=_LOADER_START if section.num_workers > 0 else None,
        collate_fn=collate_function(section),
    )


class StreamBatches:
    """A stream's batches on this rank, from torchdata's StatefulDataLoader, and its position.

    Why StatefulDataLoader: a stream's position lives in each loader worker's copy of the
    dataset, and the workers run ahead of training (prefetching). It snapshots every worker's
    dataset state with each batch the worker sends, and its state_dict is that of the batches
    the main process actually handed out, with the worker seeds; loading it restarts each worker
    where its last consumed batch left it. A plain DataLoader cannot say where its workers were.

    Each rank's stream may hold a different number of batches (items do not divide evenly over
    world_size x num_workers readers, and each worker ends with its own partial batch); a rank
    that trained on while another had stopped would wait forever in DDP's all-reduce. So before
    each batch the ranks agree that every one of them has one (one small all-reduce), and the
    epoch ends for all at the first batch one of them lacks: the longer streams' last batches
    are left out of that epoch.
    """

    def __init__(
        self, dataset: Dataset, section: Data, *, batch_size: int, drop_last: bool, seed: int, rank: int, pin: bool
    ) -> None:
        # torchdata only for streams: a map-style dataset keeps the plain DataLoader.
        from torchdata.stateful_dataloader import StatefulDataLoader

        self.dataset, self.seed, self.rank = dataset, seed, rank
        self.ended = False  # the epoch's stream ran out (on some rank): the epoch is over
        with warnings.catch_warnings():
            # torchdata 0.11 calls torch.set_vital, deprecated in torch 2.14 (a harmless warning on
            # every construction) and removed after it (pytorch/pytorch#178479, then an
            # AttributeError: pytorch/torchtitan#2735); torchdata's fix: meta-pytorch/data#1536.
            warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)
            self.loader: StatefulDataLoader = StatefulDataLoader(
                dataset,
                batch_size=batch_size,
                drop_last=drop_last,
                num_workers=section.num_workers,
                pin_memory=pin,
                persistent_workers=False,  # as train_loader's: each epoch's workers see its set_epoch
                generator=torch.Generator(),
                worker_init_fn=_leave_interrupts_to_the_trainer,
                multiprocessing_context=_LOADER_START if section.num_workers > 0 else None,
                collate_fn=collate_function(section),
            )

    def estimated_len(self) -> int | None:
        """Batches an epoch of this rank's stream should hold, from the stream's `len`; None
        where it has none. An estimate: the epoch ends where the first rank's stream does."""
        return None if stream_length(self.dataset) is None else len(self.loader)

    def start_epoch(self, epoch: int) -> None:
        """The stream's epoch (its `set_epoch`) and the workers' seeds, as a map-style loader's."""
        if callable(set_epoch := getattr(self.dataset, "set_epoch", None)):
            set_epoch(epoch)
        assert self.loader.generator is not None
        self.loader.generator.manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.rank)

    def __iter__(self) -> Iterator[Any]:
        self.ended = False
        batches = iter(self.loader)
        while True:
            batch = next(batches, _NONE)
            if not _every_rank_has_one(batch is not _NONE):
                self.ended = True
                return
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where this rank's stream is: after the last batch handed out."""
        return {"num_workers": self.loader.num_workers, "loader": self.loader.state_dict()}

    def resume(self, state: dict[str, Any] | None, batches_done: int, same_world_size: bool) -> str | None:
        """Go on from `state` (this rank's, saved `batches_done` batches into the epoch): the next
        iteration continues there. Where that cannot be done exactly, why not (the caller then
        starts the epoch again); None where it can."""
        name = type(self.dataset).__name__
        if not same_world_size:
            return f"the checkpoint is from another number of ranks, and {name}'s items are shared out by rank"
        if state is None:
            return "the checkpoint holds no stream position (it was saved by a run on a map-style dataset)"
        if state["num_workers"] != self.loader.num_workers:
            return (
                f"the checkpoint is from data.num_workers={state['num_workers']}, this run has "
                f"{self.loader.num_workers}, and {name}'s items are shared out by loader worker"
            )
        self.loader.load_state_dict(state["loader"])
        if not resumes_exactly(self.dataset):
            log.warning(
                "resuming mid-epoch on %s, which has no state_dict/load_state_dict: the loader re-reads and "
                "discards the %d batch(es) per rank this epoch has trained on; exact only if %s yields the same "
                "items in the same order every time (an unseeded shuffle would repeat some and skip others)",
                name, batches_done, name,
            )  # fmt: skip
        return None


_NONE = object()  # no batch: this rank's stream ran out


def _every_rank_has_one(have: bool) -> bool:
    if not is_distributed():
        return have
    # NCCL reduces on the GPU (the worker set its device), gloo on the CPU.
    device = torch.device("cuda") if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    lacking = all_reduce_sum(torch.tensor(0 if have else 1, device=device))
    return int(lacking.item()) == 0
