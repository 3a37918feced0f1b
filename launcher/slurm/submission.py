"""Submitting a run to SLURM through submitit, and following it: status, logs, cancel.

`launch RECIPE --slurm` resolves the `slurm:` section (command-line flags win), checks what can
be checked without waiting in the queue (the resources against what `sinfo` says the partition
has, the output folder), creates the run folder and submits one task per GPU (or `nproc` CPU
tasks) on each node. The run folder's `slurm/` holds submitit's files, one log per task, and
`job.json`, which names the job(s), so that `launch status|logs|cancel RUN_FOLDER` find them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher.config.durations import time_limit_minutes
from launcher.config.schema import Recipe, Slurm
from launcher.errors import UserError
from launcher.rundir import RunDir
from launcher.slurm.records import COMMENT, record_array, record_job
from launcher.slurm.resources import check_resources, device_type, tasks_per_node
from launcher.slurm.task import TrainingJob


def executor(folder: Path, slurm: Slurm, name: str) -> Any:
    """A submitit executor for `slurm`: one task per GPU (or `nproc` CPU tasks) on each node."""
    # start-up: submitit only for the SLURM commands
    import submitit

    # slurm_max_num_timeout belongs to the constructor; the requeue limit is ours (slurm.max_requeues).
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=slurm.max_requeues)
    delay_s, sbatch = warning_delay_s(slurm), dict(slurm.sbatch)
    if delay_s is None:
        sbatch.setdefault("signal", "CONT@1")  # in place of submitit's USR2: a signal that changes nothing
    parameters: dict[str, Any] = {
        "name": name,
        "nodes": slurm.nodes,
        "tasks_per_node": tasks_per_node(slurm),
        "timeout_min": time_limit_minutes(slurm.time),
        "stderr_to_stdout": True,  # one log per task, tracebacks in place
        "slurm_signal_delay_s": delay_s or slurm.signal_delay_s,
        # A task that fails takes the others down; a requeued job appends to its logs.
        "slurm_srun_args": ["--kill-on-bad-exit=1"],
        "slurm_additional_parameters": {"open-mode": "append", **sbatch},
        "slurm_setup": slurm.setup,
    }
    optional = {
        "gpus_per_node": slurm.gpus, "cpus_per_task": slurm.cpus_per_task, "slurm_partition": slurm.partition,
        "slurm_account": slurm.account, "slurm_qos": slurm.qos, "slurm_constraint": slurm.constraint, "slurm_mem": slurm.mem,
    }  # fmt: skip
    ex.update_parameters(**parameters, **{key: value for key, value in optional.items() if value is not None})
    return ex


# SLURM may send the warning signal up to a minute before it is due (the resolution of its event
# loop: seen in CI, a USR2 due 30 s into a 1-minute job came at once), and a warning that comes
# before the job has set up its handlers kills it. The job's start gets a minute too.
WARNING_SLACK_S = 60 + 60


MIN_WARNING_DELAY_S = 10  # a USR2 warning closer to the time limit than this is not asked for


def warning_delay_s(slurm: Slurm) -> int | None:
    """How long before the time limit to ask for the USR2 warning; None where the limit leaves no
    room for one (the run then stops in time by watching the clock: stopping.StopRequests)."""
    delay_s = min(slurm.signal_delay_s, time_limit_minutes(slurm.time) * 60 - WARNING_SLACK_S)
    return delay_s if delay_s >= MIN_WARNING_DELAY_S else None


def submit(recipe: Recipe, run: RunDir) -> str:
    """Submit the run in `run` (its recipe.yaml written); return the job id."""

    ex = executor(run.path / "slurm", recipe.slurm, recipe.run.resolved_name)
    ex.update_parameters(slurm_comment=f"{COMMENT}{run.path.resolve()}")  # `launch status JOB_ID` finds the run by it
    with _refusals_explained():
        job = ex.submit(TrainingJob(recipe.to_dict(), str(run.path), device_type(recipe.slurm)))
    record_job(run, job.job_id, run.path / "slurm", recipe.slurm.nodes * tasks_per_node(recipe.slurm))
    return job.job_id


@contextlib.contextmanager
def _refusals_explained() -> Iterator[None]:
    """sbatch's refusals (a bad constraint, an unknown option) as one clear line, not submitit's traceback."""
    # start-up: submitit only for the SLURM commands
    from submitit.core.utils import FailedJobError

    try:
        yield
    except FailedJobError as error:
        said = [line.removeprefix("sbatch: error: ") for line in str(error).splitlines() if "sbatch:" in line]
        raise UserError(f"SLURM refused the job: {'; '.join(said) or str(error).strip()}") from None


def submit_array(recipes: list[Recipe], runs: list[RunDir], folder: Path, parallel: int | None = None) -> list[str]:
    """Submit many runs as one job array (the same resources for all: the first recipe's
    `slurm:`), at most `parallel` running at once; return their job ids, in order."""

    slurm = recipes[0].slurm
    for recipe in recipes[1:]:
        if recipe.slurm != slurm:
            raise UserError(
                f"a job array gives all its runs the same resources; '{recipe.run.name}' asks for other slurm: settings"
            )
    check_resources(slurm)
    ex = executor(folder, slurm, recipes[0].run.resolved_name)
    if parallel is not None:
        ex.update_parameters(slurm_array_parallelism=parallel)
    with _refusals_explained(), ex.batch():
        jobs = [
            ex.submit(TrainingJob(r.to_dict(), str(run.path), device_type(slurm)))
            for r, run in zip(recipes, runs, strict=True)
        ]
    for job, run in zip(jobs, runs, strict=True):
        record_job(run, job.job_id, folder, slurm.nodes * tasks_per_node(slurm))
    # The array's tasks share one comment: `launch status ARRAY_TASK_ID` finds their runs here
    # (and those of earlier arrays submitted into the same folder).
    record_array(folder, {job.job_id: run.path for job, run in zip(jobs, runs, strict=True)})
    return [job.job_id for job in jobs]
