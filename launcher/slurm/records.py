"""What a run folder records of its SLURM jobs (slurm/job.json, an array's runs.json), so that `launch status|logs|cancel` find them."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import UserError
from launcher.rundir import RunDir

log = logging.getLogger("launcher")


COMMENT = "launcher:"  # the job's comment: "launcher:<run folder>"


ARRAY_INDEX = "runs.json"


def record_job(run: RunDir, job_id: str, logs: Path, tasks: int, log_file: Path | None = None) -> None:
    """Append the job to the run folder's slurm/job.json (a resumed run has several). `logs`: the
    folder of one log per task; `log_file`: the one log of all tasks (a job script's)."""
    path = run.path / "slurm" / "job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = json.loads(path.read_text())["jobs"] if path.exists() else []
    entry = {
        "job_id": job_id,
        "logs": str(logs.resolve()),
        "tasks": tasks,
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if log_file is not None:
        entry["log"] = str(log_file.resolve())
    jobs.append(entry)
    path.write_text(json.dumps({"jobs": jobs}, indent=2) + "\n")


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
    jobs = json.loads(record.read_text())["jobs"]
    entry = next((j for j in reversed(jobs) if j["job_id"] == job_id), None) if job_id else jobs[-1]
    if entry is None:
        raise UserError(f"{record} does not name job {job_id}")
    return Job(
        entry["job_id"], run, Path(entry["logs"]), entry.get("tasks"), Path(entry["log"]) if "log" in entry else None
    )
