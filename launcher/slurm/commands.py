"""SLURM's own commands (sinfo, squeue, scontrol, scancel), each run through one wrapper with a timeout."""

from __future__ import annotations

import logging
import subprocess

from launcher.errors import UserError

log = logging.getLogger("launcher")


def slurm_command(command: list[str]) -> str:
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(
            f"`{command[0]}` not found: SLURM commands run where the SLURM client is (a login node)"
        ) from None
    if done.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
