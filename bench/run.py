"""The benchmark suite: `launch` side by side with a plain torchrun script, Lightning and Accelerate.

    python bench/run.py                         # W1-W4 on the CPU, 3 repetitions (W4: 5)
    python bench/run.py --workloads w1 --reps 1 # the smoke run CI does
    python bench/run.py --gpu                   # G1 on every GPU of this machine

Every contender trains the same model on the same data with the same batch per process, seed,
number of processes and backend (bench/workloads.py), each in a fresh process tree, the runs
interleaved (A B C D, D C B A, ...). Figures come from the stopwatch in bench/probe.py; the table
gives medians with [min-max] and ratios to the plain script. Results: bench/RESULTS.md and
bench/results.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.workloads import WORKLOADS, Workload  # noqa: E402

CONTENDERS = ("plain", "launch", "lightning-bare", "lightning", "accelerate", "single", "plain-reuse")
# W4 (the language model) has no Lightning or Accelerate version.
LM_CONTENDERS = ("plain", "launch", "single", "plain-reuse")
# What runs when --contenders is left out. plain-reuse (the plain script with launch's malloc
# settings, bench/README.md) runs by default on W4, whose target is a step within 2% of the plain
# script's, less than those settings alone move it: the loops are compared too, not only what
# users of each get. On the others, on request.
DEFAULT_CONTENDERS = {
    "w4": ("plain", "launch", "plain-reuse"),
    "*": ("plain", "launch", "lightning-bare", "lightning", "accelerate", "single"),
}
# `launch`'s train.reuse_freed_memory (launcher/distributed/runtime.py) through glibc's tunables.
REUSE_FREED_MEMORY = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def command(contender: str, workload: str, nproc: int, gpu: bool, scratch: Path) -> list[str]:
    python, w = sys.executable, WORKLOADS[workload]
    contenders = ROOT / "bench" / "contenders"
    if contender in ("plain", "plain-reuse"):
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            str(contenders / "plain_ddp.py"),
            workload,
        ]
    if contender == "single":  # one process, every core, the same global batch
        return [python, str(contenders / "plain_ddp.py"), workload, "--batch-size", str(w.batch_size * nproc)]
    if contender == "launch":
        where = ["--gpus", str(nproc)] if gpu else ["--nproc", str(nproc)]
        return [
            python,
            "-m",
            "launcher",
            str(ROOT / "bench" / "recipes" / f"{workload}.yaml"),
            *where,
            f"run.output={scratch / 'runs'}",
        ]
    if contender.startswith("lightning"):
        bare = ["--bare"] if contender == "lightning-bare" else []
        return [
            python,
            str(contenders / "lightning_ddp.py"),
            workload,
            "--nproc",
            str(nproc),
            "--output",
            str(scratch / "lightning"),
            *bare,
        ]
    if contender == "accelerate":
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
                "--mixed_precision", "bf16" if gpu else "no", "--dynamo_backend", "no", str(contenders / "accelerate_ddp.py"), workload]  # fmt: skip
    raise ValueError(contender)


def contenders_of(workload: str, asked: str | None) -> list[str]:
    """The contenders asked for (else the workload's defaults) that have a version of `workload`."""
    if asked is None:
        return list(DEFAULT_CONTENDERS.get(workload, DEFAULT_CONTENDERS["*"]))
    able = LM_CONTENDERS if WORKLOADS[workload].block_size else CONTENDERS
    if left_out := [c for c in asked.split(",") if c not in able]:
        print(f"{workload}: no {', '.join(left_out)} version; left out", flush=True)
    return [c for c in asked.split(",") if c in able]


def run_once(contender: str, workload: str, nproc: int, gpu: bool, timeout_s: float) -> dict:
    """One run in a fresh process tree; its figures, from rank 0's stopwatch."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{contender}-{workload}-"))
    # The same threads per process for every contender (torchrun and accelerate would set 1, launch
    # and Lightning cores / processes): the launchers are compared, not their thread defaults.
    cores = len(os.sched_getaffinity(0))
    threads = cores if contender == "single" and not gpu else max(1, cores // nproc)
    env = {
        **os.environ,
        "BENCH_OUT": str(scratch),
        "BENCH_CONTENDER": contender,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": str(threads),
    }
    if contender == "plain-reuse":
        env["GLIBC_TUNABLES"] = REUSE_FREED_MEMORY
    w, load = WORKLOADS[workload], Load()
    started = time.time()
    process = subprocess.Popen(command(contender, workload, nproc, gpu, scratch), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout_s)
        ended = time.time()
        machine = load.measure(ended - started)
        notes_file = scratch / f"{contender}-{workload}.json"
        # gloo's abort at interpreter exit (bench/README.md) comes after the last step and the last
        # evaluation, once rank 0 has written its notes: the training is whole, and counts.
        aborted_at_exit = process.returncode != 0 and "SIGABRT" in output and notes_file.exists()
        if process.returncode != 0 and not aborted_at_exit:
            return {"failed": f"exit {process.returncode}: {output[-2000:]}", **machine}
        notes = json.loads(notes_file.read_text())
        if aborted_at_exit and len(notes["val"]) < w.epochs:
            return {"failed": f"exit {process.returncode}, before its last evaluation: {output[-2000:]}", **machine}
        if contender == "launch":  # its own validation, from its TensorBoard events
            notes["val"] = report.launch_validation(scratch / "runs", f"val/{w.val_metric}")
        result = {**figures(notes, started, ended, w, global_batch=w.batch_size * nproc), **machine}
        return {**result, "aborted_at_exit": True} if aborted_at_exit else result
    except subprocess.TimeoutExpired:
        return {"failed": f"no end after {timeout_s:.0f} s"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the whole tree: workers left behind would skew the next runs
        process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


class Load:
    """What else the machine did during a run: the 1-minute load average at its start and end, and
    the cores that other processes kept busy (all CPU time, from /proc/stat, less the run's own:
    the process trees this one has waited for). On a machine as busy as it has cores the step
    times measure the sharing, not the contenders (bench/README.md)."""

    def __init__(self) -> None:
        self.load_start = os.getloadavg()[0]
        self.busy_s, self.ours_s = _busy_cpu_s(), _children_cpu_s()

    def measure(self, seconds: float) -> dict:
        busy, ours = _busy_cpu_s() - self.busy_s, _children_cpu_s() - self.ours_s
        others = max(0.0, busy - ours) / seconds if busy and seconds > 0 else None
        return {"load_1min": [round(self.load_start, 2), round(os.getloadavg()[0], 2)],
                "other_cores": None if others is None else round(others, 3)}  # fmt: skip


def _busy_cpu_s() -> float:
    """CPU seconds every process of the machine has used since it started; 0 without /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]  # the "cpu" line: every core
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def figures(notes: dict, started: float, ended: float, w: Workload, global_batch: int) -> dict:
    starts, ends, evals, validations = notes["starts"], notes["ends"], notes["evals"], notes["val"]
    warmup = max(3, len(ends) // 10)
    steady = [
        i for i in range(warmup, len(ends)) if not any(ends[i - 1] < t < ends[i] for t in evals)
    ]  # no evaluation in between
    gaps = [ends[i] - ends[i - 1] for i in steady]
    cpu = notes.get("cpu") or []
    reached = [t for t, acc in validations if w.target_accuracy is not None and acc >= w.target_accuracy]
    tokens = {"tokens_per_s": global_batch * w.block_size / statistics.median(gaps)} if w.block_size else {}
    return {
        "step_ms": statistics.median(gaps) * 1000,
        # Rank 0's CPU time a step, every thread: what a step costs, whatever else the machine runs.
        "cpu_ms": statistics.median(cpu[i] - cpu[i - 1] for i in steady) * 1000 if len(cpu) == len(ends) else None,
        # From the mean: costs that come every N steps (logging, checks) count here, not in the median.
        "samples_per_s": global_batch * len(gaps) / sum(gaps),
        "first_step_s": ends[0] - started,
        "wall_s": ended - started,
        "teardown_s": ended - max(ends[-1], *(t for t, _ in validations[-1:])),
        "between_steps": sum(starts[i] - ends[i - 1] for i in steady) / sum(gaps),
        "time_to_target_s": (reached[0] - started) if reached else None,
        "steps": len(ends),
        "final_val_loss" if w.block_size else "final_val_acc": validations[-1][1] if validations else None,
        **tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: w1,w2,w3,w4; with --gpu: g1)")
    parser.add_argument(
        "--contenders", default=None, help=f"comma-separated, of {', '.join(CONTENDERS)} (default: each workload's own)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default: 3, W4: 5)")
    parser.add_argument(
        "--nproc", type=int, default=None, help="processes per contender (default: 2 on the CPU, every GPU with --gpu)"
    )
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    workloads = (args.workloads or ("g1" if args.gpu else "w1,w2,w3,w4")).split(",")
    if unknown := sorted(set(args.contenders.split(",") if args.contenders else ()) - set(CONTENDERS)):
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose among {', '.join(CONTENDERS)}")
    plan = {workload: contenders_of(workload, args.contenders) for workload in workloads}
    reps = {workload: args.reps or WORKLOADS[workload].reps for workload in workloads}
    if args.gpu:
        import torch

        nproc = args.nproc or torch.cuda.device_count()
    else:
        nproc = args.nproc or 2
    runs: list[dict] = []
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    for rep in range(max(reps.values())):
        for workload in (w for w in workloads if rep < reps[w]):
            # Interleaved, every other repetition backwards (A B C, C B A, ...): none always runs first, and
            # the plain script and launch are always next to each other, the pairs of the paired ratio.
            for contender in plan[workload][:: -1 if rep % 2 else 1]:
                # A failed run is recorded, then tried once more: the suite still has its figures, and a
                # contender that fails at random (see bench/README.md) does not fail the suite alone.
                for attempt in (1, 2):
                    result = run_once(contender, workload, nproc, args.gpu, args.timeout)
                    runs.append(
                        {"rep": rep, "workload": workload, "contender": contender, "attempt": attempt, **result}
                    )
                    (args.out / "results.partial.json").write_text(json.dumps(runs, indent=1) + "\n")
                    done = f"[{time.time() - began:5.0f} s] rep {rep + 1}/{reps[workload]} {workload} {contender:15s}"
                    if "failed" not in result:
                        aborted = (
                            "  (aborted at exit after training: gloo, see bench/README.md)"
                            if result.get("aborted_at_exit")
                            else ""
                        )
                        load = "  load {:.2f}-{:.2f}".format(*result["load_1min"])
                        print(
                            f"{done} step {result['step_ms']:7.1f} ms  first step {result['first_step_s']:5.1f} s  wall {result['wall_s']:5.1f} s{load}{aborted}",
                            flush=True,
                        )
                        break
                    print(
                        f"{done} FAILED{' (trying once more)' if attempt == 1 else ''} {result['failed']}", flush=True
                    )
    blocking = subprocess.run([sys.executable, "-m", "bench.checkpoint_blocking", "w2" if "w2" in workloads else workloads[0], "--reps",
                               str(max(*reps.values(), 5))], cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    results = {"machine": report.machine(), "nproc": nproc, "gpu": args.gpu, "reps": reps, "suite_s": round(time.time() - began, 1), "runs": runs,
               "checkpoint": json.loads(blocking.stdout)}  # fmt: skip
    (args.out / "results.partial.json").unlink()
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = report.markdown(results)
    (args.out / "RESULTS.md").write_text(table)
    print(table)
    failed = [r for r in runs if "failed" in r]
    if failed:
        print(
            f"{len(failed)} run(s) failed: "
            + ", ".join(f"{r['workload']} {r['contender']} (rep {r['rep'] + 1})" for r in failed),
            flush=True,
        )
    twice = [r for r in failed if r["attempt"] > 1]  # attempt 2, the last
    if twice:
        sys.exit(
            f"{len(twice)} run(s) failed twice in a row: "
            + ", ".join(f"{r['workload']} {r['contender']} (rep {r['rep'] + 1})" for r in twice)
        )


if __name__ == "__main__":
    main()
