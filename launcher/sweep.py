"""Hyperparameter sweeps: every combination of a grid of recipe values, each an ordinary run.

    launch sweep RECIPE optimizer.lr=0.1,0.03 train.batch_size=32,64 [--cpu | --nproc N | --slurm ... --parallel N]
    launch sweep SWEEP_FOLDER            # rewrite results.csv/json from what is on disk (and SLURM), print the table

The grid: the recipe's `sweep:` section ({optimizer.lr: [0.1, 0.03]}) and the overrides whose
value has a comma at its top level: `optimizer.lr=0.1,0.03` is two choices, while
`model.freeze=[a,b]` (a comma inside brackets, braces or quotes) is one value, as is anything
without a comma. The command line wins over the recipe's sweep for the same key, with one value
too (`optimizer.lr=0.05` fixes what the recipe sweeps; `sweep={}` drops the recipe's grid).
Every combination is validated before anything runs.

The sweep folder (a contract: `launcher.report` reads it):

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

import csv
import hashlib
import itertools
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from launcher import checkpoint
from launcher.errors import UserError
from launcher.recipe import (
    Problem,
    Recipe,
    RecipeError,
    SweepGrid,
    apply_override,
    did_you_mean,
    dump_recipe,
    load_recipe,
    parse_override,
    problems_from,
    read_yaml,
    sweep_key_problem,
)
from launcher.rundir import RunDir

log = logging.getLogger("launcher")

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")  # what a run folder's name may not hold (besides its own = and ,)
MAX_NAME = 120  # characters of a run folder's name, a hash included where it had to be cut
ERROR_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit)\b")
RUNS_NAMED = 3  # runs named in a problem that only some runs of a sweep have; the rest are counted


@dataclass(frozen=True)
class Run:
    """One combination of the grid: its folder's name and the values it sets."""

    name: str
    params: dict[str, Any]


@dataclass
class Sweep:
    folder: Path
    recipe: str  # the recipe's path, as given
    grid: dict[str, list[Any]]
    overrides: list[str]  # the overrides with one value, the same for every run
    metric: str
    mode: str  # "max" or "min"
    runs: list[Run]
    recipes: dict[str, Recipe] = field(default_factory=dict)  # by run name; empty for a sweep read back from its folder

    def run_dir(self, run: Run) -> RunDir:
        return RunDir(self.folder / run.name)

    def as_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "metric": self.metric, "mode": self.mode, "grid": self.grid, "overrides": self.overrides,
            "runs": [{"name": run.name, "params": run.params} for run in self.runs],
        }  # fmt: skip

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "sweep.json").write_text(json.dumps(self.as_json(), indent=2) + "\n")


# --- the grid -----------------------------------------------------------------------------------


def split_choices(text: str) -> list[str]:
    """An override's value cut at its top-level commas: those outside [], {} and quotes.
    `0.1,0.03` -> ['0.1', '0.03']; `[a,b]` -> ['[a,b]']; `[a,b],[c]` -> ['[a,b]', '[c]']."""
    parts, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def parse_command_line(overrides: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
    """The overrides of `launch sweep`: (the grid of those with several values, the others as given)."""
    grid: dict[str, list[Any]] = {}
    fixed: list[str] = []
    problems: list[Problem] = []
    for text in overrides:
        key, _, raw = text.partition("=")
        choices = split_choices(raw)
        if len(choices) == 1:
            parse_override(text)  # the key=value form and the YAML, checked now
            fixed.append(text)
            continue
        if any(not choice.strip() for choice in choices):
            problems.append(Problem(key, f"'{raw}' has an empty choice between its commas"))
            continue
        grid[key] = [parse_override(f"{key}={choice}")[1] for choice in choices]
    if problems:
        raise RecipeError("command line", problems)
    return grid, fixed


def merge_grids(
    from_recipe: dict[str, list[Any]], from_command_line: dict[str, list[Any]], fixed: list[str]
) -> dict[str, list[Any]]:
    """The recipe's grid with the command line's over it: its lists replace the recipe's for the
    same key (in the recipe's order; new keys after), and a key given one value leaves the grid."""
    fixed_keys = {text.partition("=")[0] for text in fixed}
    grid = {key: values for key, values in from_recipe.items() if key not in fixed_keys}
    grid.update(from_command_line)
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key by its last part, or by as many of its last parts as tell it from the others:
    optimizer.lr -> lr; data.transforms.train.0.size and data.transforms.val.0.size -> train.0.size, val.0.size."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(other == suffix or other.endswith(f".{suffix}") for other in keys) == 1:
                break
        short[key] = suffix
    return short


def value_text(value: Any) -> str:
    """A value as it appears in a run folder's name: filesystem-safe characters only."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"))  # true, null, [a,b] ...
    return UNSAFE.sub("_", text).strip("_") or "_"


def run_names(grid: dict[str, list[Any]], combos: list[dict[str, Any]]) -> list[str]:
    """Readable, unique, filesystem-safe folder names: `lr=0.1,batch_size=32`. A name cut to
    MAX_NAME characters, or one that two combinations would share, ends with a hash of its values."""
    short = short_keys(list(grid))
    names = [",".join(f"{short[key]}={value_text(value)}" for key, value in params.items()) for params in combos]
    for i, (name, params) in enumerate(zip(names, combos, strict=True)):
        if len(name) > MAX_NAME or names.count(name) > 1:
            names[i] = f"{name[: MAX_NAME - 9]}-{_digest(params)}"
    return names


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:8]


def sweep_id(recipe_path: str, grid: dict[str, list[Any]], overrides: list[str]) -> str:
    """The same for the same recipe file, grid and other overrides: the same command finds its folder again."""
    return _digest({"recipe": str(Path(recipe_path).resolve()), "grid": grid, "overrides": overrides})


# --- planning: every combination validated before anything runs -------------------------------------


def plan(
    recipe_path: str, overrides: Sequence[str], check: Callable[[dict[str, Any]], list[Problem]] | None = None,
    *, metric: str | None = None, mode: str | None = None, name: str | None = None,
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
    runs = [Run(run_name, params) for run_name, params in zip(run_names(grid, combos), combos, strict=True)]
    recipes = _validated_recipes(recipe_path, fixed, runs, check)
    first = recipes[runs[0].name]
    measured = ["val/loss", *(f"val/{m}" for m in first.eval.metrics)]
    metric = metric or ("val/acc1" if "val/acc1" in measured else "val/loss")
    if metric not in measured:
        raise UserError(
            f"--metric {metric}: not measured by this recipe (eval.metrics); choose one of {', '.join(measured)}{did_you_mean(metric, measured)}"
        )
    if name is not None and not SAFE_ID.fullmatch(name):
        raise UserError(f"--name {name}: use letters, digits and . _ + - (it names the folder sweep-{name})")
    folder = Path(first.run.output) / first.run.resolved_name / f"sweep-{name or sweep_id(recipe_path, grid, fixed)}"
    sweep = Sweep(folder, recipe_path, grid, fixed, metric, mode or default_mode(metric), runs, recipes)
    _refuse_another_sweep_in(sweep)
    return sweep


def _validated_recipes(
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
    order = list(Recipe.model_fields)  # section by section, as for one recipe
    return sorted(
        listed, key=lambda p: order.index(p.path.split(".")[0]) if p.path.split(".")[0] in order else len(order)
    )


def default_mode(metric: str) -> str:
    return "min" if "loss" in metric else "max"


def _refuse_another_sweep_in(sweep: Sweep) -> None:
    """`--name` may name a folder that holds another grid: its runs would not be this sweep's."""
    path = sweep.folder / "sweep.json"
    if not path.exists():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(sweep.as_json()))
    before["recipe"], now["recipe"] = (str(Path(d["recipe"]).resolve()) for d in (before, now))  # ./r.yaml is r.yaml
    differs = [key for key in ("recipe", "grid", "overrides") if before.get(key) != now[key]]
    if differs:
        raise UserError(
            f"{sweep.folder} holds another sweep (its {', '.join(differs)} differ: see its sweep.json); choose another --name"
        )


def load(folder: Path, metric: str | None = None, mode: str | None = None) -> Sweep:
    """The sweep in `folder`, from its sweep.json (`launch sweep SWEEP_FOLDER`)."""
    path = folder / "sweep.json"
    if not path.is_file():
        raise UserError(f"{folder}: no sweep.json here; give a sweep folder (<output>/<name>/sweep-<id>) or a recipe")
    data = json.loads(path.read_text())
    runs = [Run(run["name"], run["params"]) for run in data["runs"]]
    if metric is not None and metric != data["metric"]:
        recipes = [RunDir(folder / run.name).recipe for run in runs]
        evaluated = next((read_yaml(r).get("eval") or {} for r in recipes if r.exists()), {})
        measured = ["val/loss", *(f"val/{m}" for m in evaluated.get("metrics", ["acc1", "acc5"]))]
        if metric not in measured:
            raise UserError(
                f"--metric {metric}: not measured by this sweep's runs; choose one of {', '.join(measured)}{did_you_mean(metric, measured)}"
            )
    metric = metric or data["metric"]
    mode = mode or (data["mode"] if metric == data["metric"] else default_mode(metric))
    return Sweep(folder, data["recipe"], data["grid"], data.get("overrides", []), metric, mode, runs)


# --- running: here one after another, or as a SLURM job array -------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of a run that this command ran."""

    status: str  # running, finished, failed or stopped
    error: str | None = None


TrainOne = Callable[[Recipe, RunDir, "Path | None"], int]


def existing_runs(sweep: Sweep) -> list[tuple[Recipe, RunDir]]:
    """(this command's recipe, the run folder) of each run trained before: a finished run is
    skipped and an unfinished one resumed, so both must have trained what this recipe trains."""
    runs = [(sweep.recipes[run.name], sweep.run_dir(run)) for run in sweep.runs]
    return [(recipe, run) for recipe, run in runs if run.recipe.exists()]


def run_locally(sweep: Sweep, train_one: TrainOne) -> int:
    """Each run in turn with `train_one(recipe, run folder, checkpoint to resume from or None)`, the
    function `launch` trains with (returning 0, or the exit code of a stop signal). A run that fails
    is recorded and the next one starts; a stop signal stops the sweep. 0 if every run finished."""
    sweep.write()
    before = previous_rows(sweep)
    rows = {run.name: result_row(sweep, run, before=before.get(run.name)) for run in sweep.runs}
    code = 0
    try:
        for number, run in enumerate(sweep.runs, 1):
            folder, which = sweep.run_dir(run), f"[{number}/{len(sweep.runs)}] {run.name}"
            if folder.metrics.exists():
                log.info("%s: finished already (%s): skipped", which, folder.metrics)
                continue
            resume_from = checkpoint.latest(folder.checkpoints)
            log.info("%s: %s", which, f"resuming from {resume_from}" if resume_from else "starting")
            folder.path.mkdir(parents=True, exist_ok=True)
            rows[run.name] = result_row(sweep, run, Outcome("running"))
            write_results(sweep, list(rows.values()))
            try:
                outcome, code = _train_one(train_one, sweep.recipes[run.name], folder, resume_from)
            except BaseException:  # Ctrl-C, SIGTERM: the sweep stops, the rows say where
                rows[run.name] = result_row(
                    sweep, run, Outcome("stopped", "interrupted; it resumes from its checkpoint")
                )
                raise
            rows[run.name] = result_row(sweep, run, outcome)
            log.info("%s: %s%s", which, outcome.status, f": {outcome.error}" if outcome.error else "")
            if code:
                log.error("the sweep stopped; run the same command again to go on where it stopped")
                break
    finally:
        results = write_results(sweep, [rows[run.name] for run in sweep.runs])
    print_table(sweep, results)
    return code or (1 if any(row["status"] != "finished" for row in results) else 0)


def _train_one(train_one: TrainOne, recipe: Recipe, folder: RunDir, resume_from: Path | None) -> tuple[Outcome, int]:
    """Train one run; its failure is an Outcome, not the sweep's end. The run's log.txt gets the
    error; the sweep's messages go back to the console alone afterwards."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from launcher import logs

    try:
        code = train_one(recipe, folder, resume_from)
    except SignalException:  # SIGTERM or Ctrl-C passed on to the workers: the sweep stops too
        raise
    except UserError as error:
        log.error("error: %s", error)
        return Outcome("failed", error_summary(error)), 0
    except Exception as error:
        log.exception("error: the run failed; the traceback follows")
        return Outcome("failed", error_summary(error)), 0
    finally:
        logs.setup_text_log(None, console=True)
    if code:
        return Outcome("stopped", f"stopped by a signal (exit code {code}); it resumes from its checkpoint"), code
    return Outcome("finished"), 0


def error_summary(error: Exception) -> str:
    """One line for results.csv: the message's first line, and the error a traceback ends with."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    first = lines[0] if isinstance(error, UserError) else f"{type(error).__name__}: {lines[0]}"
    raised = [line for line in lines[1:] if ERROR_LINE.match(line)]
    return f"{first.rstrip(':')}: {raised[-1]}" if raised else first


def submit(sweep: Sweep, parallel: int | None, wait: bool) -> int:
    """The runs not finished and not in the queue, as one SLURM job array (slurm.submit_array;
    each task resumes from its run's newest checkpoint); with `wait`, until every job has ended."""
    from launcher import slurm

    sweep.write()
    todo, created = [], []
    for run in sweep.runs:
        folder = sweep.run_dir(run)
        queued = None if folder.metrics.exists() else queued_job(folder)
        if folder.metrics.exists() or queued:
            log.info("%s: %s: skipped", run.name, f"in the queue as job {queued}" if queued else "finished already")
            continue
        if not folder.path.exists():
            created.append(folder.path)
        folder.path.mkdir(parents=True, exist_ok=True)
        if not folder.recipe.exists():
            header = f"# resolved from {sweep.recipe} (sweep {sweep.folder}); submit it again with: launch {folder.recipe} --slurm\n"
            dump_recipe(sweep.recipes[run.name], folder.recipe, header=header)
        todo.append((run, folder))
    job_ids = []
    if todo:
        try:
            job_ids = slurm.submit_array(
                [sweep.recipes[run.name] for run, _ in todo], [f for _, f in todo], sweep.folder / "slurm", parallel
            )
        except UserError:
            for path in created:  # SLURM refused: no run folders without jobs
                shutil.rmtree(path, ignore_errors=True)
            raise
        print(f"submitted {len(job_ids)} run(s) as one job array{f', at most {parallel} at once' if parallel else ''}:")
        for (run, _), job_id in zip(todo, job_ids, strict=True):
            print(f"  job {job_id}: {sweep.folder / run.name}")
    else:
        print("nothing to submit: every run has finished or is in the queue")
    print(f"job logs:    {sweep.folder / 'slurm'}/<job id>_<rank>_log.out  (launch status|logs|cancel JOB_ID)")
    if not wait:
        write_results(sweep, [result_row(sweep, run) for run in sweep.runs])
        print(f"results:     launch sweep {sweep.folder}  (rewrites results.csv/json and prints the table, any time)")
        print(f"TensorBoard: tensorboard --logdir {sweep.folder}")
        return 0
    for (run, _), job_id in zip(todo, job_ids, strict=True):
        state = slurm.wait_until_ended(job_id)
        log.info("job %s (%s) ended: %s", job_id, run.name, state["State"])
    return show_results(sweep)


def queued_job(folder: RunDir) -> str | None:
    """The id of the run's newest SLURM job if it is still pending or running, else None."""
    from launcher import slurm

    if not (folder.path / "slurm" / "job.json").exists():
        return None
    job_id = slurm.find_job(str(folder.path)).job_id
    return job_id if slurm.job_state(job_id)["State"] not in {*slurm.ENDED, "UNKNOWN"} else None


# --- results ----------------------------------------------------------------------------------------


def run_status(
    folder: RunDir, outcome: Outcome | None = None, before: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """(status, error) of a run: from its files, what this command saw, SLURM, or the results written before."""
    if folder.metrics.exists():
        return "finished", None
    if outcome is not None:
        return outcome.status, outcome.error
    if (folder.path / "slurm" / "job.json").exists():
        return _slurm_status(folder)
    if before and before.get("status") in ("failed", "stopped") and folder.path.is_dir():
        return before["status"], before.get("error")
    return ("unfinished", None) if folder.path.is_dir() else ("pending", None)


def _slurm_status(folder: RunDir) -> tuple[str, str | None]:
    from launcher import slurm

    try:
        job = slurm.find_job(str(folder.path))
        state = slurm.job_state(job.job_id)["State"]
    except UserError as error:
        return "unknown", str(error)
    if state == "PENDING":
        return "pending", None
    if state == "UNKNOWN":
        return "unknown", f"job {job.job_id}: SLURM's accounting does not know it"
    if state not in slurm.ENDED:
        return "running", None
    failures = slurm.failures(job)
    return "failed", f"job {job.job_id} {state}" + (f": {failures[0].splitlines()[-1].strip()}" if failures else "")


def result_row(
    sweep: Sweep, run: Run, outcome: Outcome | None = None, before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A run's row of results.csv/json: its values, status, final metrics (metrics.json), the best
    value of the sweep's metric and its step (from TensorBoard, so unfinished runs have one too)."""
    from launcher.logs import scalar_series

    folder = sweep.run_dir(run)
    status, error = run_status(folder, outcome, before)
    summary = json.loads(folder.metrics.read_text()) if folder.metrics.exists() else {}
    final = dict(summary.get("final") or {})
    epochs, steps = final.pop("epoch", None), final.pop("step", None)
    kept = summary.get("best") or {}
    if kept.get("metric") == sweep.metric and kept.get("value") is not None and _mode_of(folder) == sweep.mode:
        best_step, best = kept["step"], kept["value"]  # exact, where TensorBoard holds float32
    else:
        series = [
            point for point in scalar_series(folder.tensorboard(None)).get(sweep.metric, []) if math.isfinite(point[1])
        ]
        pick = max if sweep.mode == "max" else min
        best_step, best = pick(series, key=lambda point: point[1]) if series else (None, None)
    return {
        "rank": None, "run": run.name, "status": status, **run.params, **final, "epochs": epochs, "steps": steps,
        "best": best, "best_step": best_step, "wall_time_s": summary.get("wall_time_s"), "error": error, "folder": str(folder.path.resolve()),
    }  # fmt: skip


def _mode_of(folder: RunDir) -> str | None:
    """checkpoint.best.mode of the run's recipe.yaml: whether metrics.json's best is the sweep's."""
    best = (read_yaml(folder.recipe).get("checkpoint") or {}).get("best") if folder.recipe.exists() else None
    return best.get("mode") if isinstance(best, dict) else None


def ranked(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows best first by the sweep's final metric (setting each one's rank); those without a
    finite one after (a diverged run's NaN is not the best loss), in grid order."""

    def measured(row: dict[str, Any]) -> bool:
        return isinstance(row.get(sweep.metric), (int, float)) and math.isfinite(row[sweep.metric])

    best_first = sorted(filter(measured, rows), key=lambda row: row[sweep.metric], reverse=sweep.mode == "max")
    for rank, row in enumerate(best_first, 1):
        row["rank"] = rank
    return best_first + [row for row in rows if not measured(row)]


def write_results(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json and results.csv, the rows in grid order (with their rank); returns the rows."""
    ranked(sweep, rows)
    metrics = sorted({key for row in rows for key in row if "/" in key})
    columns = [
        "rank",
        "run",
        "status",
        *sweep.grid,
        *metrics,
        "epochs",
        "steps",
        "best",
        "best_step",
        "wall_time_s",
        "error",
        "folder",
    ]
    rows[:] = [{key: row.get(key) for key in columns} for row in rows]
    (sweep.folder / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (sweep.folder / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()}
            )
    return rows


def previous_rows(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """The rows of the results.json written before, by run name: the errors of runs that failed then."""
    path = sweep.folder / "results.json"
    return {row["run"]: row for row in json.loads(path.read_text())} if path.exists() else {}


def show_results(sweep: Sweep) -> int:
    """`launch sweep SWEEP_FOLDER`, and the end of `--slurm --wait`: rewrite the results from what
    is there now, print the table; 0 if every run finished."""
    sweep.write()  # its metric and mode: those of the results
    before = previous_rows(sweep)
    rows = write_results(sweep, [result_row(sweep, run, before=before.get(run.name)) for run in sweep.runs])
    print_table(sweep, rows)
    return 0 if all(row["status"] == "finished" for row in rows) else 1


def print_table(sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    """The runs best first by the sweep's metric, then where the results are and how to compare the curves."""
    counts = {
        status: sum(row["status"] == status for row in rows) for status in dict.fromkeys(row["status"] for row in rows)
    }
    print(f"\nsweep {sweep.folder}: {len(rows)} runs, " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"by {sweep.metric} ({sweep.mode}), best first:")
    metrics = [sweep.metric, *sorted({key for row in rows for key in row if "/" in key and key != sweep.metric})]
    header = ["#", "run", "status", *metrics, f"best {sweep.metric} (step)", "epochs", "time"]
    table = [header]
    for row in ranked(sweep, rows):
        best = f"{row['best']:.4f} ({row['best_step']})" if row["best"] is not None else "-"
        time_s = f"{row['wall_time_s']:.1f} s" if row["wall_time_s"] is not None else "-"
        table.append(
            [
                str(row["rank"] or "-"),
                row["run"],
                row["status"],
                *(_number(row.get(m)) for m in metrics),
                best,
                _number(row["epochs"]),
                time_s,
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in rows:
        if row["error"]:
            print(f"  {row['run']}: {row['status']}: {row['error']}")
    print(f"results:     {sweep.folder / 'results.csv'}, {sweep.folder / 'results.json'}")
    print(f"TensorBoard: tensorboard --logdir {sweep.folder}")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
