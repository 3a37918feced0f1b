"""The text log: every rank's own file, rank 0's console, and tqdm bars that log lines do not tear."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("launcher")


class _TqdmHandler(logging.StreamHandler):
    """Console lines that don't tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


def setup_text_log(log_file: Path | None, console: bool) -> None:
    """Send the launcher's messages to `log_file` (appending) and, if `console`, to the terminal."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if console:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="a")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(file_handler)


def close_text_log() -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
