"""The launcher's own datasets (digits, csv, ImageFolder splits) and what the model needs to know of a dataset."""

from __future__ import annotations

import csv
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from launcher.errors import UserError


class DataError(UserError):
    """The data is not what the recipe says: a missing folder, a malformed table."""


class Digits(Dataset):
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes) as PIL images.

    Real data that ships with a package: the offline default. Images are 8-bit grayscale, so the
    same torchvision transforms and `launch predict` on PNG files work as for MNIST.
    """

    classes = [str(d) for d in range(10)]

    def __init__(self) -> None:
        # scikit-learn (about 1 s) only for the digits dataset
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

    `targets="classes"` (classification): targets may be words or integers; `classes` lists them
    sorted, and the target is the index. Give `classes` to keep one numbering across several
    files (the validation file uses the training file's). `targets="values"` (regression): the
    target is a number, a float32 tensor of shape () per row.
    """

    def __init__(
        self, path: str, classes: Sequence[str] | None = None, targets: Literal["classes", "values"] = "classes"
    ) -> None:
        numbered = self._read(Path(path))
        self.features = torch.tensor([[float(v) for v in row[:-1]] for _, row in numbered], dtype=torch.float32)
        self.targets: list[int] | torch.Tensor
        if targets == "values":
            for line, row in numbered:
                if not _is_number(row[-1]):
                    raise DataError(
                        f"{path}: line {line}: the target {row[-1]!r} is not a number (task regression reads the "
                        "last column as a value; for classes, leave the task out or set task: classification)"
                    )
            self.classes: list[str] = []
            self.targets = torch.tensor([float(row[-1]) for _, row in numbered], dtype=torch.float32)
            return
        labels = [row[-1] for _, row in numbered]
        self.classes = list(classes) if classes is not None else sorted(set(labels), key=_number_first)
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{path}: targets {unknown[:5]} are not among the classes {self.classes[:10]}")
        self.targets = [index[label] for label in labels]

    @staticmethod
    def _read(path: Path) -> list[tuple[int, list[str]]]:
        """The data rows, each with its line number in the file."""
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
        return numbered

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return self.features[index], self.targets[index]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_first(label: str) -> tuple[int, float, str]:
    return (0, float(label), "") if _is_number(label) else (1, 0.0, label)


def csv_splits(
    path: str, val_path: str | None = None, targets: Literal["classes", "values"] = "classes"
) -> tuple[Dataset, Dataset | None]:
    """`csv`: `path` to train on; `val_path` (optional) to validate on, else a held-out fraction.
    `targets`: what the last column is, which the launcher passes from the task (CsvTable)."""
    train = CsvTable(path, targets=targets)
    return train, CsvTable(val_path, classes=train.classes, targets=targets) if val_path else None


def image_folder_splits(root: str, val_root: str | None = None) -> tuple[Dataset, Dataset | None]:
    """`ImageFolder`: `root/<class>/<image>`. Validation from `val_root`, else from `root/train`
    and `root/val` where both exist, else a held-out fraction of `root`."""
    # torchvision only where needed: its import takes seconds (torch._dynamo through torchvision.ops)
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


class Diabetes(Dataset):
    """scikit-learn's bundled diabetes data (442 patients, 10 standardized features; the target
    is a measure of disease progression a year later, 25 to 346): real regression data, offline."""

    def __init__(self) -> None:
        # scikit-learn (about 1 s) only for the diabetes dataset
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes()
        self.features = torch.as_tensor(bunch.data, dtype=torch.float32)
        self.targets = torch.as_tensor(bunch.target, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.targets[index]


def diabetes_splits() -> tuple[Dataset, None]:
    """`diabetes`: no split of its own; validation is a seeded held-out fraction."""
    return Diabetes(), None


@dataclass
class DataInfo:
    """What the model and `launch predict` need to know about the data; plain, so it goes into checkpoints."""

    classes: list[str]
    input_shape: list[int]
    image_mode: str | None  # 'L', 'RGB'... for image datasets, None for tables and tensors
    image_size: list[int] | None  # [width, height] of the raw images, for `launch predict`
    num_outputs: int | None = None  # values per target where the targets are not classes (regression)
    vocab_size: int | None = None  # token datasets: the ids run from 0 to vocab_size - 1
    tokenizer: str | None = None  # how `launch predict` turns a prompt into tokens: "bytes" (UTF-8), or none

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def outputs(self) -> int:
        """What the model's last layer gives: a score per class, or a value per target value."""
        return self.num_outputs if self.num_outputs is not None else self.num_classes


def num_samples(dataset: Dataset) -> int:
    """The length of a dataset the launcher trains on: map-style, so it has one (torch's
    Dataset type does not say so)."""
    return len(cast(Sized, dataset))
