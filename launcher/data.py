"""Datasets, transforms, the train/validation split and the loaders, from the recipe's `data` section."""

from __future__ import annotations

import contextlib
import csv
import random
import signal
import sys
import urllib.error
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from launcher import components
from launcher.errors import UserError
from launcher.recipe import Data


class DataError(UserError):
    """The data is not what the recipe says: a missing folder, a malformed table."""


class Digits(Dataset):
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes) as PIL images.

    Real data that ships with a package: the offline default. Images are 8-bit grayscale, so the
    same torchvision transforms and `launch predict` on PNG files work as for MNIST.
    """

    classes = [str(d) for d in range(10)]

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = [int(t) for t in digits.target]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L"), self.targets[index]


class CsvTable(Dataset):
    """A CSV table of numbers whose last column is the target. A header row is detected and skipped.

    Targets may be words or integers; `classes` lists them sorted, and the target is the index.
    Give `classes` to keep one numbering across several files (the validation file uses the
    training file's).
    """

    def __init__(self, path: str, classes: Sequence[str] | None = None) -> None:
        rows = self._read(Path(path))
        labels = [row[-1] for row in rows]
        self.classes = list(classes) if classes is not None else sorted(set(labels), key=_number_first)
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{path}: targets {unknown[:5]} are not among the classes {self.classes[:10]}")
        self.features = torch.tensor([[float(v) for v in row[:-1]] for row in rows], dtype=torch.float32)
        self.targets = [index[label] for label in labels]

    @staticmethod
    def _read(path: Path) -> list[list[str]]:
        try:
            with path.open(newline="") as file:
                numbered = [
                    (line, [cell.strip() for cell in row]) for line, row in enumerate(csv.reader(file), start=1) if row
                ]
        except OSError as error:
            raise DataError(f"data.dataset: cannot read the table {path}: {error.strerror}") from None
        if numbered and not _is_number(numbered[0][1][0]):
            numbered = numbered[1:]  # a header row
        if not numbered:
            raise DataError(f"{path}: no data rows")
        width = len(numbered[0][1])
        for line, row in numbered:
            if len(row) != width or not all(_is_number(v) for v in row[:-1]):
                raise DataError(f"{path}: line {line} is not {width - 1} numbers and a target: {row}")
        return [row for _, row in numbered]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], self.targets[index]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_first(label: str) -> tuple[int, float, str]:
    return (0, float(label), "") if _is_number(label) else (1, 0.0, label)


def csv_splits(path: str, val_path: str | None = None) -> tuple[Dataset, Dataset | None]:
    """`csv`: `path` to train on; `val_path` (optional) to validate on, else a held-out fraction."""
    train = CsvTable(path)
    return train, CsvTable(val_path, classes=train.classes) if val_path else None


def image_folder_splits(root: str, val_root: str | None = None) -> tuple[Dataset, Dataset | None]:
    """`ImageFolder`: `root/<class>/<image>`. Validation from `val_root`, else from `root/train`
    and `root/val` where both exist, else a held-out fraction of `root`."""
    import torchvision

    folder = torchvision.datasets.ImageFolder
    base = Path(root)
    if val_root is None and (base / "train").is_dir() and (base / "val").is_dir():
        root, val_root = str(base / "train"), str(base / "val")
    if not Path(root).is_dir():
        raise DataError(f"data.dataset.root: {root} is not a folder (ImageFolder wants root/<class>/<image>)")
    train = folder(root)
    return train, _same_classes(folder(val_root), train) if val_root else None


def _same_classes(val: Any, train: Any) -> Any:
    """Number the validation classes as the training ones: a class missing from val/ must not shift the labels."""
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown:
        raise DataError(f"ImageFolder: validation classes {unknown} are not among the training classes {train.classes}")
    renumber = {index: train.class_to_idx[name] for name, index in val.class_to_idx.items()}
    val.samples = [(path, renumber[target]) for path, target in val.samples]
    val.imgs, val.targets = val.samples, [target for _, target in val.samples]
    val.classes, val.class_to_idx = train.classes, train.class_to_idx
    return val


def digits_splits() -> tuple[Dataset, None]:
    """`digits`: no split of its own; validation is a seeded held-out fraction."""
    return Digits(), None


# Built-in names map to functions returning (train, validation or None).
BUILTIN_DATASETS: dict[str, Callable[..., tuple[Dataset, Dataset | None]]] = {
    "digits": digits_splits,
    "csv": csv_splits,
    "ImageFolder": image_folder_splits,
}


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

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.dataset[index]
        return (self.transform(x) if self.transform else x), y

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        if not indices:
            return []
        with _seeded_randomness((self.seed * 1_000_003 + self.epoch) * 1_000_033 + indices[0]):
            return [self[index] for index in indices]


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
class DataInfo:
    """What the model and `launch predict` need to know about the data; plain, so it goes into checkpoints."""

    classes: list[str]
    input_shape: list[int]
    image_mode: str | None  # 'L', 'RGB'... for image datasets, None for tables and tensors
    image_size: list[int] | None  # [width, height] of the raw images, for `launch predict`

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def num_samples(dataset: Dataset) -> int:
    """The length of a dataset the launcher trains on: map-style, so it has one (torch's
    Dataset type does not say so)."""
    return len(cast(Sized, dataset))


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    info: DataInfo


def build_transform(specs: Sequence[Any]) -> Callable[[Any], Any] | None:
    if not specs:
        return None
    import torchvision

    return torchvision.transforms.Compose([components.build(spec, components.TRANSFORM) for spec in specs])


def open_splits(section: Data) -> tuple[Dataset, Dataset | None]:
    """The dataset's own train and validation splits, or (train, None) where it has none."""
    spec = section.dataset
    factory = components.resolve(spec.name, components.DATASET)
    if spec.name in BUILTIN_DATASETS:
        return components.call(factory, spec.name, components.DATASET, **spec.kwargs)
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
        made = components.call(factory, spec.name, components.DATASET, **spec.kwargs, **split)
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
    return components.expect(made, components.DATASET, spec.name)


def build_datasets(section: Data, seed: int) -> Datasets:
    """Train and validation datasets with their transforms, and what the model needs to know."""
    train, val = open_splits(section)
    if val is None:
        if num_samples(train) < MIN_SAMPLES_TO_HOLD_OUT:
            raise DataError(f"data.dataset: {num_samples(train)} sample(s): too few to hold out a validation set")
        train, val = held_out_split(train, section.val_fraction, seed)
    raw_input = train[0][0]
    classes = section.classes or _classes_of(train) or _classes_of(val)
    if classes is None:
        raise DataError("the dataset does not say its classes: set data.classes to the list of class names")
    train = Transformed(train, build_transform(section.transforms.train), seed)
    val = Transformed(val, build_transform(section.transforms.val), seed)
    x = train[0][0]
    for split, dataset in (("train", train), ("val", val)):
        sample = dataset[0][0]
        if not isinstance(sample, torch.Tensor):
            raise DataError(
                f"data.transforms.{split}: the samples come out as {type(sample).__name__}, not tensors; "
                "end the transforms with ToTensor (image datasets give PIL images)"
            )
    info = DataInfo(
        classes=[str(c) for c in classes],
        input_shape=list(x.shape) if hasattr(x, "shape") else [],
        image_mode=raw_input.mode if isinstance(raw_input, Image.Image) else None,
        image_size=list(raw_input.size) if isinstance(raw_input, Image.Image) else None,
    )
    return Datasets(train, val, info)


def held_out_split(dataset: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A seeded split: the same seed gives the same validation samples on every machine."""
    n = num_samples(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(n * fraction))
    return Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])


def _classes_of(dataset: Dataset) -> list[str] | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(c) for c in classes]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [str(i) for i in range(int(max(int(t) for t in targets)) + 1)]
    return None


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


# Workers started by the elastic agent inherit its "spawn": their loader workers would then start
# a fresh Python and import torch every epoch (seen: 10 s an epoch instead of 0.6 s for digits on
# 2 workers). On Linux, fork them, as a torchrun script's loaders do.
MIN_SAMPLES_TO_HOLD_OUT = 2  # one to train on, one to validate
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
