"""SLURM durations (`--time`, `slurm.time`): parsed once, for the schema and for the job."""

from __future__ import annotations

import re


def time_limit_minutes(text: str | int) -> int:
    """A SLURM time limit in whole minutes (what sbatch --time takes), rounded up; an int is minutes."""
    seconds = slurm_duration_s(text)
    if seconds <= 0:
        raise ValueError(f"'{text}': a time limit must be above zero")
    return -(-seconds // 60)


MAX_MINUTES_OR_SECONDS = 59  # of a SLURM duration's MM and SS fields


def slurm_duration_s(text: str | int) -> int:
    """Seconds in a SLURM duration: minutes, MM:SS, H:MM:SS, D-H, D-H:MM or D-H:MM:SS."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError(f"'{text}' is not a SLURM time: use minutes, MM:SS, H:MM:SS or D-H:MM:SS")
    days_text, first_text, second_text, third_text = match.groups()
    first = int(first_text)  # the one field the pattern requires
    days, second, third = (int(g) if g else None for g in (days_text, second_text, third_text))
    if any(
        field is not None and field > MAX_MINUTES_OR_SECONDS
        for field in ((second, third) if third is not None or days is not None else (second,))
    ):
        raise ValueError(f"'{text}': minutes and seconds go up to 59")
    if days is not None:  # D-H, D-H:MM, D-H:MM:SS
        return days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    if third is not None and second is not None:  # H:MM:SS (the pattern gives no third field without a second)
        return first * 3600 + second * 60 + third
    if second is not None:  # MM:SS
        return first * 60 + second
    return first * 60  # minutes
