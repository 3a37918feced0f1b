"""The suite's table: medians with [min-max] over the repetitions, and ratios to the plain script."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

FIGURES = (  # key, heading, format
    ("step_ms", "step (ms)", "{:.1f}"),
    ("samples_per_s", "samples/s", "{:.0f}"),
    ("first_step_s", "to 1st step (s)", "{:.2f}"),
    ("wall_s", "wall (s)", "{:.1f}"),
    ("teardown_s", "teardown (s)", "{:.2f}"),
    ("data_stall", "data stall", "{:.1%}"),
    ("time_to_target_s", "to 97% (s)", "{:.1f}"),
)


def machine() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("lightning", "accelerate"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        **versions,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def launch_accuracies(runs: Path) -> list[tuple[float, float]]:
    """(wall time, val/acc1) from a `launch` run's TensorBoard events, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[tuple[float, float]] = []
    for events in sorted(runs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        if "val/acc1" in accumulator.Tags()["scalars"]:
            values += [(e.wall_time, e.value) for e in accumulator.Scalars("val/acc1")]
    return sorted(values)


def summary(runs: list[dict]) -> dict[tuple[str, str], dict[str, tuple[float, float, float] | None]]:
    """(workload, contender) -> figure -> (median, min, max) over the repetitions."""
    cells: dict[tuple[str, str], dict] = {}
    for key in dict.fromkeys((r["workload"], r["contender"]) for r in runs):
        mine = [r for r in runs if (r["workload"], r["contender"]) == key]
        cells[key] = {}
        for figure, _, _ in FIGURES:
            values = [r[figure] for r in mine if r[figure] is not None]
            cells[key][figure] = (statistics.median(values), min(values), max(values)) if values else None
    return cells


def markdown(results: dict) -> str:
    m, cells = results["machine"], summary(results["runs"])
    lines = [
        "# Benchmark results",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores{', ' + ', '.join(m['gpus']) if m['gpus'] else ''} · "
        f"Python {m['python']}, torch {m['torch']}, Lightning {m['lightning']}, Accelerate {m['accelerate']} · "
        f"{results['nproc']} processes per contender (single: 1 process, every core, the same global batch) · "
        f"{results['reps']} repetition(s), interleaved · the suite took {results['suite_s']:.0f} s",
        "",
        "Medians, [min-max] over the repetitions. `x plain`: the contender's median step time over the plain",
        "torchrun script's (lower is faster). DDP efficiency: samples/s over the single process's.",
        "",
    ]
    for workload in dict.fromkeys(r["workload"] for r in results["runs"]):
        lines += [f"## {workload}", "", "| contender | " + " | ".join(h for _, h, _ in FIGURES) + " | x plain | DDP efficiency |",
                  "|---|" + "---|" * (len(FIGURES) + 2)]  # fmt: skip
        plain, single = cells.get((workload, "plain")), cells.get((workload, "single"))
        for (w, contender), cell in cells.items():
            if w != workload:
                continue
            row = [contender] + [_cell(cell[figure], fmt) for figure, _, fmt in FIGURES]
            row.append(f"{cell['step_ms'][0] / plain['step_ms'][0]:.3f}" if plain else "")
            row.append(f"{cell['samples_per_s'][0] / single['samples_per_s'][0]:.2f}" if single and contender != "single" else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(value: tuple[float, float, float] | None, fmt: str) -> str:
    if value is None:
        return "-"
    median, low, high = (fmt.format(v) for v in value)
    return f"{median} [{low}-{high}]"
