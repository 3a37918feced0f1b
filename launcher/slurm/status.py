"""Following a submitted job: its state, its logs, the traceback of a failed task, cancelling it."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from launcher import checkpoint
from launcher.errors import UserError, is_error_line
from launcher.rundir import RunDir
from launcher.slurm.commands import show_job, slurm_command
from launcher.slurm.records import COMMENT, Job, array_runs, recorded_job
from launcher.tracking.readback import run_series
from launcher.tracking.tensorboard import last_scalars

log = logging.getLogger("launcher")


# States after which a job runs no more (a REQUEUED or PENDING job comes back).
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


TRACE_TAIL = 8  # lines of a traceback shown up to its error line (after its first line), where it is longer


def find_job(target: str) -> Job:
    """The job that `target` names: a run folder (its newest job) or a job id."""
    path = Path(target)
    if path.is_dir():
        return recorded_job(RunDir(path), None)
    if not re.fullmatch(r"\d+(_\d+)?", target):
        raise UserError(f"{target}: neither a run folder nor a SLURM job id")
    # The controller knows the job's comment and log (until MinJobAge after its end).
    shown = show_job(target)
    index = array_runs(Path(shown["StdOut"]).parent) if shown.get("StdOut") else None
    if index is not None:  # a task of an array: the comment is the array's
        if target in index:
            return recorded_job(RunDir(Path(index[target])), target)
        raise UserError(f"job {target} is an array; give one of its tasks: {', '.join(index)}")
    comment = shown.get("Comment", "")
    if comment.startswith(COMMENT) and comment != COMMENT:
        return recorded_job(RunDir(Path(comment.removeprefix(COMMENT))), target)
    raise UserError(
        f"job {target}: the controller knows no run folder of it (or no longer knows the job); give its run folder instead"
    )


def job_state(job_id: str) -> dict[str, str]:
    """What accounting says of the job: State, Elapsed, NodeList, ExitCode, Start, End."""
    out = slurm_command(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,Elapsed,NodeList,ExitCode,Start,End"]
    )
    names = ["JobID", "State", "Elapsed", "NodeList", "ExitCode", "Start", "End"]
    for line in out.splitlines():
        # Not strict: a line that is not one of the table's rows is passed over by the JobID test below.
        fields = dict(zip(names, line.split("|"), strict=False))
        if fields["JobID"] == job_id:
            fields["State"] = fields["State"].split()[0]  # "CANCELLED by 0" -> CANCELLED
            return fields
    return {"State": "UNKNOWN"}


def restarts(job_id: str) -> int | None:
    """How often the job was requeued, or None where the controller does not know it (any more)."""
    count = show_job(job_id).get("Restarts")
    return int(count) if count else None


def wait_until_ended(job_id: str, timeout_s: float | None = None, poll_s: float = 2.0) -> dict[str, str]:
    """The job's state once it has ended and its tasks are gone (or at `timeout_s`). Accounting says
    CANCELLED as soon as scancel is called; the tasks may still be writing their checkpoint then."""
    started = time.monotonic()
    while True:
        state = job_state(job_id)
        ended = state["State"] in ENDED and not _completing(job_id)
        if ended or (timeout_s is not None and time.monotonic() - started > timeout_s):
            return state
        time.sleep(poll_s)


def _completing(job_id: str) -> bool:
    """squeue lists the job as COMPLETING while its tasks are still ending."""
    return "COMPLETING" in slurm_command(["squeue", "-h", "-j", job_id, "-o", "%T"], check=False)


def follow(job: Job, rank: int = 0, keep_following: bool = True, poll_s: float = 1.0) -> Iterator[str]:
    """The task's log, line by line; with `keep_following`, what it writes next, until the job ends."""
    position, last_check, ended = 0, 0.0, False
    while True:
        path = job.log_file(rank)
        if path.exists():
            with path.open() as file:
                file.seek(position)
                text = file.read()
                position = file.tell()
            yield from text.splitlines(keepends=True)
        if not keep_following or ended:
            return
        if time.monotonic() - last_check > 5 * poll_s:
            last_check = time.monotonic()
            ended = job_state(job.job_id)["State"] in ENDED  # one more read after the end: its last lines
        if not ended:
            time.sleep(poll_s)


def failures(job: Job) -> list[str]:
    """For a job that failed: each task whose log holds a traceback, with its node and the error;
    the tasks that failed first come first, those that only lost a failed peer after them."""
    found = []
    logs = [job.log] if job.log else list(job.logs.glob(f"{job.job_id}_*_log.out"))  # a job script's: one for all
    for path in logs:
        if not path.exists():
            continue
        text = re.sub(r"(?m)^\[rank\d+\]: ", "", path.read_text(errors="replace"))  # torch's prefix on each line
        start = text.rfind("Traceback (most recent call last)")
        if start < 0:
            continue
        rank = int(path.name.split("_")[-2]) if not job.log else -1
        node = re.search(r"task \d+ of \d+ on (\S+);", text)
        trace = text[start:].splitlines()
        # The traceback up to its error line; the srun noise after it is left out.
        end = next(
            (i for i in range(len(trace) - 1, 0, -1) if is_error_line(trace[i])),
            len(trace) - 1,
        )
        error = trace[end]
        lost_a_peer = "Connection closed by peer" in error or "remote worker" in error
        who = f"rank {rank} on {node.group(1) if node else 'an unknown node'}" if rank >= 0 else "the last traceback"
        report = f"{who} ({path}){': its peer failed' if lost_a_peer else ''}:"
        shown = trace[: end + 1] if end <= TRACE_TAIL else [trace[0], "  ...", *trace[end - TRACE_TAIL + 1 : end + 1]]
        found.append((lost_a_peer, rank, report + "\n  " + "\n  ".join(shown)))
    return [report for *_, report in sorted(found)]


def exit_status(state: dict[str, str]) -> int:
    """0 for a completed job; otherwise its exit code, or 1."""
    if state["State"] == "COMPLETED":
        return 0
    code = int(state.get("ExitCode", "1:0").split(":")[0] or 1)
    return code or 1


def describe(job: Job) -> list[str]:
    """`launch status`: the job's state, where it runs, how long, its newest checkpoint and metrics."""

    state = job_state(job.job_id)
    requeued = restarts(job.job_id)
    lines = [
        f"job {job.job_id}: {state['State']}"
        + (f" on {state['NodeList']}" if state.get("NodeList") not in (None, "", "None assigned") else "")
        + (f", elapsed {state['Elapsed']}" if state.get("Elapsed") else "")
        + (f", requeued {requeued} time(s)" if requeued else ""),
        f"run folder: {job.run.path}",
        f"log (rank 0): {job.log_file(0)}",
    ]
    if state["State"] in ENDED - {"COMPLETED"}:
        lines += [f"failed: {failure}" for failure in failures(job)]
    latest = checkpoint.latest(job.run.checkpoints)
    lines.append(f"newest checkpoint: {latest if latest else 'none yet'}")
    if job.run.metrics.exists():
        final = json.loads(job.run.metrics.read_text())["final"]
        lines.append(
            "final metrics: "
            + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
        )
    else:
        configured = (
            yaml.safe_load(job.run.recipe.read_text())["logging"]["tensorboard_dir"]
            if job.run.recipe.exists()
            else None
        )
        scalars = last_scalars(run_series(job.run.tensorboard(configured), job.run.metrics_csv))
        if scalars:
            step, values = scalars
            lines.append(f"last metrics (up to step {step}): " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return lines


def cancel(job: Job, timeout_s: float = 120) -> dict[str, str]:
    """scancel the job; wait for its tasks to stop (they checkpoint the step they are on, within
    SLURM's KillWait) and say where the run can go on from."""

    state = job_state(job.job_id)
    if state["State"] in ENDED:
        log.info("job %s has already ended: %s", job.job_id, state["State"])
        return state
    slurm_command(["scancel", job.job_id])
    log.info("cancelling job %s; waiting for its tasks to stop", job.job_id)
    state = wait_until_ended(job.job_id, timeout_s)
    latest = checkpoint.latest(job.run.checkpoints)
    log.info("job %s: %s; newest checkpoint: %s", job.job_id, state["State"], latest or "none")
    if latest:
        log.info("go on with: launch %s --slurm --resume %s", job.run.recipe, job.run.path)
    return state
