"""The search's Optuna study in its journal file: opened, told what became of its trials, and its
importances. Optuna is imported inside the functions (start-up: about 1 s, for searches only)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

from launcher.rundir import RunDir
from launcher.search.planning import Search
from launcher.search.spec import ImportanceFile, SamplerName
from launcher.training.pruning import make_pruner, open_journal, read_pruned
from launcher.training.summary import read_summary

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("launcher")
# Fewer finished trials than this, and Optuna's evaluator warns that it gives every key the same share.
MIN_TRIALS_FOR_IMPORTANCE = 3


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def trial_folder(search: Search, number: int) -> RunDir:
    return RunDir(search.folder / trial_name(number))


def make_sampler(name: SamplerName, seed: int) -> optuna.samplers.BaseSampler:
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    import optuna

    return optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.RandomSampler(seed=seed)


def open_study(search: Search) -> optuna.Study:
    """The study of the search folder's journal, created the first time."""
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the launcher says what became of each trial
    spec = search.spec
    study = optuna.create_study(
        storage=open_journal(search.journal), study_name=spec.study, load_if_exists=True,
        direction="maximize" if spec.mode == "max" else "minimize", pruner=make_pruner(spec.pruner),
        sampler=make_sampler(spec.sampler, spec.seed),
    )  # fmt: skip
    if done := len(study.trials):
        # A search going on again would otherwise draw its first trials' values once more.
        study.sampler = make_sampler(spec.sampler, spec.seed + done)
    return study


def running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def settle(search: Search, study: optuna.Study) -> None:
    """Tell the study what became of each trial it holds RUNNING whose run has ended: pruned
    (pruned.json), finished (metrics.json: its final value of the search's metric, FAIL where it
    has none or not a finite one). The others stay RUNNING: unfinished, or in SLURM's queue."""
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    from optuna.trial import TrialState

    for trial in running(study):
        folder = trial_folder(search, trial.number)
        if (pruned := read_pruned(folder)) is not None:
            study.tell(trial.number, state=TrialState.PRUNED)
            log.info("trial %d: pruned at epoch %d (%s %.4f)", trial.number, pruned.epoch, pruned.metric, pruned.value)
        elif (summary := read_summary(folder.metrics)) is not None:
            value = summary.final.get(search.spec.metric)
            if value is None or not math.isfinite(value):
                study.tell(trial.number, state=TrialState.FAIL)
                log.info("trial %d: finished without a finite %s: failed", trial.number, search.spec.metric)
            else:
                study.tell(trial.number, float(value))
                log.info("trial %d: finished, %s %.4f", trial.number, search.spec.metric, value)


def fail(study: optuna.Study, number: int) -> None:
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    from optuna.trial import TrialState

    study.tell(number, state=TrialState.FAIL)


def ask(search: Search, study: optuna.Study) -> tuple[int, dict[str, Any]]:
    """A new trial: its number and values."""
    trial = study.ask({key: dimension.distribution() for key, dimension in search.space.items()})
    return trial.number, dict(trial.params)


def importance(search: Search, study: optuna.Study) -> ImportanceFile:
    """Each key's importance from the trials finished so far (written to importance.json)."""
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    import optuna
    from optuna.trial import TrialState

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if len(search.space) == 1:
        return ImportanceFile(trials=finished, importance=dict.fromkeys(search.space, 1.0), note="one key: all of it")
    if finished < MIN_TRIALS_FOR_IMPORTANCE:
        return ImportanceFile(
            trials=finished, note=f"not computed: {finished} finished trial(s), fewer than {MIN_TRIALS_FOR_IMPORTANCE}"
        )
    try:
        with warnings.catch_warnings():  # "too small to compute importances": then said in the note
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:  # e.g. every finished trial has the same values
        return ImportanceFile(trials=finished, note=f"not computed: {error}")
    return ImportanceFile(trials=finished, importance={key: float(value) for key, value in found.items()})
