"""`launch --slurm`, `--srun` and the job commands (status, logs, cancel)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from launcher.cli.parser import SLURM_FLAGS
from launcher.cli.train import completed_run, refuse_a_different_run
from launcher.config.durations import time_limit_minutes
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.errors import UserError
from launcher.slurm import status
from launcher.tracking import logs
from launcher.tracking.run_logger import where_to_look

log = logging.getLogger("launcher")


def submit(recipe: Recipe, args: argparse.Namespace) -> int:
    """`--slurm`: check, create the run folder, submit; say where to look; with --wait, follow the job."""
    # start-up: `launch status|logs|cancel` import this module too, without torch
    from launcher import rundir
    from launcher.slurm import resources, status, submission

    if args.nnodes != "1" or args.rdzv_endpoint or args.rdzv_id or args.max_restarts or args.cpu or args.srun:
        raise UserError(
            "--slurm places the tasks itself: drop --nnodes, --rdzv-*, --max-restarts, --cpu and --srun (SLURM requeues, see slurm.max_requeues)"
        )
    recipe = resources.with_flags(
        recipe, {"gpus": args.gpus, "nproc": args.nproc, **{key: getattr(args, key) for key in SLURM_FLAGS}}
    )
    resources.check_resources(recipe.slurm)
    if args.resume is not None:
        run, resume_from = rundir.find_resume(
            None if args.resume == "latest" else args.resume, recipe.run.output, recipe.run.resolved_name
        )
        refuse_a_different_run(recipe, run, args.force)
        if complete := completed_run(recipe, run, resume_from, f"{args.recipe} --slurm"):
            log.info("%s", complete)
            return 0
        log.info("the job resumes from the newest checkpoint of %s (now %s)", run.path, resume_from.name)
    else:
        run = rundir.new_run_dir(recipe.run.output, recipe.run.resolved_name)
        dump_recipe(
            recipe,
            run.recipe,
            header=f"# resolved from {args.recipe}; submit it again with: launch {run.recipe} --slurm\n",
        )
    try:
        submission.submit(recipe, run)
        job = status.find_job(str(run.path))
    except UserError:
        if args.resume is None:  # SLURM refused it: no run folder without a job
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    s = recipe.slurm
    print(f"submitted job {job.job_id}: {s.nodes} node(s) x {resources.tasks_per_node(s)} task(s) ({'GPU' if s.gpus else 'CPU'}), "
          f"partition {s.partition or '(default)'}, time limit {time_limit_minutes(s.time)} min")  # fmt: skip
    print(f"run folder:  {run.path}")
    print(f"logs:        {job.log_file(0)} (rank 0; rank N: {job.job_id}_N_log.out)")
    for tracker, command in where_to_look(recipe.logging, run, Path(recipe.run.output)):
        print(f"{tracker + ':':<13}{command}")
    print(f"follow it:   launch status {run.path}  |  launch logs {run.path} --follow  |  launch cancel {run.path}")
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        for line in status.follow(job):
            print(line, end="", flush=True)
    except KeyboardInterrupt:
        log.error("stopped following job %s; it goes on running (stop it with: launch cancel %s)", job.job_id, run.path)
        return 130
    state = status.wait_until_ended(job.job_id)
    log.info("job %s ended: %s (exit code %s)", job.job_id, state["State"], state.get("ExitCode"))
    if state["State"] != "COMPLETED":
        for failure in status.failures(job):
            log.error("failed: %s", failure)
    return status.exit_status(state)


def srun_task(recipe: Recipe, args: argparse.Namespace) -> int:
    """`--srun`: one task of an srun step; SLURM's variables say which."""

    # start-up: `launch status|logs|cancel` import this module too, without torch
    import torch

    from launcher.slurm import task as slurm_job

    if "SLURM_PROCID" not in os.environ or "SLURM_JOB_ID" not in os.environ:
        raise UserError(
            "--srun runs as one task of an srun step, inside a SLURM job (see slurm/train.sbatch); to submit a job: --slurm"
        )
    use_cuda = torch.cuda.is_available() and not args.cpu and args.nproc is None
    slurm_job.srun_task(recipe, "cuda" if use_cuda else "cpu")
    return 0


def follow_job(command: str, args: argparse.Namespace) -> int:
    """`launch status|logs|cancel RUN_FOLDER_OR_JOB_ID`."""

    logs.setup_text_log(None, console=True)
    try:
        job = status.find_job(args.target)
        if command == "status":
            print("\n".join(status.describe(job)))
        elif command == "logs":
            if not job.log_file(args.rank).exists() and not args.follow:
                raise UserError(
                    f"no log yet at {job.log_file(args.rank)} (job {job.job_id}: {status.job_state(job.job_id)['State']})"
                )
            for line in status.follow(job, args.rank, keep_following=args.follow):
                print(line, end="", flush=True)
        else:
            status.cancel(job)
        return 0
    except UserError as error:
        log.error("error: %s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        logs.close_text_log()
