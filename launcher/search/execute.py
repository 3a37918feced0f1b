"""Running a search's trials: one after another here, or in batches of SLURM job arrays; the
results as a sweep's (sweep/results.py), with each key's importance.

Ask and tell: the study (its journal) holds every trial asked so far. A trial's run folder is the
truth about its run: `settle` tells the study what became of the trials whose runs ended. A trial
the study still holds RUNNING when a command starts was left by one that was interrupted (or by a
SLURM job that is no longer in the queue): it runs again, under its number and with its values,
resuming from its run's newest checkpoint; a finished or pruned trial never runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from launcher import checkpoint
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.errors import UserError
from launcher.search import study as studies
from launcher.search.planning import Search
from launcher.slurm import status, submission
from launcher.sweep.execute import Outcome, TrainOne, queued_job, train_and_record
from launcher.sweep.planning import Sweep
from launcher.sweep.results import print_table, result_row, write_results
from launcher.sweep.spec import Run
from launcher.training.pruning import TrialLink

log = logging.getLogger("launcher")


def run_locally(search: Search, train_one: TrainOne) -> int:
    """Trials one after another with `train_one` (as sweep.execute.run_locally's runs), until the
    study holds --trials of them. 0 unless a signal stopped the search (its exit code)."""
    search.write()
    study = studies.open_study(search)
    left = [trial.number for trial in studies.running(study)]  # by an interrupted command: run again
    outcomes: dict[str, Outcome] = {}
    code = 0
    try:
        while not code:
            studies.settle(search, study)
            if left:
                number = left.pop(0)
                params = study.trials[number].params
            elif len(study.trials) < search.spec.trials:
                number, params = studies.ask(search, study)
            else:
                break
            outcomes[studies.trial_name(number)], code = _run_trial(search, study, number, params, train_one)
    finally:
        studies.settle(search, study)
        finish(search, study, outcomes)
    return code


def _run_trial(
    search: Search, study: Any, number: int, params: dict[str, Any], train_one: TrainOne
) -> tuple[Outcome, int]:
    folder = studies.trial_folder(search, number)
    resume_from = checkpoint.latest(folder.checkpoints)
    which = f"trial {number} [{len(study.trials)}/{search.spec.trials}] {params}"
    log.info("%s: %s", which, f"resuming from {resume_from}" if resume_from else "starting")
    try:
        recipe = prepare_trial(search, number, params)
    except UserError as error:
        studies.fail(study, number)
        return Outcome("failed", str(error).splitlines()[0]), 0
    outcome, code = train_and_record(train_one, recipe, folder, resume_from)
    if code:  # stopped by a signal: it stays RUNNING, and runs again from its checkpoint next time
        return outcome, code
    studies.settle(search, study)
    if study.trials[number].state.name == "RUNNING":  # failed, or it ended without metrics.json
        studies.fail(study, number)
        outcome = outcome if outcome.status == "failed" else Outcome("failed", "ended without metrics.json")
    return outcome, 0


def prepare_trial(search: Search, number: int, params: dict[str, Any]) -> Recipe:
    """The trial's recipe, and its run folder with trial.json, which links the run to the study."""
    recipe = search.recipe(params)
    folder = studies.trial_folder(search, number)
    folder.path.mkdir(parents=True, exist_ok=True)
    TrialLink(
        journal=str(search.journal.resolve()), study=search.spec.study, number=number, metric=search.spec.metric,
        pruner=search.spec.pruner,
    ).write(folder)  # fmt: skip
    return recipe


def submit_batches(search: Search, parallel: int, with_flags: Callable[[Recipe], Recipe]) -> int:
    """Trials as SLURM job arrays of `parallel` tasks: ask that many (and take those left RUNNING
    with no job in the queue), submit them, wait until their jobs end, tell the study, again,
    until the study holds --trials. The sampler learns from each batch before the next."""
    search.write()
    study = studies.open_study(search)
    while True:
        studies.settle(search, study)
        batch = [
            (trial.number, trial.params)
            for trial in studies.running(study)
            if not queued_job(studies.trial_folder(search, trial.number))
        ][:parallel]
        while len(batch) < parallel and len(study.trials) < search.spec.trials:
            batch.append(studies.ask(search, study))
        if not batch:
            break
        _submit_and_wait(search, study, batch, with_flags)
    finish(search, study, {})
    return 0


def _submit_and_wait(
    search: Search, study: Any, batch: list[tuple[int, dict[str, Any]]], with_flags: Callable[[Recipe], Recipe]
) -> None:
    recipes, folders = [], []
    for number, params in batch:
        recipe = with_flags(prepare_trial(search, number, params))
        folder = studies.trial_folder(search, number)
        if not folder.recipe.exists():
            dump_recipe(recipe, folder.recipe, header=f"# trial {number} of the search {search.folder}\n")
        recipes.append(recipe)
        folders.append(folder)
    job_ids = submission.submit_array(recipes, folders, search.folder / "slurm", len(batch))
    print(f"submitted trials {', '.join(str(number) for number, _ in batch)} as one job array: {', '.join(job_ids)}")
    for (number, _), job_id in zip(batch, job_ids, strict=True):
        state = status.wait_until_ended(job_id)
        log.info("job %s (trial %d) ended: %s", job_id, number, state["State"])
    studies.settle(search, study)
    for number, _ in batch:
        if study.trials[number].state.name == "RUNNING":  # its job ended without metrics.json or pruned.json
            studies.fail(study, number)


def as_sweep(search: Search, study: Any) -> Sweep:
    """The search as sweep/results.py reads a sweep: each trial a run, the space its grid."""
    runs = [Run(name=studies.trial_name(trial.number), params=trial.params) for trial in study.trials]
    grid: dict[str, list[Any]] = {key: [text] for key, text in search.spec.space.items()}
    return Sweep(
        search.folder, search.spec.recipe, grid, search.spec.overrides, search.spec.metric, search.spec.mode, runs
    )


def finish(search: Search, study: Any, outcomes: dict[str, Outcome]) -> None:
    """sweep.json, results.csv/json and importance.json as they are now; the table and the importances."""
    sweep = as_sweep(search, study)
    sweep.write()
    states = {studies.trial_name(trial.number): trial.state.name for trial in study.trials}
    rows = []
    for run in sweep.runs:
        failed = (
            Outcome("failed", "the study holds it as failed: see its log.txt") if states[run.name] == "FAIL" else None
        )
        rows.append(result_row(sweep, run, outcomes.get(run.name) or failed))
    print_table(sweep, write_results(sweep, rows), kind="search")
    importance = studies.importance(search, study)
    importance.write(search.folder / "importance.json")
    shares = ", ".join(f"{key} {share:.2f}" for key, share in importance.importance.items())
    print(
        f"importance:  {shares or importance.note} (from {importance.trials} finished trials; {search.folder / 'importance.json'})"
    )
    print(f"go on:       launch search {search.folder} [--trials N]")
