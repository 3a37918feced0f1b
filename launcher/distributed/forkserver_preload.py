"""Imported first by `launch`'s forkserver (early_start.PRELOAD), and there only does something:
the server ignores the signals that stop a run, so that it ends with `launch` and not before.

A signal to the whole process group (Ctrl-C, SLURM's SIGTERM, `kill -TERM -PGID`) reaches the
server too. Were it to end at once, the elastic agent, which learns of its workers' exits through
the server, would take the workers for gone (exit 255) while they finish their step and write its
checkpoint, and `launch` would return before them. A worker forked from the server puts back the
dispositions `launch` had, first thing (`restore_signals`).
"""

from __future__ import annotations

import os
import signal

# Set by early_start for the server's start only; taken out of its environment here, so that
# its workers (and any other process that imports this module) do not see it.
SERVER_VARIABLE = "LAUNCHER_FORKSERVER"
SHIELDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

BEFORE: dict[signal.Signals, object] = {}
if os.environ.pop(SERVER_VARIABLE, None) == "1":
    BEFORE.update({sig: signal.getsignal(sig) for sig in SHIELDED})
    for sig in SHIELDED:
        signal.signal(sig, signal.SIG_IGN)


def restore_signals() -> None:
    """In a worker forked from the server: the dispositions `launch` started it with; elsewhere nothing."""
    for sig, handler in BEFORE.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
    BEFORE.clear()
