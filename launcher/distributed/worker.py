"""One worker process of a multi-process run, as the elastic agent or SLURM starts it.

It receives the resolved recipe as plain data (not a pile of environment variables), checks it
where `launch` left the checks that import the user's modules to the workers, joins the process
group, trains, and leaves the group in `finally`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from launcher import checkpoint
from launcher.config import components
from launcher.config.loading import in_recipe_order
from launcher.config.problems import Problem, RecipeError
from launcher.config.schema import Recipe
from launcher.distributed import elastic, flight_recorder, forkserver_preload
from launcher.distributed import process_group as distributed
from launcher.distributed.runtime import Runtime
from launcher.errors import UserError
from launcher.rundir import RunDir
from launcher.tracking import logs
from launcher.training.stopping import StopRequests, TrainingStopped
from launcher.training.summary import RunSummary
from launcher.training.trainer import train

log = logging.getLogger("launcher")


class RecipeCheck(Protocol):
    """The recipe checks beyond the schema (cli.recipe_checks.problems_in), on a recipe as data."""

    def __call__(self, tree: dict[str, Any]) -> list[Problem]: ...


def worker(
    recipe_data: dict[str, Any], run_path: str, resume_from: str | None, device_type: str,
    check: RecipeCheck | None = None, source: str = "recipe",
) -> RunSummary | None:  # fmt: skip
    """The elastic agent's entry point: train as one of its workers; None where its search pruned
    the run (it ended as asked, with its checkpoint: a worker exiting non-zero is a failure to the
    agent). `check`: the recipe checks `launch` left to the workers (config.loading.load_recipe's
    check_in_workers), run before anything else; `source`, the recipe's file, names it in their
    message. A UserError (a recipe problem found by them or while building, say) reaches `launch`
    as its message and exit code, which it prints as one process would: no traceback, no "rank N
    failed"; every rank finds the same problems, and `launch` prints them once."""
    forkserver_preload.restore_signals()  # forked from launch's forkserver: launch's dispositions
    try:
        if check is not None and (problems := check(recipe_data)):
            raise UserError(str(RecipeError(source, in_recipe_order(problems))))
        return _train_as_worker(recipe_data, run_path, resume_from, device_type)
    except UserError as error:
        elastic.report_user_error(error)


def _train_as_worker(
    recipe_data: dict[str, Any], run_path: str, resume_from: str | None, device_type: str
) -> RunSummary | None:
    recipe, run = Recipe.model_validate(recipe_data), RunDir(Path(run_path))
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        # The agent restarted the group after a failure: carry on from the newest checkpoint.
        latest = checkpoint.latest(run.checkpoints)
        resume_from = str(latest) if latest else resume_from
    with joined(recipe, run, device_type) as runtime:
        stop = StopRequests(runtime.device, patience_s=recipe.distributed.stall_s)
        try:
            with stop.catching():
                return train(recipe, runtime, run, Path(resume_from) if resume_from else None, stop)
        except TrainingStopped as stopped:
            if stopped.pruned:
                log.info("%s", stopped)
                return None
            # SIGTERM/Ctrl-C reach the agent, which passes them on: stop here, checkpoint written.
            log.warning("%s", stopped)
            raise SystemExit(stopped.exit_code) from None


@contextlib.contextmanager
def joined(recipe: Recipe, run: RunDir, device_type: str, console_on_every_rank: bool = False) -> Iterator[Runtime]:
    """This worker's place in the process group (from RANK, WORLD_SIZE... in the environment),
    with its own log file; leaves the group and closes the log on the way out, whatever happened."""
    components.use_import_paths(recipe.run.import_paths)
    runtime = distributed.runtime_from_environment(device_type)
    logs.setup_text_log(
        run.rank_log(runtime.rank, runtime.world_size), console=runtime.is_main or console_on_every_rank
    )
    try:
        flight_recorder.switch_on(run.path, runtime.device)
        distributed.init_process_group(runtime, recipe.distributed.timeout_s)
        yield runtime
    finally:
        distributed.destroy_process_group()
        logs.close_text_log()
