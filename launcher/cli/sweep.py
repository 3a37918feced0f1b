"""`launch sweep`: plan the grid, then run it here or submit it as a SLURM array."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from launcher.cli.parser import SLURM_FLAGS
from launcher.cli.recipe_checks import problems_in
from launcher.cli.train import refuse_a_different_run, train_in
from launcher.distributed import elastic
from launcher.errors import UserError
from launcher.slurm import resources
from launcher.sweep import execute, planning, results

log = logging.getLogger("launcher")


def sweep(args: argparse.Namespace) -> int:
    """`launch sweep`: every combination of the grid, each an ordinary run: here one after another,
    as `launch` trains (train_in), or as one SLURM job array. The rules are in launcher/sweep/planning.py."""

    if Path(args.recipe).is_dir():
        running = [f"--{key.replace('_', '-')}" for key in ("cpu", "gpus", "nproc", "slurm", "parallel", "wait", "force", "name", *SLURM_FLAGS)
                   if getattr(args, key) not in (None, False)]  # fmt: skip
        if args.overrides or running:
            raise UserError(
                f"launch sweep {args.recipe}: a sweep folder only gets its results rewritten (--metric, --mode); "
                f"it takes no {' or '.join(filter(None, ['overrides' if args.overrides else '', ', '.join(running)]))}: "
                "to run the sweep, give its recipe and grid again"
            )
        return results.show_results(planning.load(Path(args.recipe), args.metric, args.mode))
    plan = planning.plan(args.recipe, args.overrides, problems_in, metric=args.metric, mode=args.mode, name=args.name)
    for recipe, run in planning.existing_runs(plan):
        refuse_a_different_run(recipe, run, args.force)
    if args.slurm:
        if args.cpu:
            raise UserError("--slurm places the tasks itself: drop --cpu (--nproc N: CPU tasks per node)")
        flags = {"gpus": args.gpus, "nproc": args.nproc, **{key: getattr(args, key) for key in SLURM_FLAGS}}
        plan.recipes = {name: resources.with_flags(recipe, flags) for name, recipe in plan.recipes.items()}
        return execute.submit(plan, args.parallel, args.wait)
    given = [
        f"--{key.replace('_', '-')}"
        for key in (*SLURM_FLAGS, "wait", "parallel")
        if getattr(args, key) not in (None, False)
    ]
    if given:
        raise UserError(f"{', '.join(given)}: for --slurm sweeps only; add --slurm to submit the runs as a job array")
    placement = elastic.place(args.gpus, args.nproc, args.cpu)
    if placement.single_process and "train.reuse_freed_memory" in plan.grid:
        # The runs share this process, and glibc's malloc cannot be given its defaults back.
        raise UserError("train.reuse_freed_memory: one process trains every run here, and the setting lasts for the process: "
                        "compare it with separate launch commands, or sweep it with --nproc N or --slurm (a process per run)")  # fmt: skip
    log.info("sweep folder: %s (%d runs)", plan.folder, len(plan.runs))
    source = f"{args.recipe} (sweep {plan.folder})"
    return execute.run_locally(
        plan, lambda recipe, run, resume_from: train_in(recipe, run, resume_from, placement, source)
    )
