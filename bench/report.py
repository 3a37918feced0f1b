"""The suite's table: medians with [min-max] over the repetitions, and ratios to the plain script."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

FIGURES = (  # key, heading, format
    ("step_ms", "step (ms)", "{:.1f}"),
    ("cpu_ms", "CPU a step (ms)", "{:.1f}"),
    ("samples_per_s", "samples/s", "{:.0f}"),
    ("tokens_per_s", "tokens/s", "{:.0f}"),
    ("first_step_s", "to 1st step (s)", "{:.2f}"),
    ("step_one_s", "1st step (s)", "{:.2f}"),
    ("wall_s", "wall (s)", "{:.1f}"),
    ("teardown_s", "teardown (s)", "{:.2f}"),
    ("between_steps", "between steps", "{:.1%}"),
    ("time_to_target_s", "to 97% (s)", "{:.1f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.0f}"),
    ("final_val_loss", "val loss", "{:.4f}"),
)
# The paired ratios given under each workload's table (where both ran), beside each contender's over the plain script's.
PAIRS = (
    ("launch-fsdp", "plain-fsdp"),
    ("plain-fsdp", "plain"),
    ("launch-fsdp", "launch"),
    ("plain-compile", "plain"),
    ("launch-compile", "launch"),
    ("launch-compile", "plain-compile"),
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


def launch_validation(runs: Path, tag: str) -> list[tuple[float, float]]:
    """(wall time, value) of `tag` (val/acc1, val/loss) from a `launch` run's TensorBoard events,
    read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[tuple[float, float]] = []
    for events in sorted(runs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(e.wall_time, e.value) for e in accumulator.Scalars(tag)]
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
            values = [r[figure] for r in done if r.get(figure) is not None]
            cells[key][figure] = (statistics.median(values), min(values), max(values)) if values else None
        cells[key]["reached"] = sum(r.get("time_to_target_s") is not None for r in done)
    return cells


def paired_ratio(
    runs: list[dict], workload: str, contender: str, reps: set[int] | None = None, reference: str = "plain"
) -> float | None:
    """The median over the repetitions (`reps`, else all) of this contender's step time over the
    reference's (the plain script's) in the same repetition: runs are interleaved, so a slow
    stretch of the machine slows both of a pair."""
    ratios = paired_ratios(runs, workload, contender, reference, reps)
    return statistics.median(ratios) if ratios else None


def paired_ratios(
    runs: list[dict], workload: str, contender: str, reference: str, reps: set[int] | None = None
) -> list[float]:
    """Each repetition's (`reps`, else all) step time of `contender` over `reference`'s, in order."""
    mine, theirs = _steps(runs, workload, contender), _steps(runs, workload, reference)
    return [mine[rep] / theirs[rep] for rep in sorted(mine.keys() & theirs.keys()) if reps is None or rep in reps]


def _steps(runs: list[dict], workload: str, contender: str) -> dict[int, float]:
    """Repetition -> step time (ms) of the finished runs."""
    return {
        r["rep"]: r["step_ms"]
        for r in runs
        if (r["workload"], r["contender"]) == (workload, contender) and r.get("step_ms")
    }


# Other processes' share of the cores during a run above which its repetition counts as busy: on
# 2 cores, a tenth of a core taken from 2 busy workers can slow a step by the few % the ratios resolve.
BUSY_SHARE = 0.05


def busy_reps(runs: list[dict], workload: str, cores: int) -> set[int]:
    """The repetitions in which, during a run, other processes kept more than BUSY_SHARE of the
    cores busy: the contenders then shared them with other work, and the step times say so.
    Not the load average: a run's own workers put it at about the cores (2.0-2.1 on 2 cores, by
    themselves), and it lags a minute behind."""
    return {r["rep"] for r in runs if r["workload"] == workload and (r.get("other_cores") or 0) > BUSY_SHARE * cores}


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
        f"{_repetitions(results['reps'])}, interleaved · the suite took {results['suite_s']:.0f} s",
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
        # The figures some run of this workload measured (tokens/s: a language model's; to 97%: W1's)
        shown = [f for f in FIGURES if any(cell[f[0]] is not None for (w, _), cell in cells.items() if w == workload)]
        lines += [f"## {workload}", "", "| contender | " + " | ".join(h for _, h, _ in shown) + " | x plain | x plain (paired) | x plain (mean) | DDP efficiency |",
                  "|---|" + "---|" * (len(shown) + 4)]  # fmt: skip
        plain, single = cells.get((workload, "plain")), cells.get((workload, "single"))
        for (w, contender), cell in cells.items():
            if w != workload:
                continue
            if cell["step_ms"] is None:
                lines.append(f"| {contender} | all {cell['runs']} run(s) failed |" + " |" * (len(shown) + 3))
                continue
            said = [f"{cell['failed']} of {cell['runs']} failed"] if cell["failed"] else []
            said += [f"{cell['aborted']} of {cell['runs']} aborted at exit"] if cell["aborted"] else []
            row = [contender + (f" ({', '.join(said)})" if said else "")]
            for figure, _, fmt in shown:
                text = format_span(cell[figure], fmt)
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
        lines += ["", *_repetitions_table(results, workload), *_pairs_lines(results["runs"], workload)]
        lines += [*_startup_lines(results["runs"], workload), ""]
    if results.get("left_out"):
        lines += [f"Not run, past the suite's deadline: {', '.join(results['left_out'])}.", ""]
    for contender, why in (results.get("cannot") or {}).items():
        lines += [f"Not run: {contender}. {why[0].upper()}{why[1:]}.", ""]
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


def _repetitions_table(results: dict, workload: str) -> list[str]:
    """Each repetition's step times, ratios to the plain script's and the machine's load; then the
    median of the paired ratios, also without the repetitions where the machine was busy."""
    runs, cores = results["runs"], results["machine"]["cores"]
    contenders = list(dict.fromkeys(r["contender"] for r in runs if r["workload"] == workload))
    steps = {c: _steps(runs, workload, c) for c in contenders}
    busy = busy_reps(runs, workload, cores)
    lines = [
        f"{workload}, repetition by repetition: step (ms), and over the plain script's of the same repetition; the",
        "1-minute load average at the start and end of each run (the highest), and the cores other processes kept",
        f"busy during the runs (the most). Busy: other processes used more than {BUSY_SHARE:.0%} of the {cores} cores during",
        "a run, which the contenders then shared.",
        "",
        "| rep | " + " | ".join(contenders) + " | 1-min load | other processes (cores) | |",
        "|---|" + "---|" * (len(contenders) + 3),
    ]
    for rep in sorted({r["rep"] for r in runs if r["workload"] == workload}):
        mine = [r for r in runs if r["workload"] == workload and r["rep"] == rep]
        row = [str(rep + 1)]
        for c in contenders:
            step, plain = steps[c].get(rep), steps.get("plain", {}).get(rep)
            versus = f" ({step / plain:.3f})" if step and plain and c != "plain" else ""
            row.append(f"{step:.1f}{versus}" if step else "failed")
        loads = [x for r in mine for x in r.get("load_1min") or []]
        others = [r["other_cores"] for r in mine if r.get("other_cores") is not None]
        row += [
            f"{max(loads):.2f}" if loads else "-",
            f"{max(others):.2f}" if others else "-",
            "busy" if rep in busy else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for c in [c for c in contenders if c != "plain" and "plain" in contenders] if busy else []:
        pairs = steps[c].keys() & steps["plain"].keys()
        quiet = pairs - busy
        if (ratio := paired_ratio(runs, workload, c)) is None:
            continue
        text = f"- {c} / plain, the median of the paired ratios: {ratio:.3f} ({_pairs(len(pairs))})"
        if (quiet_ratio := paired_ratio(runs, workload, c, quiet)) is not None:
            text += f"; {quiet_ratio:.3f} without the busy ones ({_pairs(len(quiet))})"
        else:
            text += "; every pair busy"
        lines.append(text)
    return lines


def _pairs_lines(runs: list[dict], workload: str) -> list[str]:
    """The paired ratios of PAIRS: median [min-max], and each repetition's."""
    lines = []
    for contender, reference in PAIRS:
        if ratios := paired_ratios(runs, workload, contender, reference):
            each = ", ".join(f"{r:.3f}" for r in ratios)
            lines.append(
                f"- {contender} / {reference}, step: {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
                f" ({_pairs(len(ratios))}: {each})"
            )
    return ["", "Paired step-time ratios, the median [min-max] over the repetitions:", "", *lines] if lines else []


def startup_pairs(runs: list[dict], workload: str, contender: str = "launch") -> list[tuple[float, float]]:
    """Each repetition's (first step's end after the plain script's, in s; wall time over the plain
    script's), both timed from the command's start, in order."""

    def by_rep(c: str) -> dict[int, dict]:
        return {r["rep"]: r for r in runs if (r["workload"], r["contender"]) == (workload, c) and r.get("step_ms")}

    mine, theirs = by_rep(contender), by_rep("plain")
    return [
        (mine[rep]["first_step_s"] - theirs[rep]["first_step_s"], mine[rep]["wall_s"] / theirs[rep]["wall_s"])
        for rep in sorted(mine.keys() & theirs.keys())
    ]


def _startup_lines(runs: list[dict], workload: str) -> list[str]:
    """launch's start-up against the plain script's, pair by pair: the first step and the wall time."""
    if not (pairs := startup_pairs(runs, workload)):
        return []
    later, walls = [p[0] for p in pairs], [p[1] for p in pairs]
    return [
        "",
        f"Start-up, paired ({_pairs(len(pairs))}): launch's first step ended {statistics.median(later):+.2f} s after the "
        f"plain script's [{min(later):+.2f} to {max(later):+.2f}] (each: {', '.join(f'{x:+.2f}' for x in later)}); "
        f"its wall time {statistics.median(walls):.3f}x the plain script's [{min(walls):.3f}-{max(walls):.3f}].",
    ]


def _pairs(count: int) -> str:
    return f"{count} pair{'' if count == 1 else 's'}"


def _repetitions(reps: int | dict[str, int]) -> str:
    if isinstance(reps, int):  # results.json before W4
        return f"{reps} repetition(s)"
    counts = {n: [w for w, m in reps.items() if m == n] for n in sorted(set(reps.values()))}
    return ", ".join(
        f"{n} repetition(s)" + (f" ({', '.join(ws)})" if len(counts) > 1 else "") for n, ws in counts.items()
    )


def _span(values: list[float]) -> str:
    return f"{values[0]:.0f} [{values[1]:.0f}-{values[2]:.0f}]"


def format_span(value: tuple[float, float, float] | None, fmt: str) -> str:
    if value is None:
        return "-"
    median, low, high = (fmt.format(v) for v in value)
    return f"{median} [{low}-{high}]"
