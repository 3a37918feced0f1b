"""A search's trial reporting to its study, and asking whether to go on.

`launch search` writes trial.json (TrialLink) into each trial's run folder: where the study's
journal is and which trial this run is. It travels with the run folder, which every rank, every
SLURM task and a resumed run already get, so the resolved recipe stays what the run trains (a
trial's recipe.yaml trains the same run with plain `launch`) and no environment variable has to
reach the workers. After each evaluation rank 0 reports the search's metric to the study (the
step is the epoch) and asks the study's pruner; where it says prune, rank 0 raises the run's
`pruned` stop reason, the ranks agree on it at their next check (training/stopping.py), the
checkpoint is written and the run ends with TrainingStopped(pruned). Optuna is imported only by
runs that have a trial.json, inside the functions (start-up).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from launcher.rundir import RunDir
from launcher.search.spec import PrunerName

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("launcher")

TRIAL_FILE = "trial.json"
PRUNED_FILE = "pruned.json"


class TrialLink(BaseModel):
    """trial.json: the study a run is a trial of."""

    journal: str  # the journal file's absolute path (a shared file system for SLURM tasks)
    study: str
    number: int  # the trial's number in the study
    metric: str  # what is reported: a tag of the run's evaluation (val/acc1)
    pruner: PrunerName

    def write(self, run: RunDir) -> None:
        (run.path / TRIAL_FILE).write_text(self.model_dump_json(indent=2) + "\n")


class PrunedAt(BaseModel):
    """pruned.json: where the pruner stopped the run; its status is then `pruned`."""

    epoch: int
    step: int
    metric: str
    value: float


def make_pruner(name: PrunerName) -> optuna.pruners.BasePruner:
    """asha: Optuna's SuccessiveHalvingPruner from the first epoch on (its min_resource 'auto' waits
    for a finished trial, which a short search may not have); median: MedianPruner; none: NopPruner."""
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    import optuna

    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "median":
        return optuna.pruners.MedianPruner()
    return optuna.pruners.NopPruner()


def open_journal(path: Path) -> optuna.storages.JournalStorage:
    """The study's storage: a journal file, which its processes share through file locks."""
    # start-up: optuna's import takes about 1 s: only for searches and their trials
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


class Pruning(Protocol):
    def should_stop(self, metrics: dict[str, float], epoch: int, step: int) -> bool:
        """After an evaluation: whether the run should stop here."""
        ...


class NoPruning:
    """Runs that are no trial, and the ranks other than 0."""

    def should_stop(self, metrics: dict[str, float], epoch: int, step: int) -> bool:
        return False


class TrialPruning:
    """Rank 0 of a trial: reports each evaluation to the study and asks its pruner."""

    def __init__(self, link: TrialLink, run: RunDir) -> None:
        # start-up: optuna's import takes about 1 s: only for searches and their trials
        import optuna

        self.link, self.run = link, run
        storage = open_journal(Path(link.journal))
        study = optuna.load_study(study_name=link.study, storage=storage, pruner=make_pruner(link.pruner))
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(link.study), link.number
        )
        # Trial(study, id) is how Optuna's own ask() makes the object; a process other than the one
        # that asked has no other way to report to a running trial and ask its pruner.
        self.trial = optuna.trial.Trial(study, trial_id)
        # A trial the study has closed (pruned, or failed) and that someone resumes with `launch
        # --resume` trains on as a plain run: Optuna refuses reports to a finished trial.
        self.closed = storage.get_trial(trial_id).state.is_finished()
        if self.closed:
            log.info("trial %d of %s is closed in its study: this run reports nothing to it", link.number, link.journal)

    def should_stop(self, metrics: dict[str, float], epoch: int, step: int) -> bool:
        value = metrics.get(self.link.metric)
        if value is None or self.closed:
            return False
        self.trial.report(value, step=epoch)  # an epoch reported before a resume is kept, not doubled
        if not self.trial.should_prune():
            return False
        log.info("trial %d pruned at epoch %d: %s %.4f", self.link.number, epoch, self.link.metric, value)
        pruned = PrunedAt(epoch=epoch, step=step, metric=self.link.metric, value=value)
        (self.run.path / PRUNED_FILE).write_text(pruned.model_dump_json(indent=2) + "\n")
        return True


def pruning_for(run: RunDir, is_main: bool) -> Pruning:
    """TrialPruning on rank 0 of a run with a trial.json; NoPruning elsewhere."""
    path = run.path / TRIAL_FILE
    if not is_main or not path.is_file():
        return NoPruning()
    return TrialPruning(TrialLink.model_validate(json.loads(path.read_text())), run)


def read_pruned(run: RunDir) -> PrunedAt | None:
    path = run.path / PRUNED_FILE
    return PrunedAt.model_validate(json.loads(path.read_text())) if path.is_file() else None
