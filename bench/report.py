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
    ("between_steps", "between steps", "{:.1%}"),
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


def summary(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """(workload, contender) -> figure -> (median, min, max) over the repetitions that finished."""
    cells: dict[tuple[str, str], dict] = {}
    for key in dict.fromkeys((r["workload"], r["contender"]) for r in runs):
        mine = [r for r in runs if (r["workload"], r["contender"]) == key]
        done = [r for r in mine if "failed" not in r]
        cells[key] = {
            "runs": len(mine),
            "failed": len(mine) - len(done),
            "aborted": sum(bool(r.get("aborted_at_exit")) for r in done),
        }
        for figure, _, _ in FIGURES:
            values = [r[figure] for r in done if r[figure] is not None]
            cells[key][figure] = (statistics.median(values), min(values), max(values)) if values else None
        cells[key]["reached"] = sum(r.get("time_to_target_s") is not None for r in done)
    return cells


def paired_ratio(runs: list[dict], workload: str, contender: str) -> float | None:
    """The median over the repetitions of this contender's step time over the plain script's in the
    same repetition: runs are interleaved, so a slow stretch of the machine slows both of a pair."""

    def steps(name: str) -> dict[int, float]:
        return {
            r["rep"]: r["step_ms"]
            for r in runs
            if (r["workload"], r["contender"]) == (workload, name) and r.get("step_ms")
        }

    mine, plain = steps(contender), steps("plain")
    ratios = [mine[rep] / plain[rep] for rep in mine.keys() & plain.keys()]
    return statistics.median(ratios) if ratios else None


def markdown(results: dict) -> str:
    m, cells, gpu = results["machine"], summary(results["runs"]), results.get("gpu", False)
    reference = (
        f"1 GPU, the same batch per GPU x {results['nproc']}" if gpu else "1 process, every core, the same global batch"
    )
    lines = [
        "# Benchmark results",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores{', ' + ', '.join(m['gpus']) if m['gpus'] else ''} · "
        f"Python {m['python']}, torch {m['torch']}, Lightning {m['lightning']}, Accelerate {m['accelerate']} · "
        f"{results['nproc']} processes per contender (single: {reference}) · "
        f"{results['reps']} repetition(s), interleaved · the suite took {results['suite_s']:.0f} s",
        "",
        "Medians, [min-max] over the repetitions. `x plain`: the contender's median step time over the plain",
        "torchrun script's (lower is faster); `x plain (paired)`: the median over the repetitions of the ratio",
        "within each (the contender's run over the plain run next to it), the steadier figure where other work",
        "on the machine slows stretches of the suite down; `x plain (mean)`: from samples/s, which is taken",
        "from the mean step and so also counts what happens every N steps. DDP efficiency:",
        "samples/s over the single process's" + (f" times {results['nproc']} GPUs." if gpu else "."),
        "",
    ]
    for workload in dict.fromkeys(r["workload"] for r in results["runs"]):
        lines += [f"## {workload}", "", "| contender | " + " | ".join(h for _, h, _ in FIGURES) + " | x plain | x plain (paired) | x plain (mean) | DDP efficiency |",
                  "|---|" + "---|" * (len(FIGURES) + 4)]  # fmt: skip
        plain, single = cells.get((workload, "plain")), cells.get((workload, "single"))
        for (w, contender), cell in cells.items():
            if w != workload:
                continue
            if cell["step_ms"] is None:
                lines.append(f"| {contender} | all {cell['runs']} run(s) failed |" + " |" * (len(FIGURES) + 3))
                continue
            said = [f"{cell['failed']} of {cell['runs']} failed"] if cell["failed"] else []
            said += [f"{cell['aborted']} of {cell['runs']} aborted at exit"] if cell["aborted"] else []
            row = [contender + (f" ({', '.join(said)})" if said else "")]
            for figure, _, fmt in FIGURES:
                text = _cell(cell[figure], fmt)
                if (
                    figure == "time_to_target_s"
                    and cell[figure] is not None
                    and cell["reached"] < cell["runs"] - cell["failed"]
                ):
                    text += f" ({cell['reached']} of {cell['runs'] - cell['failed']} reached)"
                row.append(text)
            ok = plain is not None and plain["step_ms"] is not None
            row.append(f"{cell['step_ms'][0] / plain['step_ms'][0]:.3f}" if ok else "")
            paired = paired_ratio(results["runs"], workload, contender)
            row.append(f"{paired:.3f}" if ok and paired is not None else "")
            row.append(f"{plain['samples_per_s'][0] / cell['samples_per_s'][0]:.3f}" if ok else "")
            bound = (
                single["samples_per_s"][0] * (results["nproc"] if gpu else 1)
                if single and single["samples_per_s"]
                else None
            )
            row.append(f"{cell['samples_per_s'][0] / bound:.2f}" if bound and contender != "single" else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    c = results.get("checkpoint")
    if c:
        lines += [
            f"## Checkpoint: the time the training loop waits ({c['workload']}'s model and AdamW state, {c['size_mb']:.0f} MB, on the CPU)",
            "",
            "| | blocking (ms) | x torch.save |",
            "|---|---|---|",
            f"| torch.save to a file | {_span(c['torch_save_ms'])} | 1 |",
            f"| launch (default: serialized while training waits; fsync, checksum, rename beside it) | {_span(c['sync_blocking_ms'])} | {c['sync_ratio']:.2f} |",
            f"| launch, checkpoint.asynchronous: true (a copy in memory) | {_span(c['async_blocking_ms'])} | {c['async_ratio']:.2f} |",
            f"| launch, a best.pt and a step checkpoint back to back (default mode) | {_span(c['back_to_back_ms'])} | {c['back_to_back_ratio']:.2f} |",
            f"| launch's writer in all, beside training (default mode) | {_span(c['writer_total_ms'])} | |",
            "",
        ]
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    return f"{values[0]:.0f} [{values[1]:.0f}-{values[2]:.0f}]"


def _cell(value: tuple[float, float, float] | None, fmt: str) -> str:
    if value is None:
        return "-"
    median, low, high = (fmt.format(v) for v in value)
    return f"{median} [{low}-{high}]"
