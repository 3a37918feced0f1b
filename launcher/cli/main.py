"""The `launch` command: parse, dispatch to the command's module, and turn an error into one
line and an exit code. What each command does is in its own module (cli/train.py, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from launcher.cli.parser import COMMANDS, JOB_COMMANDS, build_parser, trains_here
from launcher.config.loading import json_schema, load_recipe
from launcher.config.overrides import is_override
from launcher.config.problems import RecipeError
from launcher.distributed import early_start
from launcher.errors import RUN_FAILED, USAGE_ERROR, UserError
from launcher.tracking import logs

log = logging.getLogger("launcher")


def main(argv: Sequence[str] | None = None) -> int:
    """`launch ...`: the exit code is 0, 2 for input to change (a recipe, a flag), 1 for a run
    that failed, or 128 + the signal that stopped it."""
    own_process, argv = argv is None, list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    args = build_parser(command).parse_intermixed_args(_bare_resume(argv))
    if own_process and _trains_in_cpu_workers(command, args):
        early_start.start_importing()  # the workers' imports, beside ours (distributed/early_start.py)
    if command == "schema":  # before importing torch: editors call this
        print(json.dumps(json_schema(), indent=2))
        return 0
    if command in JOB_COMMANDS:
        # start-up: each command's module is imported once the command is known; most import
        # torch (about 2 s), which `launch schema` (editors call it) and `--help` do without.
        from launcher.cli.slurm import follow_job

        return follow_job(command, args)
    # start-up: torch (about 2 s) only once a command that needs it is known
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


def _trains_in_cpu_workers(command: str, args: argparse.Namespace) -> bool:
    """From the flags alone (torch is not imported yet): this command starts CPU workers here."""
    return trains_here(command, args) and args.gpus is None and args.nproc is not None and args.nproc > 1


def _run(command: str, args: argparse.Namespace) -> int:
    """The command, from the parsed command line."""
    # start-up: the commands' modules import torch; see main()
    from launcher.cli import check, inference, search, slurm, sweep, train
    from launcher.cli.recipe_checks import problems_in

    if command in ("report", "sweep", "search"):
        return report(args) if command == "report" else sweep.sweep(args) if command == "sweep" else search.search(args)
    if command == "export":
        return inference.export(args.target, args.out)
    files = [o for o in args.overrides if Path(o).exists() or not is_override(o)] if command == "predict" else []
    if command == "predict" and not files and not args.prompt:
        raise UserError("launch predict: name at least one image, CSV or text file to predict, or give --prompt TEXT")
    overrides = [o for o in args.overrides if o not in files]
    recipe = load_recipe(
        args.recipe, overrides, check=problems_in, check_in_workers=train.checks_in_workers(command, args)
    )
    if command == "check" or getattr(args, "dry_run", False):
        return check.check(recipe)
    if command in ("eval", "predict"):
        return (
            inference.evaluate(recipe, args.checkpoint, args.cpu)
            if command == "eval"
            else inference.predict(recipe, args.checkpoint, files, args.cpu, args.prompt)
        )
    if args.slurm or args.srun:
        return slurm.submit(recipe, args) if args.slurm else slurm.srun_task(recipe, args)
    return train.train(recipe, args)


def _report_failure(error: BaseException) -> int:
    """One line for what went wrong, no traceback; the exit code that says what kind of thing it was."""
    # start-up: torch is imported by then (the command ran); not at the top, for `launch schema`
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


def report(args: argparse.Namespace) -> int:
    """`launch report`: plots and an index.html of a run or a sweep (launcher/tracking/report.py)."""
    # start-up: matplotlib only for `launch report`
    from launcher.tracking.report import write_report

    for path in write_report(Path(args.target), args.out):
        print(path)
    return 0
