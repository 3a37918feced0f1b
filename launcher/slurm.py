"""Submitting a run to SLURM through submitit, and following it: status, logs, cancel.

`launch RECIPE --slurm` resolves the `slurm:` section (command-line flags win), checks what can
be checked without waiting in the queue (the resources against what `sinfo` says the partition
has, the output folder), creates the run folder and submits one task per GPU (or `nproc` CPU
tasks) on each node. The run folder's `slurm/` holds submitit's files, one log per task, and
`job.json`, which names the job(s), so that `launch status|logs|cancel RUN_FOLDER` find them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from launcher.errors import UserError
from launcher.recipe import (
    Recipe,
    RecipeError,
    Slurm,
    did_you_mean,
    problems_from,
    slurm_duration_s,
    time_limit_minutes,
)
from launcher.rundir import RunDir

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


def with_flags(recipe: Recipe, flags: dict[str, Any]) -> Recipe:
    """The recipe with the command line's SLURM flags (those given) over its `slurm:` section."""
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return recipe
    try:
        return Recipe.model_validate({**recipe.to_dict(), "slurm": {**recipe.slurm.model_dump(), **given}})
    except ValidationError as error:
        raise RecipeError("the command line", problems_from(error)) from None


def device_type(slurm: Slurm) -> str:
    return "cuda" if slurm.gpus else "cpu"


def tasks_per_node(slurm: Slurm) -> int:
    return slurm.gpus or slurm.nproc or 1


# --- before submitting: what sinfo says the partition has -------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


def check_resources(slurm: Slurm) -> None:
    """Fail before the queue where the request cannot fit the partition; name the values that disagree."""
    problems = []
    if slurm.gpus and slurm.nproc:
        problems.append(
            f"slurm.gpus={slurm.gpus} and slurm.nproc={slurm.nproc}: one task per GPU, or nproc CPU tasks; choose one"
        )
    partitions, default = _partitions()
    name = slurm.partition or default
    if name is None:
        problems.append("no slurm.partition given and the cluster has no default partition: set --partition")
    elif name not in partitions:
        problems.append(
            f"slurm.partition={name}: no such partition; {did_you_mean(name, partitions) or 'there are: ' + ', '.join(partitions)}"
        )
    if problems or name is None:
        raise UserError("cannot submit:\n  " + "\n  ".join(problems))
    nodes, max_time = partitions[name]
    tasks, cpus_per_task = tasks_per_node(slurm), slurm.cpus_per_task or 1
    needed = {
        "cpus": tasks * cpus_per_task,
        "gpus": slurm.gpus or 0,
        "memory_mb": _memory_mb(slurm.mem) if slurm.mem else 0,
    }
    if len(nodes) < slurm.nodes:
        problems.append(
            f"slurm.nodes={slurm.nodes}, but partition '{name}' has {len(nodes)} node(s): {', '.join(n.name for n in nodes)}"
        )
    for what, amount in needed.items():
        most = max(getattr(n, what) for n in nodes)
        if amount > most:
            problems.append(
                f"{_asked(what, slurm, tasks, cpus_per_task)}, but the nodes of '{name}' have at most {_amount(what, most)}"
            )
    fitting = [n for n in nodes if all(getattr(n, what) >= amount for what, amount in needed.items())]
    if not problems and len(fitting) < slurm.nodes:
        problems.append(
            f"slurm.nodes={slurm.nodes}, but only {len(fitting)} node(s) of '{name}' have what each node needs: {needed}"
        )
    if max_time is not None and time_limit_minutes(slurm.time) * 60 > max_time:
        problems.append(f"slurm.time={slurm.time} is above partition '{name}''s limit of {max_time // 60} minutes")
    if problems:
        raise UserError("cannot submit: the resources asked for don't fit the cluster:\n  " + "\n  ".join(problems))


def _asked(what: str, slurm: Slurm, tasks: int, cpus_per_task: int) -> str:
    if what == "cpus":
        return f"{tasks} task(s) per node (slurm.{'gpus' if slurm.gpus else 'nproc'}) x {cpus_per_task} CPU(s) per task (slurm.cpus_per_task) = {tasks * cpus_per_task} CPUs per node"
    if what == "gpus":
        return f"slurm.gpus={slurm.gpus} per node"
    return f"slurm.mem={slurm.mem} per node"


def _amount(what: str, value: int) -> str:
    return {"cpus": f"{value} CPUs", "gpus": f"{value} GPU(s)", "memory_mb": f"{value} MB"}[what]


def _partitions() -> tuple[dict[str, tuple[list[Node], int | None]], str | None]:
    """Each partition's nodes and time limit (seconds; None: unlimited), and the default partition."""
    out = _slurm_command(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%l|%P"])
    partitions: dict[str, tuple[list[Node], int | None]] = {}
    default = None
    for line in out.splitlines():
        node, cpus, memory, gres, limit, partition = line.split("|")
        if partition.endswith("*"):
            partition = default = partition[:-1]
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        seconds = None if limit in ("infinite", "n/a") else slurm_duration_s(limit)
        nodes, _ = partitions.setdefault(partition, ([], seconds))
        nodes.append(Node(node, int(cpus.rstrip("+")), int(memory.rstrip("+")), gpus))
    return partitions, default


def _memory_mb(text: str) -> float:
    """Megabytes in a SLURM memory size; a fraction for sizes in K."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    if not match:
        raise UserError(f"slurm.mem={text}: give a size such as 64G or 4000M")
    return int(match.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[match.group(2)]


def _slurm_command(command: list[str]) -> str:
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(
            f"`{command[0]}` not found: SLURM commands run where the SLURM client is (a login node)"
        ) from None
    if done.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# --- submitting ---------------------------------------------------------------------------------


def executor(folder: Path, slurm: Slurm, name: str) -> Any:
    """A submitit executor for `slurm`: one task per GPU (or `nproc` CPU tasks) on each node."""
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
    from launcher.slurm_job import TrainingJob

    ex = executor(run.path / "slurm", recipe.slurm, recipe.run.resolved_name)
    ex.update_parameters(slurm_comment=f"{COMMENT}{run.path.resolve()}")  # `launch status JOB_ID` finds the run by it
    with _refusals_explained():
        job = ex.submit(TrainingJob(recipe.to_dict(), str(run.path), device_type(recipe.slurm)))
    record_job(run, job.job_id, run.path / "slurm", recipe.slurm.nodes * tasks_per_node(recipe.slurm))
    return job.job_id


@contextlib.contextmanager
def _refusals_explained() -> Iterator[None]:
    """sbatch's refusals (a bad constraint, an unknown option) as one clear line, not submitit's traceback."""
    from submitit.core.utils import FailedJobError

    try:
        yield
    except FailedJobError as error:
        said = [line.removeprefix("sbatch: error: ") for line in str(error).splitlines() if "sbatch:" in line]
        raise UserError(f"SLURM refused the job: {'; '.join(said) or str(error).strip()}") from None


def submit_array(recipes: list[Recipe], runs: list[RunDir], folder: Path, parallel: int | None = None) -> list[str]:
    """Submit many runs as one job array (the same resources for all: the first recipe's
    `slurm:`), at most `parallel` running at once; return their job ids, in order."""
    from launcher.slurm_job import TrainingJob

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
    index_file = folder / ARRAY_INDEX
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    index.update({job.job_id: str(run.path.resolve()) for job, run in zip(jobs, runs, strict=True)})
    index_file.write_text(json.dumps(index, indent=2) + "\n")
    return [job.job_id for job in jobs]


COMMENT = "launcher:"  # the job's comment: "launcher:<run folder>"
ARRAY_INDEX = "runs.json"
TRACE_TAIL = 8  # lines of a traceback shown up to its error line (after its first line), where it is longer


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


# --- following a job -----------------------------------------------------------------------------


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


def find_job(target: str) -> Job:
    """The job that `target` names: a run folder (its newest job) or a job id."""
    path = Path(target)
    if path.is_dir():
        return _recorded_job(RunDir(path), None)
    if not re.fullmatch(r"\d+(_\d+)?", target):
        raise UserError(f"{target}: neither a run folder nor a SLURM job id")
    # The controller knows the job's comment and log (until MinJobAge after its end).
    shown = subprocess.run(["scontrol", "show", "job", target], check=False, capture_output=True, text=True).stdout
    stdout = re.search(r"StdOut=(\S+)", shown)
    index_file = Path(stdout.group(1)).parent / ARRAY_INDEX if stdout else None
    if index_file is not None and index_file.exists():  # a task of an array: the comment is the array's
        index = json.loads(index_file.read_text())
        if target in index:
            return _recorded_job(RunDir(Path(index[target])), target)
        raise UserError(f"job {target} is an array; give one of its tasks: {', '.join(index)}")
    comment = re.search(rf"Comment={COMMENT}(\S+)", shown)
    if comment:
        return _recorded_job(RunDir(Path(comment.group(1))), target)
    raise UserError(
        f"job {target}: the controller knows no run folder of it (or no longer knows the job); give its run folder instead"
    )


def _recorded_job(run: RunDir, job_id: str | None) -> Job:
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


def job_state(job_id: str) -> dict[str, str]:
    """What accounting says of the job: State, Elapsed, NodeList, ExitCode, Start, End."""
    out = _slurm_command(
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
    match = re.search(
        r"Restarts=(\d+)",
        subprocess.run(["scontrol", "show", "job", job_id], check=False, capture_output=True, text=True).stdout,
    )
    return int(match.group(1)) if match else None


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
    listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], check=False, capture_output=True, text=True)
    return "COMPLETING" in listed.stdout


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
            (i for i in range(len(trace) - 1, 0, -1) if re.match(r"^[\w.]+(Error|Exception|Exit)\b", trace[i])),
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
    import yaml

    from launcher import checkpoint, logs

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
        scalars = logs.last_scalars(job.run.tensorboard(configured))
        if scalars:
            step, values = scalars
            lines.append(f"last metrics (up to step {step}): " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return lines


def cancel(job: Job, timeout_s: float = 120) -> dict[str, str]:
    """scancel the job; wait for its tasks to stop (they checkpoint the step they are on, within
    SLURM's KillWait) and say where the run can go on from."""
    from launcher import checkpoint

    state = job_state(job.job_id)
    if state["State"] in ENDED:
        log.info("job %s has already ended: %s", job.job_id, state["State"])
        return state
    _slurm_command(["scancel", job.job_id])
    log.info("cancelling job %s; waiting for its tasks to stop", job.job_id)
    state = wait_until_ended(job.job_id, timeout_s)
    latest = checkpoint.latest(job.run.checkpoints)
    log.info("job %s: %s; newest checkpoint: %s", job.job_id, state["State"], latest or "none")
    if latest:
        log.info("go on with: launch %s --slurm --resume %s", job.run.recipe, job.run.path)
    return state
