"""Running a sweep's runs: one after another in this process's workers, or as one SLURM array."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException

from launcher import checkpoint
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.errors import UserError, is_error_line
from launcher.rundir import RunDir
from launcher.slurm import status, submission
from launcher.sweep.planning import Sweep
from launcher.sweep.results import Outcome, previous_rows, print_table, result_row, show_results, write_results
from launcher.tracking import logs

log = logging.getLogger("launcher")


TrainOne = Callable[[Recipe, RunDir, "Path | None"], int]


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
                outcome, code = train_and_record(train_one, sweep.recipes[run.name], folder, resume_from)
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
    return code or (1 if any(row.status != "finished" for row in results) else 0)


def train_and_record(
    train_one: TrainOne, recipe: Recipe, folder: RunDir, resume_from: Path | None
) -> tuple[Outcome, int]:
    """Train one run; its failure is an Outcome, not the sweep's end. The run's log.txt gets the
    error; the sweep's messages go back to the console alone afterwards."""
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
    raised = [line for line in lines[1:] if is_error_line(line)]
    return f"{first.rstrip(':')}: {raised[-1]}" if raised else first


def submit(sweep: Sweep, parallel: int | None, wait: bool) -> int:
    """The runs not finished and not in the queue, as one SLURM job array (submission.submit_array;
    each task resumes from its run's newest checkpoint); with `wait`, until every job has ended."""

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
            job_ids = submission.submit_array(
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
    # Not submitit.helpers.as_completed: slurm.submission hands back job ids, not submitit Jobs, and
    # a Job's done() is true once its result file exists or sacct says CANCELLED, while the tasks may
    # still be writing their checkpoint (status.wait_until_ended also waits out squeue's COMPLETING).
    for (run, _), job_id in zip(todo, job_ids, strict=True):
        state = status.wait_until_ended(job_id)
        log.info("job %s (%s) ended: %s", job_id, run.name, state["State"])
    return show_results(sweep)


def queued_job(folder: RunDir) -> str | None:
    """The id of the run's newest SLURM job if it is still pending or running, else None."""

    if not (folder.path / "slurm" / "job.json").exists():
        return None
    job_id = status.find_job(str(folder.path)).job_id
    return job_id if status.job_state(job_id)["State"] not in {*status.ENDED, "UNKNOWN"} else None
