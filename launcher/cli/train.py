"""`launch RECIPE`: a run folder, the resume policy, and training in this process or in elastic workers."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from torch.distributed.elastic.multiprocessing.api import SignalException

from launcher import checkpoint, rundir
from launcher.cli.parser import SLURM_FLAGS, trains_here
from launcher.cli.recipe_checks import problems_in
from launcher.config.loading import dump_recipe
from launcher.config.schema import Recipe
from launcher.config.yaml_io import read_yaml
from launcher.distributed import elastic, flight_recorder
from launcher.distributed.runtime import single_process
from launcher.distributed.watchdog import last_seen
from launcher.distributed.worker import worker
from launcher.errors import USAGE_ERROR, RunFailed, UserError
from launcher.tracking import logs
from launcher.tracking.run_logger import where_to_look
from launcher.training.progress import Progress, is_complete, longer_run
from launcher.training.stopping import StopRequests, TrainingStopped, exit_code, signal_names
from launcher.training.summary import RunSummary
from launcher.training.trainer import recipe_differences
from launcher.training.trainer import train as run_training

if TYPE_CHECKING:
    from launcher.distributed.elastic import Placement
    from launcher.rundir import RunDir
log = logging.getLogger("launcher")


# What a run trains: resuming with other values here would be another run under the old name.
WHAT_IT_TRAINS = ("data", "model", "loss", "optimizer")
# Keys in those sections that change how it is trained, not what: the same weights come out.
HOW_IT_RUNS = ("model.activation_checkpointing",)


def train(recipe: Recipe, args: argparse.Namespace) -> int:
    """Train in this process, or in workers started by torch.distributed's elastic agent."""

    given = [f"--{key.replace('_', '-')}" for key in (*SLURM_FLAGS, "wait") if getattr(args, key) not in (None, False)]
    if given:
        hint = " (to join nodes yourself: --nnodes, torchrun's flag)" if args.nodes is not None else ""
        raise UserError(f"{', '.join(given)}: for --slurm runs only; add --slurm to submit the run{hint}")
    placement = placement_of(args)
    if recipe.sweep:
        log.info(
            "this recipe has a sweep: section; this is one run with the recipe's own values (launch sweep runs the grid)"
        )
    if args.resume is not None:
        target = None if args.resume == "latest" else args.resume
        run, resume_from = rundir.find_resume(target, recipe.run.output, recipe.run.resolved_name)
        refuse_a_different_run(recipe, run, args.force)
        if complete := completed_run(recipe, run, resume_from, args.recipe):
            log.info("%s", complete)
            return 0
        return train_in(recipe, run, resume_from, placement, source=args.recipe)
    # Every node of a multi-node run must write to the same folder: its name is the run's id.
    run = rundir.new_run_dir(
        recipe.run.output, recipe.run.resolved_name, run_id=placement.rdzv_id if placement.multi_node else None
    )
    try:
        return train_in(recipe, run, None, placement, source=args.recipe)
    except UserError as error:
        if error.exit_code == USAGE_ERROR and not placement.multi_node and run.discard_if_untrained():
            log.info("nothing was trained: the run folder %s is removed", run.path)
        raise


def checks_in_workers(command: str, args: argparse.Namespace) -> bool:
    """Whether this command trains in workers on this machine, which then run the recipe checks
    that import the user's modules (not the SLURM paths: a job must not wait in the queue to fail;
    not --dry-run, which builds here)."""
    return trains_here(command, args) and not placement_of(args).single_process


def placement_of(args: argparse.Namespace) -> Placement:
    """Where `launch RECIPE` trains, from its flags (elastic.place refuses what cannot be done here)."""
    return elastic.place(
        args.gpus, args.nproc, args.cpu, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id, max_restarts=args.max_restarts,
    )  # fmt: skip


def completed_run(recipe: Recipe, run: RunDir, checkpoint_path: Path, source: str) -> str | None:
    """Where the checkpoint `--resume` found is the end of the run this recipe asks for (its
    train.epochs or train.max_steps done), what to tell the user instead of starting workers."""

    saved = checkpoint.progress_of(checkpoint_path)
    cfg, progress = recipe.train, Progress(**saved) if saved is not None else None
    if progress is None or not is_complete(progress, cfg):
        return None  # or unreadable: the workers say why, with the checksum, and fall back
    metrics = ""
    if run.metrics.exists():
        metrics = f"; {_metrics_line(RunSummary.read(run.metrics))} ({run.metrics})"
    return (
        f"{run.path} is complete: epoch {progress.epoch}, step {progress.step} of train.epochs={cfg.epochs}, "
        f"train.max_steps={cfg.max_steps}{metrics}; nothing to do. To train it longer: "
        f"launch {source} --resume {run.path} {longer_run(progress, cfg)}"
    )


def train_in(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement, source: str) -> int:
    """Train `recipe` in the run folder `run` (from the checkpoint `resume_from`, if given), where
    `placement` says; the run's messages go to its log.txt. 0, or the exit code of a stop signal."""

    logs.setup_text_log(run.log_file, console=True)
    if resume_from is None:  # a resumed run's recipe.yaml is rewritten once the checkpoint has loaded
        dump_recipe(recipe, run.recipe, header=f"# resolved from {source}; run it again with: launch {run.recipe}\n")
    log.info("run folder: %s", run.path)
    for tracker, command in where_to_look(recipe.logging, run, Path(recipe.run.output)):
        log.info("%s: %s", tracker, command)
    if placement.single_process:
        return _train_in_this_process(recipe, run, resume_from, placement)
    return _train_in_workers(recipe, run, resume_from, placement, source)


def _train_in_this_process(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement) -> int:

    runtime = single_process(placement.device_type == "cpu")
    stop = StopRequests(runtime.device, patience_s=recipe.distributed.stall_s, second_interrupt_quits=True)
    with stop.catching():
        try:
            summary = run_training(recipe, runtime, run, resume_from, stop)
        except TrainingStopped as stopped:
            if stopped.pruned:  # what its search asked for: no failure, nothing to resume
                log.info("%s", stopped)
                return 0
            log.error("%s; go on with: launch %s --resume %s", stopped, run.recipe, run.path)
            return stopped.exit_code
        _say_done(summary, run)
        if stop.reasons:  # the signal came after the last step had been taken
            log.error("%s came after the run had completed: nothing is left to do", signal_names(stop.reasons))
            return exit_code(stop.reasons)
    return 0


def _train_in_workers(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement, source: str) -> int:
    """Train in workers the elastic agent starts. The recipe checks beyond the schema run in each,
    first thing: `launch` leaves them to the workers (they import the user's modules anyway), and
    where it ran them itself (a sweep's runs), they find the modules imported already."""

    if placement.device_type == "cpu":
        log.info(
            "%d CPU worker(s) per node with gloo: this exercises distributed training; on a CPU one process "
            "using every core is faster", placement.nproc_per_node,
        )  # fmt: skip
    run_id = placement.rdzv_id or elastic.new_run_id()
    started = time.time()
    try:
        results = elastic.run_workers(
            placement, run_id, recipe.distributed.timeout_s, worker, recipe.to_dict(), str(run.path),
            str(resume_from) if resume_from else None, placement.device_type, problems_in, source,
        )  # fmt: skip
    except elastic.WorkersFailed as failed:
        seen = last_seen(run.heartbeats)
        where = f"\nwhere the ranks were: {'; '.join(seen)} (stacks of stalled ranks: log.rank<N>.txt)" if seen else ""
        dumps = flight_recorder.pointer(run.path)
        raise RunFailed(f"{failed}{where}" + (f"\n{dumps}" if dumps else "")) from None
    except SignalException as signalled:
        # Rank 0 writes metrics.json after the last checkpoint is complete: the run is whole.
        if not (run.metrics.exists() and run.metrics.stat().st_mtime >= started):
            raise
        name = signal.Signals(signalled.sigval).name
        log.error("%s came after the run had completed (%s): nothing is left to do", name, run.metrics)
        return 128 + signalled.sigval
    if 0 not in results:  # another node runs rank 0 and reports there
        log.info("this node's workers finished; rank 0's node has the summary in %s", run.metrics)
        return 0
    if results[0] is None:  # its search pruned it (training/pruning.py)
        log.info("the run was pruned by its search: %s", run.path / "pruned.json")
        return 0
    _say_done(results[0], run)
    return 0


def _metrics_line(summary: RunSummary) -> str:
    """The measured metrics of a summary (`val/loss 0.0311  val/acc1 0.9944 ...`), not its epoch and step."""
    return "  ".join(f"{k} {v:.4f}" for k, v in summary.metrics.items())


def _say_done(summary: RunSummary, run: RunDir) -> None:
    best = summary.best
    log.info("done in %.1f s: %s", summary.wall_time_s, _metrics_line(summary))
    if best is not None and best.value is not None:
        log.info("best %s %.4f at step %d: %s", best.metric, best.value, best.step, run.checkpoints / "best.pt")
    log.info("checkpoints: %s", run.checkpoints)
    log.info("metrics: %s", run.metrics)


def refuse_a_different_run(recipe: Recipe, run: RunDir, force: bool) -> None:
    """Before anything starts: resuming with a recipe whose data, model, loss or optimizer differ
    from the run's (its recipe.yaml) needs --force; other differences are warned about later."""

    if not run.recipe.exists():
        return
    differences = [
        d
        for d in recipe_differences(read_yaml(run.recipe), recipe.to_dict())
        if d.split(".")[0].split(":")[0] in WHAT_IT_TRAINS and d.split(":")[0] not in HOW_IT_RUNS
    ]
    if differences and not force:
        raise UserError(
            f"--resume {run.path}: this recipe trains something else than the run did:\n  "
            + "\n  ".join(differences)
            + "\nresume with the run's own recipe (launch "
            + str(run.recipe)
            + " --resume), or add --force to go on anyway"
        )
    for difference in differences:
        log.warning("--force: resuming with %s", difference)
