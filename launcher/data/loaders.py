"""Data loaders: each rank's share of an epoch, resumable mid-epoch, in the same order on any number of workers."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from launcher.config.schema import Data
from launcher.data.build import Transformed
from launcher.data.datasets import num_samples


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
) -> DataLoader:
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
    )


_LOADER_START = "fork" if sys.platform == "linux" else None


def _leave_interrupts_to_the_trainer(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training process stops at the end of its step
    # and shuts its loader workers down itself; a worker dying on the spot would fail that step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Set the data order, the augmentations' seed and the worker seeds of `epoch`, skipping
    batches already trained on."""
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
        sampler=ShardSampler(dataset, rank, world_size),
        num_workers=section.num_workers,
        pin_memory=pin,
        persistent_workers=section.num_workers > 0,
        # Its own generator: an iterator draws a seed from it, and evaluating must not move the
        # global random state, or a run that evaluated more often would train differently.
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_leave_interrupts_to_the_trainer,
        multiprocessing_context=_LOADER_START if section.num_workers > 0 else None,
    )
