"""Hyperparameter search with Optuna: trials sampled from a space, each an ordinary run, pruned early
where the pruner says.

    launch search RECIPE optimizer.lr=loguniform:1e-4:1e-1 train.batch_size=choice:32,64 --trials 20
        [--sampler tpe|random] [--pruner asha|median|none] [--metric M --mode max|min]
        [--cpu | --nproc N | --slurm ... --parallel N]
    launch search SEARCH_FOLDER [--trials N] [--cpu | ...]     # go on with the search of that folder

The space: the overrides whose value starts with a kind (launcher/search/space.py); the other
overrides are the same for every trial. Every corner of the space is validated against the recipe,
as a sweep's runs are, before anything runs.

The search folder (sweep.json, results.csv/json and the trial folders as a sweep's, so that
`launch report` and `launch sweep SEARCH_FOLDER` read it as one):

    <run.output>/<run.name>/search-<id>/    id: a hash of the recipe's path, the space, the other overrides, sampler, pruner, metric
      search.json     SearchFile (search/spec.py): what `launch search SEARCH_FOLDER` goes on with
      journal.log     Optuna's study (JournalFileBackend: file locks, so SLURM tasks share it)
      sweep.json      the trials so far as a sweep's runs: {"name": "trial-0003", "params": {...}}
      results.csv     one row per trial (results.json: the same rows)
      importance.json each key's importance (search/spec.py ImportanceFile)
      trial-0000/     one run folder per trial, with trial.json (training/pruning.py)
      slurm/          with --slurm: the job arrays' files and one log per task
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.config.loading import load_recipe
from launcher.config.problems import Problem, RecipeError
from launcher.config.schema import Recipe, sweep_key_problem
from launcher.errors import UserError
from launcher.search.space import Dimension, parse_dimension, parse_space, probes
from launcher.search.spec import PrunerName, SamplerName, SearchFile
from launcher.sweep.planning import chosen_metric, results_folder, validated_recipes
from launcher.sweep.spec import Mode, Run

Check = Callable[[dict[str, Any]], list[Problem]]


@dataclass
class Search:
    folder: Path
    spec: SearchFile
    space: dict[str, Dimension]
    check: Check | None = None

    @property
    def journal(self) -> Path:
        return self.folder / "journal.log"

    def recipe(self, params: dict[str, Any]) -> Recipe:
        """The recipe of the trial with these values (validated: the space's corners were)."""
        given = [f"{key}={json.dumps(value)}" for key, value in params.items()]
        return load_recipe(self.spec.recipe, [*self.spec.overrides, *given, "sweep={}"], check=self.check)

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spec.write(self.folder / "search.json")


@dataclass(frozen=True)
class Options:
    """The command line's choices for a new search (--trials, --sampler, --pruner, --metric, --mode, --name)."""

    trials: int
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "asha"
    metric: str | None = None
    mode: Mode | None = None
    name: str | None = None


def plan(recipe_path: str, overrides: Sequence[str], options: Options, check: Check | None = None) -> Search:
    """The search that `launch search RECIPE overrides...` means; the recipe checked at every corner
    of the space (every problem raised at once, as a RecipeError)."""
    space, fixed = parse_space(overrides)
    if not space:
        raise UserError(
            f"{recipe_path}: nothing to search: give a key a range or choices (optimizer.lr=loguniform:1e-4:1e-1)"
        )
    if problems := [Problem(key, problem) for key in space if (problem := sweep_key_problem(key))]:
        raise RecipeError(recipe_path, problems)
    if options.trials < 1:
        raise UserError(f"--trials {options.trials}: give at least 1")
    corners = [Run(name=f"corner {i + 1}", params=params) for i, params in enumerate(probes(space))]
    first = validated_recipes(recipe_path, fixed, corners, check)[corners[0].name]
    metric, mode = chosen_metric(first, options.metric, options.mode)
    spec = SearchFile(
        recipe=recipe_path, metric=metric, mode=mode, space={key: d.text for key, d in space.items()}, overrides=fixed,
        sampler=options.sampler, pruner=options.pruner, trials=options.trials, seed=first.train.seed,
    )  # fmt: skip
    return Search(results_folder(first, "search", options.name or _search_id(spec)), spec, space, check)


def _search_id(spec: SearchFile) -> str:
    """The same for the same recipe, space, overrides, sampler, pruner and metric: the same
    command finds its folder again (with more --trials too)."""
    what = spec.model_dump(include={"space", "overrides", "sampler", "pruner", "metric", "mode"})
    what["recipe"] = str(Path(spec.recipe).resolve())
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]


def load(folder: Path, check: Check | None = None, trials: int | None = None) -> Search:
    """The search in `folder`, from its search.json (`launch search SEARCH_FOLDER`); `trials`: --trials, if given."""
    path = folder / "search.json"
    if not path.is_file():
        raise UserError(
            f"{folder}: no search.json here; give a search folder (<output>/<name>/search-<id>) or a recipe"
        )
    spec = SearchFile.read(path)
    if trials is not None:
        spec = spec.model_copy(update={"trials": trials})
    space = {}
    for key, text in spec.space.items():
        dimension = parse_dimension(key, text)
        if isinstance(dimension, str):
            raise UserError(f"{path}: space.{key}: {dimension}")
        space[key] = dimension
    return Search(folder, spec, space, check)
