"""Streams: iterable datasets, read by every rank's loader workers, each sample by exactly one.

A stream is a `torch.utils.data.IterableDataset`. Each rank's loader starts `data.num_workers`
workers (or reads in the training process itself where that is 0), and each of them iterates its
own copy of the dataset: a stream that does not share itself out is read world_size x
num_workers times. The contract, for a stream the launcher trains or evaluates on:

- **Each reader yields its own share.** Reader `index` of `count` (`reader_shard()`:
  rank x num_workers + loader worker id, of world_size x num_workers) yields every count-th
  item from its index, or any other split in which every item falls to exactly one reader.
  Subclass `ShardedIterable` (write `items()`, the whole stream) or wrap the items in `shard()`.
- **`__iter__` starts a pass afresh each call** and is deterministic for an epoch (seed any
  shuffling from `set_epoch`'s epoch, not from a global random state): the launcher reads the
  first item once at set-up to size the model, and a resumed run must see what the
  uninterrupted one would have.
- **A resumable position, for an exact mid-epoch resume:** `state_dict()` and
  `load_state_dict(state)` on the dataset (per reader: each worker's copy is saved), holding
  plain Python values (checkpoints load with `weights_only`). `ShardedIterable` has them.
  Without them, a resumed run re-reads the batches already trained on and discards them, which
  is exact only if the stream yields the same items in the same order every time.
- `set_epoch(epoch)`, where the dataset has it, is called before each epoch. `__len__`, where
  it has one (items per rank), sizes the epoch ahead; without it, `train.max_steps` is needed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from launcher.data.datasets import num_samples

T = TypeVar("T")


def is_stream(dataset: object) -> bool:
    return isinstance(dataset, IterableDataset)


def reader_shard() -> tuple[int, int]:
    """(index, count): this reader's place among all the readers of a stream, every rank's loader
    workers (or the rank itself where it reads without workers), in rank then worker order."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:  # a worker started by "spawn" has no process group, but the agent's environment
        rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers


def shard(items: Iterable[T]) -> Iterator[T]:
    """This reader's share of `items` (every item in the same order on every reader): every
    count-th item from its index. For a stream's `__iter__`: `return shard(self.read())`."""
    index, count = reader_shard()
    return itertools.islice(items, index, None, count)


class ShardedIterable(IterableDataset):
    """A stream to subclass: write `items()`, the whole stream in the same order on every reader;
    iterating yields this reader's share (`shard`), and remembers how far it got.

    `state_dict` holds the number of items this reader has yielded this pass, so a resumed pass
    skips them inside `items()` (read, not loaded into batches again): exact where `items()`
    gives the same sequence again for the same `self.epoch` (set before each epoch).
    """

    epoch = 0  # the epoch being read, set by the launcher before each
    _resume_at = 0  # items of this reader's share to skip on the next pass (load_state_dict)
    _yielded = 0  # items of this reader's share the current pass has yielded

    def items(self) -> Iterable[Any]:
        """Every item of the stream for `self.epoch`, in the same order on every reader."""
        raise NotImplementedError(f"{type(self).__name__} must define items(): the whole stream")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        # The position is set here, not in the generator: the loader saves a worker's state as
        # soon as it has made the iterator, before the first item is asked for.
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        index, count = reader_shard()
        return self._counted(itertools.islice(self.items(), index + start * count, None, count))

    def _counted(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self._yielded += 1
            yield item

    def state_dict(self) -> dict[str, Any]:
        return {"yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_at = self._yielded = int(state["yielded"])


def has_position(dataset: object) -> bool:
    """The object saves and restores its position (torchdata's `Stateful`)."""
    return callable(getattr(dataset, "state_dict", None)) and callable(getattr(dataset, "load_state_dict", None))


def resumes_exactly(dataset: Dataset) -> bool:
    """A loader can put the stream back where it was without re-reading: the dataset, or the
    iterator it makes, has a position (the iterator is made and dropped: a generator's body does
    not run until asked for an item)."""
    if has_position(dataset):
        return True
    iterator = iter(dataset)
    try:
        return has_position(iterator)
    finally:
        getattr(iterator, "close", lambda: None)()


def first_item(dataset: Any) -> Any:
    """The first item of a stream as this process would read it without workers (None where its
    share is empty), its position left as it was; any other dataset's item 0."""
    if not is_stream(dataset):
        return dataset[0]
    state = dataset.state_dict() if has_position(dataset) else None
    iterator = iter(dataset)
    try:
        return next(iterator, None)
    finally:
        getattr(iterator, "close", lambda: None)()
        if state is not None:
            dataset.load_state_dict(state)


def sample_count(dataset: Dataset) -> int | str:
    """A dataset's samples, for people: "streamed" for a stream (not known ahead)."""
    return "streamed" if is_stream(dataset) else num_samples(dataset)


def stream_length(dataset: Dataset) -> int | None:
    """A stream's `len` (its items on this rank), or None where it has none."""
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
