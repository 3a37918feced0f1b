"""Inside a SLURM job: every task is one worker, and SLURM's variables say which.

Two ways in, one way through (`run_task`):
- `TrainingJob`, the callable that `launch --slurm` hands to submitit;
- `launch RECIPE --srun`, one task of an `srun` step in a job script of the user's own
  (slurm/train.sbatch).

Preemption: SIGTERM (SLURM cancels, preempts or requeues the job) and SIGUSR2 (the warning
sbatch's --signal sends before the time limit) only raise a flag; the ranks agree on a step,
rank 0 checkpoints it (launcher.training.stopping). After a warning, or when the time limit draws near
without one, the job is requeued and the next run resumes from that checkpoint, up to
`slurm.max_requeues` times. After a plain SIGTERM, SLURM has decided already: the task exits.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import SlurmJobEnvironment

from launcher import checkpoint
from launcher.config.durations import slurm_duration_s
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.distributed.worker import joined
from launcher.errors import RunFailed, UserError
from launcher.rundir import RunDir, new_run_dir
from launcher.slurm import records
from launcher.slurm.commands import show_job, slurm_command
from launcher.training.stopping import StopRequests, TrainingStopped
from launcher.training.summary import RunSummary
from launcher.training.trainer import train

log = logging.getLogger("launcher")


class TrainingJob(submitit.helpers.Checkpointable):
    """What each task of a `launch --slurm` job runs (submitit pickles it into the job)."""

    def __init__(self, recipe_data: dict[str, Any], run_path: str, device_type: str) -> None:
        self.recipe_data, self.run_path, self.device_type = recipe_data, run_path, device_type

    def __call__(self) -> RunSummary | None:
        # submitit's own handler for its preemption signal, installed before this call: rank 0
        # hands over to it once the checkpoint is written, and it calls `checkpoint()` below,
        # saves the resubmission and requeues the job.
        submitit_handler = signal.getsignal(preemption_signal())
        return run_task(
            Recipe.model_validate(self.recipe_data), RunDir(Path(self.run_path)), self.device_type,
            requeue=lambda: _hand_over_to(submitit_handler),
        )  # fmt: skip

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit's Checkpointable protocol: what the requeued job runs. The same job: the
        state it resumes from is the run folder's newest checkpoint, written before this is called."""
        return submitit.helpers.DelayedSubmission(TrainingJob(self.recipe_data, self.run_path, self.device_type))


def _hand_over_to(handler: object) -> None:
    """Run submitit's handler for its preemption signal (signal.getsignal types it as possibly SIG_DFL, SIG_IGN or None)."""
    if not callable(handler):
        raise TypeError(f"submitit installed no handler for its preemption signal to hand over to: {handler!r}")
    handler(preemption_signal(), None)


def preemption_signal() -> signal.Signals:
    """The signal that submitit asks sbatch's --signal for and handles: USR2, or the one that
    SUBMITIT_PREEMPT_SIGNAL names.

    submitit (1.5.4) has no public accessor for the signal itself: its own is the private
    `JobEnvironment._usr_sig()`. This does that lookup from the public `USR_SIG`, the name."""
    try:
        return signal.Signals[f"SIG{SlurmJobEnvironment.USR_SIG}"]
    except KeyError:
        raise UserError(
            f"SUBMITIT_PREEMPT_SIGNAL={SlurmJobEnvironment.USR_SIG}: no such signal (submitit's default: USR2)"
        ) from None


def srun_task(recipe: Recipe, device_type: str) -> RunSummary | None:
    """`launch RECIPE --srun`: this process is one task of an srun step; the job's run folder is
    `<output>/<name>/slurm-<job id>`, the same for every task and for the requeued job."""

    job = SlurmJobEnvironment()
    run = new_run_dir(recipe.run.output, recipe.run.resolved_name, run_id=f"slurm-{job.job_id}")
    if job.global_rank == 0 and not run.recipe.exists():
        dump_recipe(recipe, run.recipe, header=f"# SLURM job {job.job_id}\n")
        _make_findable(job.job_id, run, job.num_tasks)
    return run_task(recipe, run, device_type, requeue=lambda: _scontrol_requeue(job.job_id))


def run_task(recipe: Recipe, run: RunDir, device_type: str, requeue: Callable[[], None]) -> RunSummary | None:
    """Train as this task's rank, resuming from the run folder's newest checkpoint if it has one."""

    job = SlurmJobEnvironment()
    export_torch_environment(job)
    restarts, limit = int(os.environ.get("SLURM_RESTART_COUNT", "0")), recipe.slurm.max_requeues
    latest = checkpoint.latest(run.checkpoints)
    if restarts > limit:  # SLURM requeued it on its own (a preemption) once too often
        raise UserError(_limit_reached(job.job_id, restarts, limit, latest, run))
    with joined(recipe, run, device_type, console_on_every_rank=True) as runtime:
        node = os.environ.get("SLURMD_NODENAME", job.hostname)
        log.info(
            "SLURM job %s, task %d of %d on %s; run folder %s",
            job.job_id,
            runtime.rank,
            runtime.world_size,
            node,
            run.path,
        )
        if restarts:
            log.info("requeued %d time(s); resuming from %s", restarts, latest or "the start (no checkpoint yet)")
        end_time = job_end_time(job.job_id) if runtime.is_main else None
        stop = StopRequests(runtime.device, end_time=end_time, patience_s=recipe.distributed.stall_s)
        try:
            with stop.catching([signal.SIGTERM, preemption_signal()]):
                return train(recipe, runtime, run, latest, stop)
        except TrainingStopped as stopped:
            if stopped.pruned:  # its search asked for it: the task ends with success
                log.info("%s", stopped)
                return None
            log.warning("%s", stopped)
            if not stopped.wants_requeue:
                raise SystemExit(128 + signal.SIGTERM) from None
            if restarts >= limit:
                log.error("%s", _limit_reached(job.job_id, restarts, limit, stopped.checkpoint, run))
                raise SystemExit(1) from None
            if runtime.is_main:  # the other tasks exit first, cleanly: SLURM ends them when the job requeues
                log.info("requeueing job %s (requeue %d of at most %d)", job.job_id, restarts + 1, limit)
                requeue()
            raise SystemExit(0) from None


def export_torch_environment(job: SlurmJobEnvironment) -> None:
    """SLURM's view of this task, in the variables torch.distributed reads: RANK, LOCAL_RANK,
    WORLD_SIZE, LOCAL_WORLD_SIZE, and MASTER_ADDR:MASTER_PORT on the job's first node."""
    os.environ.update(
        RANK=str(job.global_rank),
        LOCAL_RANK=str(job.local_rank),
        WORLD_SIZE=str(job.num_tasks),
        LOCAL_WORLD_SIZE=str(job.num_tasks // job.num_nodes),
        MASTER_ADDR=job.hostnames[0],
        MASTER_PORT=str(master_port(job.job_id)),
    )


def master_port(job_id: str) -> int:
    """The same on every task of a job and of its requeued runs; other jobs most likely get another.

    Below Linux's ephemeral range (32768-60999): a port there may be the local end of any
    connection on the node (gloo opens many), and rank 0 could not listen on it (seen in CI).
    """
    return 20000 + zlib.crc32(job_id.encode()) % 12000


def job_end_time(job_id: str) -> float | None:
    """When SLURM will stop this job (a time.time() value), or None where it has no limit."""
    try:
        left = slurm_command(["squeue", "-h", "-j", job_id, "-o", "%L"], check=False, timeout_s=30).strip()
        return time.time() + slurm_duration_s(left)
    except (OSError, UserError, ValueError):  # UNLIMITED, NOT_SET, no answer, no squeue
        return None


def _make_findable(job_id: str, run: RunDir, tasks: int) -> None:
    """So that `launch status|logs|cancel` work for a job script's run too: the job's comment
    names the run folder, and the run folder's slurm/job.json the job and its log."""

    stdout = show_job(job_id).get("StdOut")
    log_file = Path(stdout) if stdout else None
    records.record_job(run, job_id, log_file.parent if log_file else run.path, tasks, log_file)
    slurm_command(
        ["scontrol", "update", f"JobId={job_id}", f"Comment={records.COMMENT}{run.path.resolve()}"],
        check=False,  # best effort, as before: job.json above already records the job
    )


def _scontrol_requeue(job_id: str) -> None:
    """A job script's run requeues itself (it has no submitit handler to hand over to) as
    submitit's `SlurmJobEnvironment._requeue` does; submitit has no public call for it."""
    try:
        slurm_command(["scontrol", "requeue", job_id])
    except UserError as error:  # the run failed on the way (exit status 1), not the user's input
        raise RunFailed(str(error)) from None


def _limit_reached(job_id: str, restarts: int, limit: int, latest: Path | None, run: RunDir) -> str:
    return (
        f"job {job_id} was requeued {restarts} time(s), the limit is slurm.max_requeues={limit}: not requeueing it again. "
        f"Its newest checkpoint is {latest}; go on with: launch {run.recipe} --slurm --resume {run.path} "
        f"(or raise slurm.max_requeues)"
    )
