"""One worker process of a multi-process run, as the elastic agent starts it.

It receives the resolved recipe as plain data (not a pile of environment variables), joins the
process group, trains, and leaves the group in `finally`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from launcher import checkpoint, components, distributed, logs
from launcher.recipe import Recipe
from launcher.rundir import RunDir


def worker(recipe_data: dict[str, Any], run_path: str, resume_from: str | None, device_type: str) -> dict[str, Any]:
    recipe = Recipe.model_validate(recipe_data)
    components.use_import_paths(recipe.run.import_paths)
    runtime = distributed.runtime_from_environment(device_type)
    run = RunDir(Path(run_path))
    logs.setup_text_log(run.path / f"log.rank{runtime.rank}.txt", console=runtime.is_main)
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        # The agent restarted the group after a failure: carry on from the newest checkpoint.
        latest = checkpoint.latest(run.checkpoints)
        resume_from = str(latest) if latest else resume_from
    distributed.init_process_group(runtime, recipe.distributed.timeout_s)
    try:
        from launcher.train import train

        return train(recipe, runtime, run, Path(resume_from) if resume_from else None)
    finally:
        distributed.destroy_process_group()
        logs.close_text_log()
