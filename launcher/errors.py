"""Errors whose message says all a user needs: the command line prints them without a traceback.

Exit codes, as the shell reads them: 2 for input the user must change (a recipe, a flag, a file
the recipe names, a component that does not build: found before or while building, in one
process or in any worker, the same line), 1 for a run that failed on the way (a crashed worker,
a full disk, a node that never came).
"""

from __future__ import annotations

import re

USAGE_ERROR = 2  # argparse's code, and every recipe problem's
RUN_FAILED = 1


class UserError(Exception):
    """Something the user can fix (a recipe, a path, a flag); the message says what."""

    exit_code = USAGE_ERROR


class RunFailed(UserError):
    """A run that went wrong on the way (a worker crashed, a disk filled up): the message says
    where and what, without a traceback of the launcher's own."""

    exit_code = RUN_FAILED


# The line a Python traceback ends with: `ValueError: ...`, `torch.OutOfMemoryError: ...`, `SystemExit: 2`.
_ERROR_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit)\b")


def is_error_line(line: str) -> bool:
    """Whether `line` is the error line of a traceback (where a log's traceback ends)."""
    return _ERROR_LINE.match(line) is not None
