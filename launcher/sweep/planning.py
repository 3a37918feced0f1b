"""Hyperparameter sweeps: every combination of a grid of recipe values, each an ordinary run.

    launch sweep RECIPE optimizer.lr=0.1,0.03 train.batch_size=32,64 [--cpu | --nproc N | --slurm ... --parallel N]
    launch sweep SWEEP_FOLDER            # rewrite results.csv/json from what is on disk (and SLURM), print the table

The grid: the recipe's `sweep:` section ({optimizer.lr: [0.1, 0.03]}) and the overrides whose
value has a comma at its top level: `optimizer.lr=0.1,0.03` is two choices, while
`model.freeze=[a,b]` (a comma inside brackets, braces or quotes) is one value, as is anything
without a comma. The command line wins over the recipe's sweep for the same key, with one value
too (`optimizer.lr=0.05` fixes what the recipe sweeps; `sweep={}` drops the recipe's grid).
Every combination is validated before anything runs.

The sweep folder (a contract: `launch report` reads it; sweep.json is the model sweep.spec.SweepFile):

    <run.output>/<run.name>/sweep-<id>/      id: a hash of the recipe file's path, the grid and the other overrides (or --name)
      sweep.json     {"recipe", "metric", "mode", "grid", "overrides", "runs": [{"name", "params"}, ...]}
      results.csv    one row per run (results.json: the same rows, a JSON list)
      <run name>/    one run folder per combination, named from its values: lr=0.1,batch_size=32
      slurm/         with --slurm: the job array's files and one log per task

A run's status: finished (it has metrics.json), failed, stopped (by a signal), running,
pending (not started, or queued), unfinished (started by an earlier command, neither finished
nor known to have failed), unknown (SLURM no longer knows its job). Rerunning the same command
skips the finished runs, resumes the others from their newest checkpoint (with --slurm: those
not in the queue) and starts the ones never started.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from launcher.config.components import use_import_paths
from launcher.config.loading import in_recipe_order, load_recipe, problems_from
from launcher.config.overrides import apply_override, parse_override
from launcher.config.problems import Problem, RecipeError, did_you_mean
from launcher.config.schema import Recipe, SweepGrid, default_mode, metric_names, metric_tag, sweep_key_problem
from launcher.config.yaml_io import read_yaml
from launcher.errors import UserError
from launcher.rundir import RunDir
from launcher.sweep.grid import SAFE_ID, combinations, merge_grids, parse_command_line, run_names, sweep_id
from launcher.sweep.spec import Mode, Run, SweepFile

RUNS_NAMED = 3  # runs named in a problem that only some runs of a sweep have; the rest are counted


@dataclass
class Sweep:
    folder: Path
    recipe: str  # the recipe's path, as given
    grid: dict[str, list[Any]]
    overrides: list[str]  # the overrides with one value, the same for every run
    metric: str
    mode: Mode
    runs: list[Run]
    recipes: dict[str, Recipe] = field(default_factory=dict)  # by run name; empty for a sweep read back from its folder

    def run_dir(self, run: Run) -> RunDir:
        return RunDir(self.folder / run.name)

    def spec(self) -> SweepFile:
        """What sweep.json holds."""
        return SweepFile(
            recipe=self.recipe,
            metric=self.metric,
            mode=self.mode,
            grid=self.grid,
            overrides=self.overrides,
            runs=self.runs,
        )

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spec().write(self.folder / "sweep.json")


def plan(
    recipe_path: str, overrides: Sequence[str], check: Callable[[dict[str, Any]], list[Problem]] | None = None,
    *, metric: str | None = None, mode: Mode | None = None, name: str | None = None,
) -> Sweep:  # fmt: skip
    """The sweep that `launch sweep RECIPE overrides...` means, each run's recipe validated (with
    `check`, as `launch` does); every problem of every combination raised together as a RecipeError."""
    from_command_line, fixed = parse_command_line(overrides)
    tree = read_yaml(Path(recipe_path))
    for text in fixed:
        apply_override(tree, *parse_override(text))
    try:
        from_recipe = TypeAdapter(SweepGrid).validate_python(tree.get("sweep") or {})
    except ValidationError as error:
        raise RecipeError(
            recipe_path, [Problem(f"sweep.{p.path}".rstrip("."), p.message) for p in problems_from(error)]
        ) from None
    grid = merge_grids(from_recipe, from_command_line, fixed)
    if not grid:
        raise UserError(
            f"{recipe_path}: nothing to sweep: give a key several values (optimizer.lr=0.1,0.01) or the recipe a sweep: section"
        )
    problems = [Problem(key, problem) for key in grid if (problem := sweep_key_problem(key))]
    problems += [
        Problem(key, f"{values!r}: a value comes twice")
        for key, values in grid.items()
        if len({json.dumps(v) for v in values}) < len(values)
    ]
    if problems:
        raise RecipeError(recipe_path, problems)

    combos = combinations(grid)
    runs = [Run(name=run_name, params=params) for run_name, params in zip(run_names(grid, combos), combos, strict=True)]
    recipes = validated_recipes(recipe_path, fixed, runs, check)
    first = recipes[runs[0].name]
    metric, mode = chosen_metric(first, metric, mode)
    folder = results_folder(first, "sweep", name or sweep_id(recipe_path, grid, fixed))
    sweep = Sweep(folder, recipe_path, grid, fixed, metric, mode, runs, recipes)
    _refuse_another_sweep_in(sweep)
    return sweep


def chosen_metric(recipe: Recipe, metric: str | None, mode: Mode | None) -> tuple[str, Mode]:
    """(--metric, --mode) where given, else val/acc1 if the recipe measures it (else val/loss) and
    the metric's own direction; a metric the recipe does not measure is refused."""
    measured = metric_names(recipe.eval.metrics or [])
    metric = metric or ("val/acc1" if "val/acc1" in measured else "val/loss")
    if metric not in measured:
        raise UserError(
            f"--metric {metric}: not measured by this recipe (eval.metrics); choose one of {', '.join(measured)}{did_you_mean(metric, measured)}"
        )
    return metric, mode or metric_mode(metric, recipe.eval.metrics or [])


def results_folder(recipe: Recipe, kind: str, name: str) -> Path:
    """<run.output>/<run.name>/<kind>-<name>: a sweep's or a search's folder; `name` from --name or a hash."""
    if not SAFE_ID.fullmatch(name):
        raise UserError(f"--name {name}: use letters, digits and . _ + - (it names the folder {kind}-{name})")
    return Path(recipe.run.output) / recipe.run.resolved_name / f"{kind}-{name}"


def validated_recipes(
    recipe_path: str, fixed: list[str], runs: list[Run], check: Callable[[dict[str, Any]], list[Problem]] | None
) -> dict[str, Recipe]:
    """Each run's recipe: the file, the fixed overrides, then the run's values; without a sweep
    section of its own, so that its recipe.yaml is one run. Every problem of every run raised at once."""
    recipes, found = {}, {}
    for run in runs:
        run_overrides = [*fixed, *(f"{key}={json.dumps(value)}" for key, value in run.params.items()), "sweep={}"]
        try:
            recipes[run.name] = recipe = load_recipe(recipe_path, run_overrides, check=check)
        except RecipeError as error:
            found[run.name] = error.problems
            continue
        if recipe.logging.tensorboard_dir is not None:
            found[run.name] = [
                Problem("logging.tensorboard_dir", "each run of a sweep logs into its own folder: leave it null")
            ]
    if found:
        raise RecipeError(recipe_path, _grouped(found, len(runs)))
    return recipes


def _grouped(found: dict[str, list[Problem]], total: int) -> list[Problem]:
    """Each problem once, saying which runs have it where not all do."""
    runs_with: dict[Problem, list[str]] = {}
    for run_name, problems in found.items():
        for problem in problems:
            runs_with.setdefault(problem, []).append(run_name)
    listed = []
    for problem, names in runs_with.items():
        if len(names) < total:
            shown = "; ".join(names[:RUNS_NAMED]) + (
                f" and {len(names) - RUNS_NAMED} more" if len(names) > RUNS_NAMED else ""
            )
            listed.append(Problem(problem.path, f"{problem.message} (in {len(names)} of the {total} runs: {shown})"))
        else:
            listed.append(problem)
    return in_recipe_order(listed)  # section by section, as for one recipe


def _refuse_another_sweep_in(sweep: Sweep) -> None:
    """`--name` may name a folder that holds another grid: its runs would not be this sweep's."""
    path = sweep.folder / "sweep.json"
    if not path.exists():
        return
    before = SweepFile.read(path)
    now = SweepFile.model_validate(json.loads(json.dumps(sweep.spec().model_dump())))  # as it would be read back
    differs = [
        key
        for key, (was, is_now) in {
            "recipe": (Path(before.recipe).resolve(), Path(now.recipe).resolve()),  # ./r.yaml is r.yaml
            "grid": (before.grid, now.grid),
            "overrides": (before.overrides, now.overrides),
        }.items()
        if was != is_now
    ]
    if differs:
        raise UserError(
            f"{sweep.folder} holds another sweep (its {', '.join(differs)} differ: see its sweep.json); choose another --name"
        )


def load(folder: Path, metric: str | None = None, mode: Mode | None = None) -> Sweep:
    """The sweep in `folder`, from its sweep.json (`launch sweep SWEEP_FOLDER`)."""
    path = folder / "sweep.json"
    if not path.is_file():
        raise UserError(f"{folder}: no sweep.json here; give a sweep folder (<output>/<name>/sweep-<id>) or a recipe")
    spec = SweepFile.read(path)
    if metric is None or metric == spec.metric:
        return Sweep(folder, spec.recipe, spec.grid, spec.overrides, spec.metric, mode or spec.mode, spec.runs)
    recipes = [RunDir(folder / run.name).recipe for run in spec.runs]
    tree = next((read_yaml(r) for r in recipes if r.exists()), {})
    names = (tree.get("eval") or {}).get("metrics", ["acc1", "acc5"])
    measured = metric_names(names)
    if metric not in measured:
        raise UserError(
            f"--metric {metric}: not measured by this sweep's runs; choose one of {', '.join(measured)}{did_you_mean(metric, measured)}"
        )
    use_import_paths((tree.get("run") or {}).get("import_paths") or [])
    return Sweep(folder, spec.recipe, spec.grid, spec.overrides, metric, mode or metric_mode(metric, names), spec.runs)


def metric_mode(metric: str, names: Sequence[str]) -> Mode:
    """The direction to rank runs by `metric` where --mode is not given: a `module:attr` metric of
    eval.metrics (`names`) by its own `higher_is_better`, as best.pt follows it; any other by its name."""
    user = next((name for name in names if ":" in name and metric_tag(name) == metric), None)
    if user is None:
        return default_mode(metric)
    # start-up: torchmetrics' import takes 1.3 to 3 s (and the user's module's): only for a
    # sweep ranked by a user's metric
    from launcher.training.metrics import user_metric

    return default_mode(metric, user_metric(user).higher_is_better)


def existing_runs(sweep: Sweep) -> list[tuple[Recipe, RunDir]]:
    """(this command's recipe, the run folder) of each run trained before: a finished run is
    skipped and an unfinished one resumed, so both must have trained what this recipe trains."""
    runs = [(sweep.recipes[run.name], sweep.run_dir(run)) for run in sweep.runs]
    return [(recipe, run) for recipe, run in runs if run.recipe.exists()]
