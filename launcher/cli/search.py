"""`launch search`: plan the space, then run the trials here or as SLURM job arrays."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from launcher.cli.parser import SLURM_FLAGS
from launcher.cli.recipe_checks import problems_in
from launcher.cli.train import train_in
from launcher.distributed import elastic
from launcher.errors import UserError
from launcher.search import execute, planning
from launcher.slurm import resources

log = logging.getLogger("launcher")
DEFAULT_TRIALS = 20
DEFAULT_PARALLEL = 4  # trials per SLURM job array


def search(args: argparse.Namespace) -> int:
    """`launch search`: trials drawn by Optuna, each an ordinary run: here one after another, as
    `launch` trains (train_in), or as SLURM job arrays. The rules are in launcher/search/planning.py."""

    if importlib.util.find_spec("optuna") is None:
        raise UserError("launch search needs Optuna, which is not installed: pip install 'launcher[search]'")
    if Path(args.recipe).is_dir():
        if args.overrides:
            raise UserError(
                f"launch search {args.recipe}: a search folder goes on with its own space and recipe: give no overrides"
            )
        plan = planning.load(Path(args.recipe), problems_in, args.trials)
    else:
        options = planning.Options(
            args.trials or DEFAULT_TRIALS, args.sampler, args.pruner, args.metric, args.mode, args.name
        )
        plan = planning.plan(args.recipe, args.overrides, options, problems_in)
    log.info(
        "search folder: %s (%d trials, %s sampler, %s pruner)",
        plan.folder,
        plan.spec.trials,
        plan.spec.sampler,
        plan.spec.pruner,
    )
    if args.slurm:
        if args.cpu:
            raise UserError("--slurm places the tasks itself: drop --cpu (--nproc N: CPU tasks per node)")
        flags = {"gpus": args.gpus, "nproc": args.nproc, **{key: getattr(args, key) for key in SLURM_FLAGS}}
        return execute.submit_batches(
            plan, args.parallel or DEFAULT_PARALLEL, lambda recipe: resources.with_flags(recipe, flags)
        )
    given = [
        f"--{key.replace('_', '-')}" for key in (*SLURM_FLAGS, "parallel") if getattr(args, key) not in (None, False)
    ]
    if given:
        raise UserError(f"{', '.join(given)}: for --slurm searches only; add --slurm to run the trials as job arrays")
    placement = elastic.place(args.gpus, args.nproc, args.cpu)
    source = f"{plan.spec.recipe} (search {plan.folder})"
    return execute.run_locally(
        plan, lambda recipe, run, resume_from: train_in(recipe, run, resume_from, placement, source)
    )
