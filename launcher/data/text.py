"""Text for language models: bytes as tokens, packed into fixed blocks.

Byte-level: the vocabulary is the 256 byte values, so there is nothing to build, store or
download, every machine numbers tokens the same way, and `launch predict` can encode any prompt.
A corpus (documents joined by a blank line) is cut into non-overlapping blocks of `block_size`
inputs; each block's targets are its inputs shifted by one, so every byte after the first is a
target exactly once.

`python_source` is a real corpus on every machine with no download: the source of a fixed list of
modules of the running interpreter's standard library (a list, not "the first N files": versions
and distributions add and remove files, and a list of long-lived modules gives about 2 MB on
Python 3.9 to 3.13). Every tenth module is held out for validation: split by file, no leakage.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from launcher.data.datasets import DataError

log = logging.getLogger("launcher")

BYTES = 256  # the byte-level vocabulary
SEPARATOR = b"\n\n"

# Modules in the standard library from Python 3.9 to 3.13 (package ones by their __init__).
STDLIB_MODULES = [
    "abc",
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "inspect",
    "json/decoder",
    "json/encoder",
    "keyword",
    "locale",
    "logging",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "shlex",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "tokenize",
    "traceback",
    "typing",
    "weakref",
    "zipfile",
]
MIN_CORPUS_BYTES = 1_000_000


class TokenBlocks(Dataset):
    """A token stream cut into `(inputs, targets)` blocks of `block_size` tokens, targets shifted by one."""

    vocab_size = BYTES
    tokenizer = "bytes"

    def __init__(self, tokens: torch.Tensor, block_size: int, blocks: int | None = None) -> None:
        if block_size < 1:
            raise DataError(f"data.dataset.block_size: at least 1, got {block_size}")
        self.tokens, self.block_size = tokens, block_size
        count = (len(tokens) - 1) // block_size
        if count < 1:
            raise DataError(f"{len(tokens)} tokens: not one block of block_size={block_size} plus its target")
        # `blocks`: a fixed, evenly spread subset (a validation set that costs seconds, not minutes)
        self.starts = torch.linspace(0, count - 1, min(blocks or count, count)).long() * block_size

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(self.starts[index])
        block = self.tokens[start : start + self.block_size + 1].long()
        return block[:-1], block[1:]


def encode(text: str | bytes) -> torch.Tensor:
    """Byte-level token ids of `text` (UTF-8)."""
    data = text.encode() if isinstance(text, str) else text
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)


def decode(tokens: torch.Tensor) -> str:
    return bytes(tokens.tolist()).decode("utf-8", errors="replace")


def _stdlib_source(modules: Sequence[str]) -> list[tuple[str, bytes]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for module in modules:
        for path in (root / f"{module}.py", root / module / "__init__.py"):
            if path.is_file():
                found.append((module, path.read_bytes()))
                break
    return found


def python_source(
    block_size: int = 128, val_every: int = 10, val_blocks: int | None = 256
) -> tuple[TokenBlocks, TokenBlocks]:
    """`python_source`: the standard library's own source as a byte-level corpus; every
    `val_every`-th module validates (at most `val_blocks` blocks of it, spread evenly)."""
    files = _stdlib_source(STDLIB_MODULES)
    train = [data for i, (_, data) in enumerate(files) if i % val_every != val_every - 1]
    val = [data for i, (_, data) in enumerate(files) if i % val_every == val_every - 1]
    corpus = SEPARATOR.join(train)
    if len(corpus) < MIN_CORPUS_BYTES:
        raise DataError(
            f"python_source: found {len(files)} of {len(STDLIB_MODULES)} standard-library modules as source "
            f"({len(corpus):,} bytes) under {sysconfig.get_paths()['stdlib']}; an install without .py files "
            "cannot give this corpus: use data.dataset: {name: text, path: ...} with your own text"
        )
    log.info(
        "python_source: %d modules, %s training and %s validation bytes (sha256 %s)", len(files), f"{len(corpus):,}",
        f"{sum(map(len, val)):,}", hashlib.sha256(corpus).hexdigest()[:12],
    )  # fmt: skip
    return TokenBlocks(encode(corpus), block_size), TokenBlocks(encode(SEPARATOR.join(val)), block_size, val_blocks)


def text(
    path: str, val_path: str | None = None, block_size: int = 128, val_blocks: int | None = None
) -> tuple[TokenBlocks, TokenBlocks | None]:
    """`text`: a UTF-8 text file, or a folder of them (every `*.txt`, sorted), as a byte-level
    corpus; `val_path` the same for validation, else a held-out fraction of the blocks."""
    return TokenBlocks(encode(_read_text(path)), block_size), (
        TokenBlocks(encode(_read_text(val_path)), block_size, val_blocks) if val_path else None
    )


def _read_text(where: str) -> bytes:
    root = Path(where)
    paths = sorted(root.rglob("*.txt")) if root.is_dir() else [root]
    if not paths:
        raise DataError(f"data.dataset.path: no *.txt file under {root}")
    try:
        return SEPARATOR.join(p.read_bytes() for p in paths)
    except OSError as error:
        raise DataError(f"data.dataset.path: cannot read {error.filename}: {error.strerror}") from None
