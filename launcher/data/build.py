"""The recipe's `data:` section made into train and validation datasets, with their transforms."""

from __future__ import annotations

import contextlib
import random
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Subset

from launcher.config import components
from launcher.config.components import Kind, classes_in
from launcher.config.schema import Data
from launcher.data import text
from launcher.data.datasets import (
    DataError,
    DataInfo,
    csv_splits,
    diabetes_splits,
    digits_splits,
    image_folder_splits,
    num_samples,
)
from launcher.data.streaming import first_item, has_position, is_stream, reader_shard
from launcher.training.batches import first_tensor


class Transformed(Dataset):
    """Applies a transform to the input of each (input, target) pair of another dataset.

    The loaders fetch a batch at a time, with its random augmentations seeded from (seed, epoch,
    the batch's first index): a batch is augmented the same way in any loader worker or in none,
    in a resumed run as in an uninterrupted one. The caller's random state is left as it was.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any] | None, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0  # set by `start_epoch`

    def __len__(self) -> int:
        return num_samples(self.dataset)

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[index]
        if self.transform is None:
            return sample  # any structure: a pair, a dict, ...
        x, y = sample
        return self.transform(x), y

    def __getitems__(self, indices: list[int]) -> list[Any]:
        if not indices:
            return []
        with _seeded_randomness((self.seed * 1_000_003 + self.epoch) * 1_000_033 + indices[0]):
            return [self[index] for index in indices]


class TransformedStream(IterableDataset):
    """A stream (data.streaming) with a transform applied to the input of each (input, target)
    item. Random augmentations are seeded per item from (seed, epoch, reader, the item's place in
    the reader's share), as Transformed's per batch: a resumed stream is augmented as the
    uninterrupted one, whichever loader worker reads it."""

    def __init__(self, stream: Dataset, transform: Callable[[Any], Any], seed: int = 0) -> None:
        self.stream, self.transform, self.seed = stream, transform, seed
        self.epoch = 0  # set by `set_epoch`
        self._resume_at = self._read = 0  # items of this reader's share: to skip, read this pass

    def __len__(self) -> int:
        return len(self.stream)  # type: ignore[arg-type]  # a TypeError where the stream has no len

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(set_epoch := getattr(self.stream, "set_epoch", None)):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        start, self._resume_at = self._resume_at, 0
        self._read = start
        return self._transformed(iter(self.stream), reader_shard()[0])

    def _transformed(self, items: Iterator[Any], reader: int) -> Iterator[tuple[Any, Any]]:
        for raw, target in items:
            seed = ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + reader) * 1_000_037 + self._read
            with _seeded_randomness(seed):
                x = self.transform(raw)
            self._read += 1
            yield x, target


class PositionedTransformedStream(TransformedStream):
    """A TransformedStream of a stream with a position (state_dict, load_state_dict): its own
    position holds the stream's and the count that seeds the augmentations."""

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "read": self._read}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])  # type: ignore[attr-defined]
        self._resume_at = self._read = int(state["read"])


@contextlib.contextmanager
def _seeded_randomness(seed: int) -> Iterator[None]:
    """torch's CPU generator, Python's and NumPy's seeded for the block, then put back as they were."""
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    torch.random.default_generator.manual_seed(seed % 2**63)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    info: DataInfo


def build_transform(specs: Sequence[Any]) -> Callable[[Any], Any] | None:
    if not specs:
        return None
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    return torchvision.transforms.Compose([components.build(spec, TRANSFORM) for spec in specs])


def open_splits(section: Data, classes: bool | None = True) -> tuple[Dataset, Dataset | None]:
    """The dataset's own train and validation splits, or (train, None) where it has none.
    `classes`: the task wants class targets (else values), for a built-in dataset that reads
    either (`csv`: its last column; values for a user's task, None)."""
    spec = section.dataset
    factory = components.resolve(spec.name, DATASET)
    if spec.name in BUILTIN_DATASETS:
        reads_both = components.accepts(factory, "targets", by_name=True)
        told = {"targets": "classes" if classes else "values"} if reads_both else {}
        if given := sorted(set(spec.kwargs) & set(told)):
            raise DataError(
                f"data.dataset.{given[0]}: the launcher passes {given[0]}= itself, from the task (task: regression "
                "reads values, classification classes); leave it out of the recipe"
            )
        return components.call(factory, spec.name, DATASET, **spec.kwargs, **told)
    if components.accepts(factory, "train"):
        return _dataset(factory, spec, train=True), _dataset(factory, spec, train=False)
    if components.accepts(factory, "split"):
        return _dataset(factory, spec, split="train"), _dataset(factory, spec, split=section.val_split_name)
    return _dataset(factory, spec), None


def _dataset(factory: Any, spec: Any, **split: Any) -> Dataset:
    if given := sorted(set(spec.kwargs) & set(split)):
        raise DataError(
            f"data.dataset.{given[0]}: the launcher passes {given[0]}= itself, once for the training split and once "
            "for the validation split; leave it out of the recipe"
        )
    try:
        made = components.call(factory, spec.name, DATASET, **spec.kwargs, **split)
    except (urllib.error.URLError, RuntimeError) as error:
        # torchvision says "Error downloading ..." (after trying its mirrors) or "Dataset not found".
        text = str(getattr(error, "reason", error))
        if not isinstance(error, urllib.error.URLError) and not text.startswith(
            ("Error downloading", "Dataset not found")
        ):
            raise
        root = spec.kwargs.get("root", "?")
        if spec.kwargs.get("download"):
            raise DataError(
                f"data.dataset: could not download {spec.name} into {root} ({text.splitlines()[0]}). This machine "
                f"looks offline: download it once where there is a network and copy the folder to {root}."
            ) from None
        raise DataError(
            f"data.dataset: {spec.name} is not in {root}; set data.dataset.download=true to download it"
        ) from None
    return components.expect(made, DATASET, spec.name)


def build_datasets(section: Data, seed: int, classes: bool | None = True) -> Datasets:
    """Train and validation datasets with their transforms, and what the model needs to know.
    `classes`: the targets are class indices (else values: their count sizes the model's output);
    None: the classes where the data says them (a user's task decides what its targets are)."""
    train, val = open_splits(section, classes)
    if val is None and is_stream(train):
        raise DataError(
            f"data.dataset: {section.dataset.name} is a stream (an IterableDataset), of which no fraction can be held "
            "out: have it take train= (True, False) or split= (data.val_split_name) and give a validation stream"
        )
    if val is None:
        if num_samples(train) < MIN_SAMPLES_TO_HOLD_OUT:
            raise DataError(f"data.dataset: {num_samples(train)} sample(s): too few to hold out a validation set")
        train, val = held_out_split(train, section.val_fraction, seed)
    if (raw := first_item(train)) is None:
        raise DataError(f"data.dataset: {section.dataset.name}'s share of the stream for this process yields nothing")
    raw_input = inputs_of(raw)
    names = (section.classes or _classes_of(train) or _classes_of(val)) if classes is not False else []
    if names is None and classes is None:
        names = []  # a user's task, on data that names no classes
    if names is None:
        raise DataError("the dataset does not say its classes: set data.classes to the list of class names")
    train = _transformed(train, build_transform(section.transforms.train), seed)
    val = _transformed(val, build_transform(section.transforms.val), seed)
    # Each read below transforms the item again (random transforms draw from the seeded global
    # state, before the model is made): as many reads as ever, for the same model.
    first = first_item(train)
    x = inputs_of(first)
    for split, dataset in (("train", train), ("val", val)):
        if (item := first_item(dataset)) is None:
            continue  # a stream whose validation share on this process is empty
        sample = inputs_of(item)
        if not isinstance(sample, torch.Tensor):
            raise DataError(
                f"data.transforms.{split}: the samples come out as {type(sample).__name__}, not tensors; "
                "end the transforms with ToTensor (image datasets give PIL images)"
            )
    vocab_size = _attribute_of(train, "vocab_size")
    info = DataInfo(
        classes=[str(c) for c in names],
        input_shape=list(x.shape) if hasattr(x, "shape") else [],
        image_mode=raw_input.mode if isinstance(raw_input, Image.Image) else None,
        image_size=list(raw_input.size) if isinstance(raw_input, Image.Image) else None,
        num_outputs=None if names else vocab_size or _target_size(first),
        vocab_size=vocab_size,
        tokenizer=_attribute_of(train, "tokenizer"),
    )
    return Datasets(train, val, info)


def _transformed(dataset: Dataset, transform: Callable[[Any], Any] | None, seed: int) -> Dataset:
    if not is_stream(dataset):
        return Transformed(dataset, transform, seed)
    if transform is None:
        return dataset  # as it is: its own position and length, if it has them
    return (PositionedTransformedStream if has_position(dataset) else TransformedStream)(dataset, transform, seed)


def held_out_split(dataset: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A seeded split: the same seed gives the same validation samples on every machine."""
    n = num_samples(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(n * fraction))
    return Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])


def inputs_of(sample: Any) -> Any:
    """A sample's input: the first of an (input, target) pair, else its first tensor (a dict's, ...)."""
    if isinstance(sample, tuple | list) and sample:
        return sample[0]
    return first_tensor(sample)


def _target_size(sample: Any) -> int:
    """Values per target, where a sample is an (input, target) pair; 1 otherwise (a user's task decides)."""
    return torch.as_tensor(sample[1]).numel() if isinstance(sample, tuple | list) and len(sample) > 1 else 1


def _unwrapped(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset | Transformed):
        dataset = dataset.dataset
    return dataset


def _attribute_of(dataset: Dataset, name: str) -> Any:
    return getattr(_unwrapped(dataset), name, None)


def _classes_of(dataset: Dataset) -> list[str] | None:
    dataset = _unwrapped(dataset)
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(c) for c in classes]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [str(i) for i in range(int(max(int(t) for t in targets)) + 1)]
    return None


# Workers started by the elastic agent inherit its start method ("spawn", or "forkserver"): their
# loader workers would then start a fresh Python and import torch every epoch (seen: 10 s an epoch
# instead of 0.6 s for digits on 2 workers). On Linux, fork them, as a torchrun script's loaders do.
MIN_SAMPLES_TO_HOLD_OUT = 2  # one to train on, one to validate


def _datasets() -> dict[str, Any]:
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    import torchvision

    return {**classes_in(torchvision.datasets, torch.utils.data.Dataset), **BUILTIN_DATASETS}


def _transforms() -> dict[str, Any]:
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
    from torchvision import transforms

    return {name: value for name, value in vars(transforms).items() if isinstance(value, type) and name[0].isupper()}


# Built-in names map to functions returning (train, validation or None).
BUILTIN_DATASETS: dict[str, Callable[..., tuple[Dataset, Dataset | None]]] = {
    "digits": digits_splits,
    "diabetes": diabetes_splits,
    "csv": csv_splits,
    "ImageFolder": image_folder_splits,
    "python_source": text.python_source,
    "text": text.text,
}


DATASET = Kind(
    "dataset",
    "torchvision.datasets",
    torch.utils.data.Dataset,
    _datasets,
    frozenset({"train", "split"}),
    lambda: BUILTIN_DATASETS,
)


TRANSFORM = Kind("transform", "torchvision.transforms", None, _transforms)
