"""What a run folder records of its SLURM jobs (slurm/job.json, an array's runs.json), so that `launch status|logs|cancel` find them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from launcher.errors import UserError
from launcher.rundir import RunDir

COMMENT = "launcher:"  # the job's comment: "launcher:<run folder>"


ARRAY_INDEX = "runs.json"


Model = TypeVar("Model", bound=BaseModel)


class JobEntry(BaseModel):
    """One job of a run folder: slurm/job.json holds {"jobs": [entry, ...]}, one per submission."""

    # Keys written by anything else are kept when the file is written again.
    model_config = ConfigDict(extra="allow")

    job_id: str
    logs: Path  # the folder of one log per task: <job id>_<rank>_log.out
    tasks: int | None = None  # not in the records of runs submitted before it was recorded
    submitted: str  # when: %Y-%m-%dT%H:%M:%S
    log: Path | None = None  # the one log of all tasks (a job script's --output); absent otherwise


class JobRecord(BaseModel):
    """slurm/job.json."""

    model_config = ConfigDict(extra="allow")

    jobs: list[JobEntry]


class ArrayIndex(RootModel[dict[str, str]]):
    """An array's runs.json: {job id of each task: its run folder}."""


def _read(model: type[Model], path: Path) -> Model:
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise UserError(f"{path} is not what the launcher writes there: {error}") from None


def _write(model: BaseModel, path: Path) -> None:
    # json.dumps, not model_dump_json: the same bytes as before (ASCII, json's separators).
    path.write_text(json.dumps(model.model_dump(mode="json", exclude_none=True), indent=2) + "\n")


def record_job(run: RunDir, job_id: str, logs: Path, tasks: int, log_file: Path | None = None) -> None:
    """Append the job to the run folder's slurm/job.json (a resumed run has several). `logs`: the
    folder of one log per task; `log_file`: the one log of all tasks (a job script's)."""
    path = run.path / "slurm" / "job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _read(JobRecord, path) if path.exists() else JobRecord(jobs=[])
    record.jobs.append(
        JobEntry(
            job_id=job_id,
            logs=logs.resolve(),
            tasks=tasks,
            submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
            log=log_file.resolve() if log_file is not None else None,
        )
    )
    _write(record, path)


def array_runs(folder: Path) -> dict[str, str] | None:
    """The runs.json of the arrays submitted into `folder`, or None where there is none."""
    path = folder / ARRAY_INDEX
    return _read(ArrayIndex, path).root if path.exists() else None


def record_array(folder: Path, runs: dict[str, Path]) -> None:
    """Add an array's tasks (job id: run folder) to `folder`'s runs.json (which keeps those of earlier arrays)."""
    index = array_runs(folder) or {}
    index.update({job_id: str(run.resolve()) for job_id, run in runs.items()})
    _write(ArrayIndex(index), folder / ARRAY_INDEX)


@dataclass(frozen=True)
class Job:
    job_id: str
    run: RunDir
    logs: Path  # the folder with <job id>_<rank>_log.out
    tasks: int | None = None
    log: Path | None = None  # one log for every task (a job script's --output)

    def log_file(self, rank: int) -> Path:
        if self.tasks is not None and not 0 <= rank < self.tasks:
            raise UserError(f"job {self.job_id} has ranks 0 to {self.tasks - 1}: no rank {rank}")
        return self.log or self.logs / f"{self.job_id}_{rank}_log.out"


def recorded_job(run: RunDir, job_id: str | None) -> Job:
    record = run.path / "slurm" / "job.json"
    if not record.exists():
        raise UserError(
            f"{run.path}: no slurm/job.json here; was this run submitted with launch --slurm or slurm/train.sbatch?"
        )
    jobs = _read(JobRecord, record).jobs
    entry = next((j for j in reversed(jobs) if j.job_id == job_id), None) if job_id else jobs[-1]
    if entry is None:
        raise UserError(f"{record} does not name job {job_id}")
    return Job(entry.job_id, run, entry.logs, entry.tasks, entry.log)
