"""Weights & Biases, a tracker rank 0 logs to where the recipe asks (`logging.trackers: [wandb]`, `pip install 'launcher[wandb]'`)."""

from __future__ import annotations

import json
import netrc
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from launcher.config.schema import Wandb


def logged_in() -> bool:
    """Whether W&B has credentials here (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc), without asking its server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return host is not None and netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    """One W&B run per launcher run, its files under <run folder>/wandb/: the flattened recipe as
    its config, the scalars with their steps, recipe.yaml and metrics.json saved at the end.

    A resumed run (`run_id`: its earlier part's) continues that W&B run (resume="allow"). W&B
    drops a step below the run's current one, so a step the crashed part logged after its
    checkpoint keeps its first value, and is not sent again: online, below run.starting_step
    (W&B's server tells it); offline, where each part is a folder of its own under wandb/ with
    the same run id (`wandb sync` uploads them in order into that one run), up to the last step
    the earlier parts' logs hold (read with W&B's own reader, `wandb leet inspect`).
    """

    def __init__(self, section: Wandb, *, folder: Path, name: str, params: dict[str, Any], run_id: str | None) -> None:
        # start-up: wandb (seconds, and a service process) only on rank 0, and only where the recipe asks for it
        import wandb

        mode = section.mode or ("online" if logged_in() else "offline")
        earlier = _offline_last_step(folder / "wandb", run_id) if run_id is not None and mode == "offline" else None
        settings = wandb.Settings(
            silent=True, console="off", disable_git=True, save_code=False, x_disable_stats=True, x_disable_meta=True
        )  # the launcher's own log and metrics.json have the console and the machine
        self.run = wandb.init(
            project=section.project or name, name=folder.name, dir=folder, id=run_id,
            resume="allow" if run_id is not None else None, mode=mode,
            settings=settings,
        )  # fmt: skip
        # A resumed run's config may differ (the trainer warns): W&B keeps the new values.
        self.run.config.update(params, allow_val_change=True)
        self.first_step = max(self.run.starting_step, -1 if earlier is None else earlier + 1)
        self.finished = False

    def run_id(self) -> str | None:
        return str(self.run.id)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if step >= self.first_step:
            self.run.log(values, step=step)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
        for path in files:
            if path.exists():  # copied, not linked (W&B warns of a link): the files as they were at the end
                kept = Path(self.run.dir) / path.name
                shutil.copyfile(path, kept)
                self.run.save(str(kept), base_path=self.run.dir, policy="now")
        self.finished = True

    def close(self) -> None:
        self.run.finish(exit_code=0 if self.finished else 1)  # stopped or failed: W&B marks it crashed


def _offline_last_step(wandb_dir: Path, run_id: str) -> int | None:
    """The last step the offline parts of run `run_id` logged (a crashed part's too), or None."""
    steps = []
    for part in sorted(wandb_dir.glob(f"offline-run-*-{run_id}")):
        inspected = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(part)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if inspected.returncode == 0 and isinstance(step := json.loads(inspected.stdout).get("step"), int):
            steps.append(step)
    return max(steps, default=None)
