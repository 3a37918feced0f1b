"""The `launch` command: what runs, and where.

    launch RECIPE [key.sub=value ...] [--cpu] [--resume [PATH]] [--dry-run]
    launch RECIPE --gpus N | --nproc N [--nnodes N --rdzv-endpoint HOST:PORT --rdzv-id ID] [--max-restarts N]
    launch RECIPE --slurm [--nodes N] [--gpus N | --nproc N] [--partition P --time T ...] [--wait]
    launch status|logs|cancel RUN_FOLDER_OR_JOB_ID        (logs: [--rank N] [--follow])
    launch sweep RECIPE key=a,b,c ... [--cpu | --nproc N | --slurm ... --parallel N [--wait]] [--metric M --mode max|min]
    launch sweep SWEEP_FOLDER                             (rewrite its results.csv/json, print its table)
    launch report RUN_OR_SWEEP_FOLDER [--out DIR]
    launch check RECIPE [key.sub=value ...]
    launch eval RECIPE --checkpoint PATH [key.sub=value ...]
    launch predict RECIPE --checkpoint PATH FILE... [key.sub=value ...]
    launch schema

Flags say where and how a run goes; what it trains is in the recipe, and any recipe key can be
overridden after it as key.sub=value (command line > recipe file > defaults).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.errors import RUN_FAILED, USAGE_ERROR, UserError
from launcher.recipe import Recipe, RecipeError, dump_recipe, is_override, json_schema, load_recipe, time_limit_minutes

if TYPE_CHECKING:
    from launcher.elastic import Placement
    from launcher.rundir import RunDir

log = logging.getLogger("launcher")

COMMANDS = ("train", "sweep", "check", "eval", "predict", "report", "schema", "status", "logs", "cancel")
JOB_COMMANDS = ("status", "logs", "cancel")
SLURM_FLAGS = ("nodes", "partition", "time", "account", "qos", "constraint", "mem", "cpus_per_task")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch" if command == "train" else f"launch {command}",
        description=__doc__ if command == "train" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: any recipe key as key.sub=value, the value read as YAML (train.epochs=4, scheduler=null).",
    )
    if command == "schema":
        return parser
    if command in JOB_COMMANDS:
        parser.add_argument(
            "target", metavar="RUN_FOLDER_OR_JOB_ID", help="a run folder of `launch --slurm`, or a SLURM job id"
        )
        if command == "logs":
            parser.add_argument("--rank", type=int, default=0, help="whose log (default 0)")
            parser.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
        return parser
    if command == "report":
        parser.add_argument(
            "target", metavar="RUN_OR_SWEEP_FOLDER", help="a run folder, or a sweep folder (with sweep.json)"
        )
        parser.add_argument(
            "--out", type=Path, metavar="DIR", help="where the plots and index.html go (default: <folder>/report)"
        )
        return parser
    sweeping = command == "sweep"
    parser.add_argument(
        "recipe", metavar="SWEEP_FOLDER_OR_RECIPE" if sweeping else "RECIPE",
        help="the recipe (YAML); or a sweep folder: rewrite its results.csv/json and print its table, run nothing"
        if sweeping else "the recipe (YAML)",
    )  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value",
        help="recipe overrides; key=a,b,c (a comma at the top level of the value) sweeps over a, b and c" if sweeping else "recipe overrides",
    )  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run on the CPU in one process, even where GPUs exist")
    if command in ("train", "sweep"):
        if command == "train":
            parser.add_argument(
                "--resume", nargs="?", const="latest", metavar="PATH",
                help="continue the latest run of this recipe, or the run folder or checkpoint PATH",
            )  # fmt: skip
            parser.add_argument(
                "--dry-run", action="store_true", help="same as `launch check`: validate, build, one step"
            )
        parser.add_argument(
            "--force", action="store_true",
            help="resume the sweep's unfinished runs even where their data, model, loss or optimizer differ from this recipe's" if sweeping
            else "--resume even where the recipe's data, model, loss or optimizer differ from the run's",
        )  # fmt: skip
        where = parser.add_argument_group(
            "workers (torchrun's vocabulary)" + ("; each run of the sweep, one after another" if sweeping else "")
        )
        where.add_argument(
            "--gpus",
            type=int,
            metavar="N",
            help="one DDP worker per GPU on this node, NCCL (default: all visible GPUs)",
        )
        where.add_argument(
            "--nproc", "--nproc-per-node", type=int, metavar="N",
            help="N CPU workers on this node, gloo: exercises distributed training, not faster than one process",
        )  # fmt: skip
        if command == "train":
            where.add_argument("--nnodes", default="1", metavar="N|MIN:MAX", help="nodes in the run (default 1)")
            where.add_argument(
                "--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-node run, the same on every node"
            )
            where.add_argument(
                "--rdzv-id", metavar="ID", help="the run's id, the same on every node (names the run folder)"
            )
            where.add_argument(
                "--max-restarts",
                type=int,
                default=0,
                metavar="N",
                help="restart the workers up to N times after a failure, resuming from the latest checkpoint",
            )
        cluster = parser.add_argument_group(
            "SLURM (sbatch's vocabulary; also the recipe's slurm: section, which these flags override)"
        )
        cluster.add_argument(
            "--slurm", action="store_true",
            help="submit the runs as one SLURM job array and return" if sweeping
            else "submit the run to SLURM (one task per GPU, or --nproc CPU tasks, per node) and return",
        )  # fmt: skip
        cluster.add_argument("--nodes", type=int, metavar="N", help="nodes of the SLURM job")
        cluster.add_argument("--partition", metavar="P")
        cluster.add_argument("--time", metavar="T", help="time limit: minutes, H:MM:SS or D-H:MM:SS")
        cluster.add_argument("--account", metavar="A")
        cluster.add_argument("--qos", metavar="Q")
        cluster.add_argument("--constraint", metavar="C")
        cluster.add_argument("--mem", metavar="SIZE", help="memory per node, e.g. 64G")
        cluster.add_argument("--cpus-per-task", type=int, metavar="N")
        cluster.add_argument(
            "--wait", action="store_true",
            help="wait until every run's job has ended, then write the results" if sweeping
            else "follow rank 0's log until the job ends; exit with the job's status",
        )  # fmt: skip
        if sweeping:
            cluster.add_argument(
                "--parallel",
                type=int,
                metavar="N",
                help="at most N runs of the array at once (default: as SLURM allows)",
            )
            sweep_options = parser.add_argument_group("the sweep")
            sweep_options.add_argument(
                "--metric", metavar="TAG", help="what the table sorts by (default val/acc1 if measured, else val/loss)"
            )
            sweep_options.add_argument(
                "--mode",
                choices=("max", "min"),
                help="max: higher is better (default for accuracies), min (default for losses)",
            )
            sweep_options.add_argument(
                "--name",
                metavar="ID",
                help="the sweep folder is sweep-ID (default: a hash of the recipe path, the grid and the other overrides)",
            )
        else:
            cluster.add_argument(
                "--srun",
                action="store_true",
                help="run as one task of an srun step, in a job script of your own (slurm/train.sbatch)",
            )
    if command in ("eval", "predict"):
        parser.add_argument(
            "--checkpoint",
            required=True,
            type=Path,
            help="a checkpoint file (.pt), or a run folder (its newest checkpoint)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`launch ...`: the exit code is 0, 2 for input to change (a recipe, a flag), 1 for a run
    that failed, or 128 + the signal that stopped it."""
    from launcher import logs

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    args = _parser(command).parse_intermixed_args(_bare_resume(argv))
    if command == "schema":  # before importing torch: editors call this
        print(json.dumps(json_schema(), indent=2))
        return 0
    if command in JOB_COMMANDS:
        return follow_job(command, args)
    from torch.distributed.elastic.multiprocessing.api import SignalException

    logs.setup_text_log(None, console=True)
    try:
        return _run(command, args)
    except (RecipeError, UserError, FileNotFoundError, KeyboardInterrupt, SignalException) as error:
        return _report_failure(error)
    except Exception:
        log.exception("error: the run failed; the traceback follows")
        return RUN_FAILED
    finally:
        logs.close_text_log()


def _run(command: str, args: argparse.Namespace) -> int:
    """The command, from the parsed command line."""
    from launcher import components

    if command in ("report", "sweep"):
        return report(args) if command == "report" else sweep(args)
    files = [o for o in args.overrides if Path(o).exists() or not is_override(o)] if command == "predict" else []
    if command == "predict" and not files:
        raise UserError("launch predict: name at least one image or CSV file to predict")
    recipe = load_recipe(args.recipe, [o for o in args.overrides if o not in files], check=components.problems_in)
    if command == "check" or getattr(args, "dry_run", False):
        return check(recipe)
    if command in ("eval", "predict"):
        return (
            evaluate(recipe, args.checkpoint, args.cpu)
            if command == "eval"
            else predict(recipe, args.checkpoint, files, args.cpu)
        )
    if args.slurm or args.srun:
        return submit(recipe, args) if args.slurm else srun_task(recipe, args)
    return train(recipe, args)


def _report_failure(error: BaseException) -> int:
    """One line for what went wrong, no traceback; the exit code that says what kind of thing it was."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    if isinstance(error, KeyboardInterrupt):
        log.error("interrupted")
        return 130
    if isinstance(error, SignalException):  # the elastic agent passed SIGTERM/SIGINT/SIGHUP on to the workers
        log.error(
            "stopped by %s: the workers stopped at the end of a step, with a checkpoint of it if they had started "
            "training (see the log above); go on with launch --resume", signal.Signals(error.sigval).name,
        )  # fmt: skip
        return 128 + error.sigval
    log.error("error: %s", error)
    if isinstance(error, RecipeError):
        return USAGE_ERROR
    return error.exit_code if isinstance(error, UserError) else RUN_FAILED


def _bare_resume(argv: list[str]) -> list[str]:
    """`--resume` followed by the recipe or an override gave no PATH: don't let it take them."""
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        following = out[i + 1]
        if token == "--resume" and (
            following.endswith((".yaml", ".yml")) or is_override(following) or following.startswith("-")
        ):
            out[i] = "--resume=latest"
    return out


def train(recipe: Recipe, args: argparse.Namespace) -> int:
    """Train in this process, or in workers started by torch.distributed's elastic agent."""
    from launcher import elastic, rundir

    given = [f"--{key.replace('_', '-')}" for key in (*SLURM_FLAGS, "wait") if getattr(args, key) not in (None, False)]
    if given:
        hint = " (to join nodes yourself: --nnodes, torchrun's flag)" if args.nodes is not None else ""
        raise UserError(f"{', '.join(given)}: for --slurm runs only; add --slurm to submit the run{hint}")
    placement = elastic.place(
        args.gpus, args.nproc, args.cpu, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id, max_restarts=args.max_restarts,
    )  # fmt: skip
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


def completed_run(recipe: Recipe, run: RunDir, checkpoint_path: Path, source: str) -> str | None:
    """Where the checkpoint `--resume` found is the end of the run this recipe asks for (its
    train.epochs or train.max_steps done), what to tell the user instead of starting workers."""
    from launcher import checkpoint
    from launcher.train import Progress, is_complete, longer_run

    saved = checkpoint.progress_of(checkpoint_path)
    cfg, progress = recipe.train, Progress(**saved) if saved is not None else None
    if progress is None or not is_complete(progress, cfg):
        return None  # or unreadable: the workers say why, with the checksum, and fall back
    metrics = ""
    if run.metrics.exists():
        metrics = f"; {_metrics_line(json.loads(run.metrics.read_text()).get('final', {}))} ({run.metrics})"
    return (
        f"{run.path} is complete: epoch {progress.epoch}, step {progress.step} of train.epochs={cfg.epochs}, "
        f"train.max_steps={cfg.max_steps}{metrics}; nothing to do. To train it longer: "
        f"launch {source} --resume {run.path} {longer_run(progress, cfg)}"
    )


def train_in(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement, source: str) -> int:
    """Train `recipe` in the run folder `run` (from the checkpoint `resume_from`, if given), where
    `placement` says; the run's messages go to its log.txt. 0, or the exit code of a stop signal."""
    from launcher import logs

    logs.setup_text_log(run.log_file, console=True)
    if resume_from is None:  # a resumed run's recipe.yaml is rewritten once the checkpoint has loaded
        dump_recipe(recipe, run.recipe, header=f"# resolved from {source}; run it again with: launch {run.recipe}\n")
    log.info("run folder: %s", run.path)
    log.info("TensorBoard: tensorboard --logdir %s", run.tensorboard(recipe.logging.tensorboard_dir))
    if placement.single_process:
        return _train_in_this_process(recipe, run, resume_from, placement)
    return _train_in_workers(recipe, run, resume_from, placement)


def _train_in_this_process(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement) -> int:
    from launcher.runtime import single_process
    from launcher.stopping import StopRequests, TrainingStopped, exit_code, signal_names
    from launcher.train import train as run_training

    runtime = single_process(placement.device_type == "cpu")
    stop = StopRequests(runtime.device, patience_s=recipe.distributed.stall_s, second_interrupt_quits=True)
    with stop.catching():
        try:
            summary = run_training(recipe, runtime, run, resume_from, stop)
        except TrainingStopped as stopped:
            log.error("%s; go on with: launch %s --resume %s", stopped, run.recipe, run.path)
            return stopped.exit_code
        _say_done(summary, run)
        if stop.reasons:  # the signal came after the last step had been taken
            log.error("%s came after the run had completed: nothing is left to do", signal_names(stop.reasons))
            return exit_code(stop.reasons)
    return 0


def _train_in_workers(recipe: Recipe, run: RunDir, resume_from: Path | None, placement: Placement) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from launcher import elastic
    from launcher.errors import RunFailed
    from launcher.watchdog import last_seen
    from launcher.worker import worker

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
            str(resume_from) if resume_from else None, placement.device_type,
        )  # fmt: skip
    except elastic.WorkersFailed as failed:
        seen = last_seen(run.heartbeats)
        where = f"\nwhere the ranks were: {'; '.join(seen)} (stacks of stalled ranks: log.rank<N>.txt)" if seen else ""
        raise RunFailed(f"{failed}{where}") from None
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
    _say_done(results[0], run)
    return 0


def _metrics_line(final: dict[str, float]) -> str:
    """The measured metrics of a summary's `final` (`val/loss 0.0311  val/acc1 0.9944 ...`), not its epoch and step."""
    return "  ".join(f"{k} {v:.4f}" for k, v in final.items() if "/" in k)


def _say_done(summary: dict, run: RunDir) -> None:
    final, best = summary["final"], summary["best"]
    log.info("done in %.1f s: %s", summary["wall_time_s"], _metrics_line(final))
    if best and best["value"] is not None:
        log.info(
            "best %s %.4f at step %d: %s", best["metric"], best["value"], best["step"], run.checkpoints / "best.pt"
        )
    log.info("checkpoints: %s", run.checkpoints)
    log.info("metrics: %s", run.metrics)


# What a run trains: resuming with other values here would be another run under the old name.
WHAT_IT_TRAINS = ("data", "model", "loss", "optimizer")


def sweep(args: argparse.Namespace) -> int:
    """`launch sweep`: every combination of the grid, each an ordinary run: here one after another,
    as `launch` trains (train_in), or as one SLURM job array. The rules are in launcher/sweep.py."""
    from launcher import components, elastic, slurm
    from launcher import sweep as sweeps

    if Path(args.recipe).is_dir():
        running = [f"--{key.replace('_', '-')}" for key in ("cpu", "gpus", "nproc", "slurm", "parallel", "wait", "force", "name", *SLURM_FLAGS)
                   if getattr(args, key) not in (None, False)]  # fmt: skip
        if args.overrides or running:
            raise UserError(
                f"launch sweep {args.recipe}: a sweep folder only gets its results rewritten (--metric, --mode); "
                f"it takes no {' or '.join(filter(None, ['overrides' if args.overrides else '', ', '.join(running)]))}: "
                "to run the sweep, give its recipe and grid again"
            )
        return sweeps.show_results(sweeps.load(Path(args.recipe), args.metric, args.mode))
    plan = sweeps.plan(
        args.recipe, args.overrides, components.problems_in, metric=args.metric, mode=args.mode, name=args.name
    )
    for recipe, run in sweeps.existing_runs(plan):
        refuse_a_different_run(recipe, run, args.force)
    if args.slurm:
        if args.cpu:
            raise UserError("--slurm places the tasks itself: drop --cpu (--nproc N: CPU tasks per node)")
        flags = {"gpus": args.gpus, "nproc": args.nproc, **{key: getattr(args, key) for key in SLURM_FLAGS}}
        plan.recipes = {name: slurm.with_flags(recipe, flags) for name, recipe in plan.recipes.items()}
        return sweeps.submit(plan, args.parallel, args.wait)
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
    return sweeps.run_locally(
        plan, lambda recipe, run, resume_from: train_in(recipe, run, resume_from, placement, source)
    )


def report(args: argparse.Namespace) -> int:
    """`launch report`: plots and an index.html of a run or a sweep (launcher/report.py)."""
    from launcher.report import write_report

    for path in write_report(Path(args.target), args.out):
        print(path)
    return 0


def refuse_a_different_run(recipe: Recipe, run: RunDir, force: bool) -> None:
    """Before anything starts: resuming with a recipe whose data, model, loss or optimizer differ
    from the run's (its recipe.yaml) needs --force; other differences are warned about later."""
    from launcher.recipe import read_yaml
    from launcher.train import recipe_differences

    if not run.recipe.exists():
        return
    differences = [
        d
        for d in recipe_differences(read_yaml(run.recipe), recipe.to_dict())
        if d.split(".")[0].split(":")[0] in WHAT_IT_TRAINS
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


def submit(recipe: Recipe, args: argparse.Namespace) -> int:
    """`--slurm`: check, create the run folder, submit; say where to look; with --wait, follow the job."""
    from launcher import rundir, slurm

    if args.nnodes != "1" or args.rdzv_endpoint or args.rdzv_id or args.max_restarts or args.cpu or args.srun:
        raise UserError(
            "--slurm places the tasks itself: drop --nnodes, --rdzv-*, --max-restarts, --cpu and --srun (SLURM requeues, see slurm.max_requeues)"
        )
    recipe = slurm.with_flags(
        recipe, {"gpus": args.gpus, "nproc": args.nproc, **{key: getattr(args, key) for key in SLURM_FLAGS}}
    )
    slurm.check_resources(recipe.slurm)
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
        slurm.submit(recipe, run)
        job = slurm.find_job(str(run.path))
    except UserError:
        if args.resume is None:  # SLURM refused it: no run folder without a job
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    s = recipe.slurm
    print(f"submitted job {job.job_id}: {s.nodes} node(s) x {slurm.tasks_per_node(s)} task(s) ({'GPU' if s.gpus else 'CPU'}), "
          f"partition {s.partition or '(default)'}, time limit {time_limit_minutes(s.time)} min")  # fmt: skip
    print(f"run folder:  {run.path}")
    print(f"logs:        {job.log_file(0)} (rank 0; rank N: {job.job_id}_N_log.out)")
    print(f"TensorBoard: tensorboard --logdir {run.tensorboard(recipe.logging.tensorboard_dir)}")
    print(f"follow it:   launch status {run.path}  |  launch logs {run.path} --follow  |  launch cancel {run.path}")
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        for line in slurm.follow(job):
            print(line, end="", flush=True)
    except KeyboardInterrupt:
        log.error("stopped following job %s; it goes on running (stop it with: launch cancel %s)", job.job_id, run.path)
        return 130
    state = slurm.wait_until_ended(job.job_id)
    log.info("job %s ended: %s (exit code %s)", job.job_id, state["State"], state.get("ExitCode"))
    if state["State"] != "COMPLETED":
        for failure in slurm.failures(job):
            log.error("failed: %s", failure)
    return slurm.exit_status(state)


def srun_task(recipe: Recipe, args: argparse.Namespace) -> int:
    """`--srun`: one task of an srun step; SLURM's variables say which."""
    import os

    import torch

    from launcher import slurm_job

    if "SLURM_PROCID" not in os.environ or "SLURM_JOB_ID" not in os.environ:
        raise UserError(
            "--srun runs as one task of an srun step, inside a SLURM job (see slurm/train.sbatch); to submit a job: --slurm"
        )
    use_cuda = torch.cuda.is_available() and not args.cpu and args.nproc is None
    slurm_job.srun_task(recipe, "cuda" if use_cuda else "cpu")
    return 0


def follow_job(command: str, args: argparse.Namespace) -> int:
    """`launch status|logs|cancel RUN_FOLDER_OR_JOB_ID`."""
    from launcher import logs, slurm

    logs.setup_text_log(None, console=True)
    try:
        job = slurm.find_job(args.target)
        if command == "status":
            print("\n".join(slurm.describe(job)))
        elif command == "logs":
            if not job.log_file(args.rank).exists() and not args.follow:
                raise UserError(
                    f"no log yet at {job.log_file(args.rank)} (job {job.job_id}: {slurm.job_state(job.job_id)['State']})"
                )
            for line in slurm.follow(job, args.rank, keep_following=args.follow):
                print(line, end="", flush=True)
        else:
            slurm.cancel(job)
        return 0
    except UserError as error:
        log.error("error: %s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        logs.close_text_log()


def check(recipe: Recipe) -> int:
    """Validate, build what training builds, run one forward/backward step, and say what was built."""
    import torch
    import yaml

    from launcher.models import count_parameters
    from launcher.data import num_samples
    from launcher.runtime import single_process
    from launcher.train import setup

    started = time.perf_counter()
    print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
    s = setup(
        recipe.model_copy(update={"data": recipe.data.model_copy(update={"num_workers": 0})}), single_process(True)
    )
    inputs, targets = next(iter(s.train_batches))
    outputs = s.model(inputs)
    loss = s.loss_fn(outputs, targets)
    loss.backward()
    total, trainable = count_parameters(s.net)
    print(
        f"# data: {num_samples(s.data.train)} training / {num_samples(s.data.val)} validation samples, {s.data.info.num_classes} classes"
    )
    print(f"# model: {recipe.model.name}, {total:,} parameters ({trainable:,} trainable)")
    print(f"# one batch: inputs {_shape(inputs)}, targets {_shape(targets)}, outputs {_shape(outputs)}")
    print(f"# one forward/backward step: loss {loss.item():.4f}, finite: {bool(torch.isfinite(loss))}")
    print(
        f"# {s.epochs} epochs of {s.steps_per_epoch} steps, {s.max_steps} steps in all; ok in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _shape(value: object) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    return f"{list(shape)} {str(dtype).removeprefix('torch.')}" if shape is not None else type(value).__name__


def evaluate(recipe: Recipe, checkpoint_path: Path, force_cpu: bool) -> int:
    from launcher.inference import evaluate_checkpoint
    from launcher.runtime import single_process

    metrics = evaluate_checkpoint(recipe, checkpoint_path, single_process(force_cpu).device)
    for name, value in metrics.items():
        print(f"{name} {value:.6f}")
    return 0


def predict(recipe: Recipe, checkpoint_path: Path, files: list[str], force_cpu: bool) -> int:
    from launcher.inference import predict as run_predict
    from launcher.runtime import single_process

    for what, name, probability in run_predict(recipe, checkpoint_path, files, single_process(force_cpu).device):
        print(f"{what}\t{name}\t{probability:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
