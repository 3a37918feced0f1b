"""The plain script and `launch` at the same time, one process each, each pinned to its own core.

    python -m bench.side_by_side w4 [--rounds 4] [--plain-reuse] [--launch key=value ...]

Where the machine's speed drifts from one minute to the next (a shared virtual machine: W4's
steps took 250 to 350 ms from run to run, the same script in both), runs one after the other
differ by more than the few % to resolve. Run at the same time, both see the same machine:
each process gets a core of its own (taskset), with one thread, and the cores are swapped every
round, so that neither keeps the better one. One process each: `launch RECIPE --cpu` against
`plain_ddp.py` without torchrun, the same batch; the loops are compared, not DDP (the same
torch code in both). `--plain-reuse` gives the plain script launch's malloc settings; `--launch`
gives launch overrides (train.reuse_freed_memory=false). Linux only (taskset).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import REUSE_FREED_MEMORY  # noqa: E402
from bench.workloads import WORKLOADS  # noqa: E402


def median_step_ms(notes: dict) -> float:
    """The median step after the first 10% (at least 3), as bench/run.py takes it."""
    ends = notes["ends"]
    return statistics.median(ends[i] - ends[i - 1] for i in range(max(3, len(ends) // 10), len(ends))) * 1000


def one_round(workload: str, cores: dict[str, int], plain_reuse: bool, overrides: list[str]) -> dict[str, float]:
    """Both contenders at once, each on its core; their median steps (ms)."""
    scratch = {who: Path(tempfile.mkdtemp(prefix=f"bench-side-{who}-")) for who in cores}
    commands = {
        "plain": [sys.executable, str(ROOT / "bench" / "contenders" / "plain_ddp.py"), workload],
        "launch": [sys.executable, "-m", "launcher", str(ROOT / "bench" / "recipes" / f"{workload}.yaml"), "--cpu",
                   f"run.output={scratch['launch'] / 'runs'}", *overrides],
    }  # fmt: skip
    processes = {}
    try:
        for who, core in cores.items():
            env = {**os.environ, "BENCH_OUT": str(scratch[who]), "BENCH_CONTENDER": who, "PYTHONPATH": str(ROOT),
                   "OMP_NUM_THREADS": "1"}  # fmt: skip
            if who == "plain" and plain_reuse:
                env["GLIBC_TUNABLES"] = REUSE_FREED_MEMORY
            processes[who] = subprocess.Popen(["taskset", "-c", str(core), *commands[who]], cwd=ROOT, env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        steps = {}
        for who, process in processes.items():
            _, errors = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"{who} failed (exit {process.returncode}): {errors[-2000:]}")
            steps[who] = median_step_ms(json.loads((scratch[who] / f"{who}-{workload}.json").read_text()))
        return steps
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for folder in scratch.values():
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=sorted(w for w, spec in WORKLOADS.items() if not spec.gpu))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--plain-reuse", action="store_true", help="the plain script with launch's malloc settings")
    parser.add_argument("--launch", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for launch")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:  # noqa: PLR2004
        sys.exit("side_by_side needs 2 cores, one for each")
    ratios = []
    print("| round | plain (ms), core | launch (ms), core | launch / plain |\n|---|---|---|---|", flush=True)
    for round_ in range(args.rounds):
        cores = {"plain": round_ % 2, "launch": 1 - round_ % 2}
        steps = one_round(args.workload, cores, args.plain_reuse, args.launch)
        ratios.append(steps["launch"] / steps["plain"])
        print(f"| {round_ + 1} | {steps['plain']:.1f}, {cores['plain']} | {steps['launch']:.1f}, {cores['launch']} | "
              f"{ratios[-1]:.3f} |", flush=True)  # fmt: skip
    print(f"\nlaunch / plain: median {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")


if __name__ == "__main__":
    main()
