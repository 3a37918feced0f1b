"""search.json and importance.json, contracts: what `launch search` writes, read back by
`launch search SEARCH_FOLDER` and `launch report`. Only pydantic here (no torch, no Optuna)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from launcher.errors import UserError
from launcher.sweep.spec import Mode

SamplerName = Literal["tpe", "random"]
PrunerName = Literal["asha", "median", "none"]


class SearchFile(BaseModel):
    """search.json: what a search is, so that `launch search SEARCH_FOLDER` goes on with it."""

    recipe: str  # the recipe's path, as given
    metric: str
    mode: Mode
    space: dict[str, str]  # key: its dimension as given (loguniform:1e-4:1e-1)
    overrides: list[str]  # the same for every trial
    sampler: SamplerName
    pruner: PrunerName
    trials: int
    seed: int  # the sampler's (the recipe's train.seed)
    study: str = "search"

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> SearchFile:
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValidationError, ValueError) as error:
            raise UserError(f"{path}: not a search.json as launch search writes it: {error}") from None


class ImportanceFile(BaseModel):
    """importance.json: the importance of each key of the space (Optuna's default evaluator), from the
    trials finished so far; where it could not be computed (too few trials), why."""

    trials: int  # the finished trials it was computed from
    importance: dict[str, float] = {}  # key: its share, largest first
    note: str | None = None

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ImportanceFile | None:
        try:
            return cls.model_validate(json.loads(path.read_text())) if path.is_file() else None
        except (ValidationError, ValueError):
            return None
