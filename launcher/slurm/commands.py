"""SLURM's own commands (sinfo, squeue, scontrol, scancel), each run through one wrapper with a timeout."""

from __future__ import annotations

import logging
import re
import subprocess

from launcher.errors import UserError

log = logging.getLogger("launcher")


def slurm_command(command: list[str], *, check: bool = True, timeout_s: float = 60) -> str:
    """What the command prints. A SLURM client that is not installed here is a UserError.

    check=True: a command that fails is a UserError, one that hangs past `timeout_s` raises
    subprocess.TimeoutExpired. check=False: for the calls whose failure is not an error (a job
    the controller no longer knows, a best-effort update): the caller reads what it printed
    (often nothing) and goes on; one that hangs past `timeout_s` printed nothing.
    """
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise UserError(
            f"`{command[0]}` not found: SLURM commands run where the SLURM client is (a login node)"
        ) from None
    except subprocess.TimeoutExpired:
        if check:
            raise
        log.warning("`%s` gave no answer within %g s; going on without it", " ".join(command), timeout_s)
        return ""
    if check and done.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def show_job(job_id: str) -> dict[str, str]:
    """What the controller says of the job (`scontrol show job`), as its Key=Value pairs (StdOut,
    Comment, Restarts, ...): empty where it does not know the job (any more: it forgets it
    MinJobAge after its end). For an array, its first task's. A value is up to the first
    space: a comment or path with spaces in it comes out cut there."""
    shown = slurm_command(["scontrol", "show", "job", job_id], check=False)
    first = shown.split("\n\n", 1)[0]  # an array's tasks: one paragraph each
    return dict(re.findall(r"(?:^|\s)([^\s=]+)=(\S*)", first))
