"""sweep.json, a contract: what `launch sweep` plans, read back by `launch sweep SWEEP_FOLDER` and `launch report`.

    {"recipe", "metric", "mode", "grid", "overrides", "runs": [{"name", "params"}, ...]}

Only pydantic here (no torch, no recipe schema), so that `launch report` reads it cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from launcher.errors import UserError

Mode = Literal["min", "max"]  # whether the sweep's metric is better lower or higher


class Run(BaseModel):
    """One combination of the grid: its folder's name and the values it sets."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any]


class SweepFile(BaseModel):
    """sweep.json as `launch sweep` writes it; the fields in the order they are written."""

    recipe: str  # the recipe's path, as given
    metric: str
    mode: Mode
    grid: dict[str, list[Any]]
    # The overrides with one value, the same for every run (older sweep.json files lack them).
    overrides: list[str] = []
    runs: list[Run]

    def write(self, path: Path) -> None:
        # json.dumps of the Python form, not model_dump_json: the same text as before the model
        # (indent, key order, a value such as 1e-3 written as Python writes it).
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> SweepFile:
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValidationError as error:
            raise UserError(f"{path}: not a sweep.json as launch sweep writes it: {_first_problem(error)}") from None


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"{where}: {first['msg']}" if where else first["msg"]


class PlottedRun(BaseModel):
    """A run as `launch report` reads it: a name (its folder) and, if given, its values."""

    model_config = ConfigDict(coerce_numbers_to_str=True)  # "runs": [{"name": 1}] is the folder 1

    name: str
    params: dict[str, Any] = {}

    @field_validator("params", mode="before")
    @classmethod
    def _null_is_none_set(cls, value: Any) -> Any:
        return value or {}


class PlottedSweep(BaseModel):
    """What `launch report` needs of sweep.json: the runs, and the metric and mode to rank them by.
    A sweep.json made by hand may leave out the rest (SweepFile's), and the metric and mode too."""

    metric: str = "val/acc1"
    mode: Mode = "max"
    runs: list[PlottedRun] = []
