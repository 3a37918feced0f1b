"""The command line: torchrun's flag names for where a run goes, sbatch's for SLURM; what a run
trains is in the recipe. `launch --help` shows USAGE."""

from __future__ import annotations

import argparse
from pathlib import Path

USAGE = """The `launch` command: what runs, and where.

    launch RECIPE [key.sub=value ...] [--cpu] [--resume [PATH]] [--dry-run]
    launch RECIPE --gpus N | --nproc N [--nnodes N --rdzv-endpoint HOST:PORT --rdzv-id ID] [--max-restarts N]
    launch RECIPE --slurm [--nodes N] [--gpus N | --nproc N] [--partition P --time T ...] [--wait]
    launch status|logs|cancel RUN_FOLDER_OR_JOB_ID        (logs: [--rank N] [--follow])
    launch sweep RECIPE key=a,b,c ... [--cpu | --nproc N | --slurm ... --parallel N [--wait]] [--metric M --mode max|min]
    launch sweep SWEEP_FOLDER                             (rewrite its results.csv/json, print its table)
    launch search RECIPE key=loguniform:A:B key=choice:a,b ... --trials N [--sampler tpe|random]
        [--pruner asha|median|none] [--cpu | --nproc N | --slurm ... --parallel N] [--metric M --mode max|min]
    launch search SEARCH_FOLDER [--trials N]              (go on with its search)
    launch report RUN_OR_SWEEP_FOLDER [--out DIR]
    launch check RECIPE [key.sub=value ...]
    launch eval RECIPE --checkpoint PATH [key.sub=value ...]
    launch predict RECIPE --checkpoint PATH FILE... | --prompt TEXT ... [key.sub=value ...]
    launch export RUN_FOLDER_OR_CHECKPOINT --out FILE      (the model's weights, one file plain PyTorch loads)
    launch schema

Flags say where and how a run goes; what it trains is in the recipe, and any recipe key can be
overridden after it as key.sub=value (command line > recipe file > defaults).
"""
SLURM_FLAGS = ("nodes", "partition", "time", "account", "qos", "constraint", "mem", "cpus_per_task")
COMMANDS = (
    "train",
    "sweep",
    "search",
    "check",
    "eval",
    "predict",
    "export",
    "report",
    "schema",
    "status",
    "logs",
    "cancel",
)
JOB_COMMANDS = ("status", "logs", "cancel")


def trains_here(command: str, args: argparse.Namespace) -> bool:
    """From the flags alone: `launch RECIPE` trains on this machine (not submitted to SLURM, not
    a SLURM job's task, not --dry-run, which only builds)."""
    return command == "train" and not (args.slurm or args.srun or args.dry_run)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one command (`train` is the bare `launch RECIPE`)."""
    parser = argparse.ArgumentParser(
        prog="launch" if command == "train" else f"launch {command}",
        description=USAGE if command == "train" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: any recipe key as key.sub=value, the value read as YAML (train.epochs=4, scheduler=null).",
    )
    if command in JOB_COMMANDS:
        _job_arguments(parser, command)
    elif command == "report":
        _report_arguments(parser)
    elif command == "export":
        parser.add_argument(
            "target", metavar="RUN_FOLDER_OR_CHECKPOINT", type=Path,
            help="a checkpoint (a file, or a sharded checkpoint's folder), or a run folder: its newest checkpoint",
        )  # fmt: skip
        parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="where the state dict goes (.pt)")
    elif command != "schema":
        _recipe_arguments(parser, command)
    if command in ("train", "sweep", "search"):
        _run_arguments(parser, command)
        _worker_arguments(parser, command)
        _slurm_arguments(parser, command)
    if command in ("sweep", "search"):
        _sweep_arguments(parser)
    if command == "search":
        _search_arguments(parser)
    if command in ("eval", "predict"):
        parser.add_argument(
            "--checkpoint", required=True, type=Path,
            help="a checkpoint file (.pt), or a run folder (its newest checkpoint)",
        )  # fmt: skip
    if command == "predict":
        parser.add_argument(
            "--prompt", action="append", default=[], metavar="TEXT",
            help="a language model's prompt (repeatable); text FILEs are prompts too",
        )  # fmt: skip
    return parser


def _job_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "target", metavar="RUN_FOLDER_OR_JOB_ID", help="a run folder of `launch --slurm`, or a SLURM job id"
    )
    if command == "logs":
        parser.add_argument("--rank", type=int, default=0, help="whose log (default 0)")
        parser.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="RUN_OR_SWEEP_FOLDER", help="a run folder, or a sweep folder (with sweep.json)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where the plots and index.html go (default: <folder>/report)"
    )


def _recipe_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sweeping = command == "sweep"
    if command == "search":
        parser.add_argument(
            "recipe",
            metavar="SEARCH_FOLDER_OR_RECIPE",
            help="the recipe (YAML); or a search folder: go on with its search",
        )
        parser.add_argument(
            "overrides", nargs="*", metavar="key.sub=value",
            help="recipe overrides; key=uniform:A:B, loguniform:A:B, int:A:B or choice:a,b,c is searched",
        )  # fmt: skip
        parser.add_argument("--cpu", action="store_true", help="run on the CPU in one process, even where GPUs exist")
        return
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


def _run_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sweeping = command in ("sweep", "search")
    if not sweeping:
        parser.add_argument(
            "--resume", nargs="?", const="latest", metavar="PATH",
            help="continue the latest run of this recipe, or the run folder or checkpoint PATH",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="same as `launch check`: validate, build, one step")
    parser.add_argument(
        "--force", action="store_true",
        help="resume the sweep's unfinished runs even where their data, model, loss or optimizer differ from this recipe's" if sweeping
        else "--resume even where the recipe's data, model, loss or optimizer differ from the run's",
    )  # fmt: skip


def _worker_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sweeping = command in ("sweep", "search")
    where = parser.add_argument_group(
        "workers (torchrun's vocabulary)" + ("; each run of the sweep, one after another" if sweeping else "")
    )
    where.add_argument(
        "--gpus", type=int, metavar="N", help="one DDP worker per GPU on this node, NCCL (default: all visible GPUs)"
    )
    where.add_argument(
        "--nproc", "--nproc-per-node", type=int, metavar="N",
        help="N CPU workers on this node, gloo: exercises distributed training, not faster than one process",
    )  # fmt: skip
    if sweeping:
        return
    where.add_argument("--nnodes", default="1", metavar="N|MIN:MAX", help="nodes in the run (default 1)")
    where.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-node run, the same on every node"
    )
    where.add_argument("--rdzv-id", metavar="ID", help="the run's id, the same on every node (names the run folder)")
    where.add_argument(
        "--max-restarts", type=int, default=0, metavar="N",
        help="restart the workers up to N times after a failure, resuming from the latest checkpoint",
    )  # fmt: skip


def _slurm_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sweeping = command in ("sweep", "search")
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
    if command != "search":  # a search always waits: each array's results choose the next trials
        cluster.add_argument(
            "--wait", action="store_true",
            help="wait until every run's job has ended, then write the results" if sweeping
            else "follow rank 0's log until the job ends; exit with the job's status",
        )  # fmt: skip
    if command == "search":
        cluster.add_argument(
            "--parallel", type=int, metavar="N",
            help="trials per job array (default 4); the search waits for each array, whose results choose the next trials",
        )  # fmt: skip
    elif sweeping:
        cluster.add_argument(
            "--parallel", type=int, metavar="N", help="at most N runs of the array at once (default: as SLURM allows)"
        )
    else:
        cluster.add_argument(
            "--srun", action="store_true",
            help="run as one task of an srun step, in a job script of your own (slurm/train.sbatch)",
        )  # fmt: skip


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    options = parser.add_argument_group("the sweep")
    options.add_argument(
        "--metric", metavar="TAG", help="what the table sorts by (default val/acc1 if measured, else val/loss)"
    )
    options.add_argument(
        "--mode",
        choices=("max", "min"),
        help="max: higher is better, min: lower is (default: the metric's own direction where it says one, a module:attr metric's higher_is_better; else min for losses, errors and perplexity, max for the rest)",
    )
    options.add_argument(
        "--name", metavar="ID",
        help="the sweep folder is sweep-ID (default: a hash of the recipe path, the grid and the other overrides)",
    )  # fmt: skip


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    options = parser.add_argument_group("the search (Optuna)")
    options.add_argument(
        "--trials", type=int, metavar="N", help="trials in the study in all (default 20; a search folder: its own)"
    )
    options.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="how the values are drawn (default tpe)"
    )
    options.add_argument(
        "--pruner", choices=("asha", "median", "none"), default="asha",
        help="which trials stop early, judged after each evaluation (default asha: successive halving)",
    )  # fmt: skip
