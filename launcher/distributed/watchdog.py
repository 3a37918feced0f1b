"""Hangs that explain themselves.

Each rank notes every finished step in a heartbeat file (`<run>/heartbeat/rank<N>`: the step
and the time), so that after a failure the launcher can say which rank was last seen where.
When no step has finished for `stall_s`, the rank writes every thread's Python stack to its own
log (faulthandler, from a C thread: it works while Python is stuck in a collective, a sleep or a
lock) and again every `stall_s` after that.
"""

from __future__ import annotations

import faulthandler
import os
import time
from pathlib import Path
from typing import IO


class Watchdog:
    """This rank's heartbeat and stall dumps; `stall_s` None: heartbeat only."""

    REARM_S = 1.0

    def __init__(self, heartbeat_dir: Path, rank: int, log_file: Path, stall_s: float | None) -> None:
        heartbeat_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat = heartbeat_dir / f"rank{rank}"
        self._heartbeat_fd: int | None = os.open(self.heartbeat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.stall_s = stall_s
        self._log: IO[str] | None = log_file.open("a") if stall_s else None
        self._armed_at = -self.REARM_S
        self.step(None)

    def step(self, step: int | None) -> None:
        """A step finished (None: the rank is setting up): note it, and start the stall clock anew."""
        now = time.time()
        if self._heartbeat_fd is not None:
            # Fixed width, so that a shorter line never leaves the end of a longer one behind.
            line = f"{'setup' if step is None else step} {now:.3f} {os.getpid()}".ljust(63) + "\n"
            os.pwrite(self._heartbeat_fd, line.encode(), 0)
        if self._log is not None and self.stall_s is not None and now - self._armed_at >= self.REARM_S:
            faulthandler.dump_traceback_later(self.stall_s + self.REARM_S, repeat=True, file=self._log)
            self._armed_at = now

    def close(self) -> None:
        if self._heartbeat_fd is not None:
            os.close(self._heartbeat_fd)
            self._heartbeat_fd = None
        if self._log is not None:
            faulthandler.cancel_dump_traceback_later()
            self._log.close()
            self._log = None


def last_seen(heartbeat_dir: Path) -> list[str]:
    """'rank N: step S, T s before now' for each rank that left a heartbeat, in rank order."""
    now, lines = time.time(), []
    files = sorted(heartbeat_dir.glob("rank*"), key=lambda p: int(p.name[4:])) if heartbeat_dir.is_dir() else []
    for path in files:
        try:
            step, when, _ = path.read_text().split()
        except (OSError, ValueError):
            continue
        where = "still setting up" if step == "setup" else f"last finished step {step}"
        lines.append(f"rank {path.name[4:]}: {where}, {now - float(when):.0f} s ago")
    return lines
