"""The benchmark suite: `launch` side by side with a plain torchrun script, Lightning and Accelerate.

    python bench/run.py                         # W1-W4 on the CPU, 3 repetitions (W4: 5)
    python bench/run.py --workloads w1 --reps 1 # the smoke run CI does
    python bench/run.py --gpu                   # G1 on every GPU of this machine
    bash bench/gpu.sh                           # G1 and G2, DDP, FSDP and compile on the GPUs (bench/RESULTS-gpu.md)

Every contender trains the same model on the same data with the same batch per process, seed,
number of processes and backend (bench/workloads.py), each in a fresh process tree, the runs
interleaved (A B C D, D C B A, ...). Figures come from the stopwatch in bench/probe.py; the table
gives medians with [min-max] and ratios to the plain script. Results: bench/RESULTS.md and
bench/results.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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

# plain-fsdp and launch-fsdp: FSDP2 (each of the workload's fsdp_units, then the root) instead of DDP;
# plain-compile and launch-compile: torch.compile with DDP.
VARIANTS = ("plain-fsdp", "launch-fsdp", "plain-compile", "launch-compile")
CONTENDERS = ("plain", "launch", "lightning-bare", "lightning", "accelerate", "single", "plain-reuse", *VARIANTS)
# The language models (W4, G2) have no Lightning or Accelerate version.
LM_CONTENDERS = ("plain", "launch", "single", "plain-reuse", *VARIANTS)
# What runs when --contenders is left out. plain-reuse (the plain script with launch's malloc
# settings, bench/README.md) runs by default on W4, whose target is a step within 2% of the plain
# script's, less than those settings alone move it: the loops are compared too, not only what
# users of each get. On the others, on request.
DEFAULT_CONTENDERS = {
    "w4": ("plain", "launch", "plain-reuse"),
    "w5": ("plain", "launch"),  # start-up with user modules: launch against the plain torchrun script
    "*": ("plain", "launch", "lightning-bare", "lightning", "accelerate", "single"),
}
# What a contender cannot train, and why: left out where asked for, and the table says why. Delete an
# entry once its cause is fixed.
CANNOT: dict[tuple[str, str], str] = {}

# `launch`'s train.reuse_freed_memory (launcher/distributed/runtime.py) through glibc's tunables.
REUSE_FREED_MEMORY = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def command(
    contender: str, workload: str, nproc: int, gpu: bool, scratch: Path, max_steps: int | None = None
) -> list[str]:
    python, w = sys.executable, WORKLOADS[workload]
    contenders = ROOT / "bench" / "contenders"
    if contender in ("plain", "plain-reuse", "plain-fsdp", "plain-compile"):
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            str(contenders / "plain_ddp.py"),
            workload,
            *{"plain-fsdp": ["--fsdp"], "plain-compile": ["--compile"]}.get(contender, []),
            *(["--max-steps", str(max_steps)] if max_steps else []),
        ]
    if contender == "single":  # one process, every core, the same global batch
        return [python, str(contenders / "plain_ddp.py"), workload, "--batch-size", str(w.batch_size * nproc)]
    if contender in ("launch", "launch-fsdp", "launch-compile"):
        where = ["--gpus", str(nproc)] if gpu else ["--nproc", str(nproc)]
        fsdp = ["distributed.strategy=fsdp", f"distributed.fsdp.shard=[{','.join(w.fsdp_units)}]"]
        fsdp += ["train.channels_last=false"] if w.channels_last else []  # see Workload.channels_last
        return [
            python,
            "-m",
            "launcher",
            str(ROOT / "bench" / "recipes" / f"{workload}.yaml"),
            *where,
            f"run.output={scratch / 'runs'}",
            *{"launch-fsdp": fsdp, "launch-compile": ["train.compile=true"]}.get(contender, []),
            *([f"train.max_steps={max_steps}"] if max_steps else []),
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
    for contender in (c for c in asked.split(",") if (workload, c) in CANNOT):
        print(f"{workload}: {contender} left out: {CANNOT[workload, contender]}", flush=True)
    return [c for c in asked.split(",") if c in able and (workload, c) not in CANNOT]


def run_once(
    contender: str, workload: str, nproc: int, gpu: bool, timeout_s: float, max_steps: int | None = None
) -> dict:
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
        # torch.compile's caches (inductor's, Triton's) start empty for every run, as `launch`'s
        # (its run folder's compile_cache/): every compiled run compiles from scratch.
        "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
    }
    if contender == "plain-reuse":
        env["GLIBC_TUNABLES"] = REUSE_FREED_MEMORY
    w, load = WORKLOADS[workload], Load()
    started = time.time()
    process = subprocess.Popen(command(contender, workload, nproc, gpu, scratch, max_steps), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout_s)
        ended = time.time()
        _reap_the_rest(process)  # their CPU time counts as the run's, not as another process's
        machine = load.measure(ended - started)
        notes_file = scratch / f"{contender}-{workload}.json"
        # gloo's abort at interpreter exit (bench/README.md) comes after the last step and the last
        # evaluation, once rank 0 has written its notes: the training is whole, and counts.
        aborted_at_exit = process.returncode != 0 and "SIGABRT" in output and notes_file.exists()
        if process.returncode != 0 and not aborted_at_exit:
            return {"failed": f"exit {process.returncode}: {output[-2000:]}", **machine}
        notes = json.loads(notes_file.read_text())
        if len(notes["ends"]) <= max(3, len(notes["ends"]) // 10):  # figures() leaves these out
            return {"failed": f"{len(notes['ends'])} steps, too few to time (the first 3 are left out)", **machine}
        if aborted_at_exit and len(notes["val"]) < w.epochs:
            return {"failed": f"exit {process.returncode}, before its last evaluation: {output[-2000:]}", **machine}
        if contender.startswith("launch"):  # its own validation, from its TensorBoard events
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


def _adopt_orphans() -> None:
    """Make this process the one that orphans of its runs are handed to (Linux's child
    subreaper), so that their CPU time is counted as the run's once reaped: `launch`'s forkserver,
    the parent of its workers, ends after `launch` does."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


PR_SET_CHILD_SUBREAPER = 36


def _reap_the_rest(process: subprocess.Popen) -> None:
    """Once the run has ended (its output closed): kill what is left of its process group, and
    wait for every child this process was handed (see _adopt_orphans)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10  # one that left the group (a daemon of its own) is not waited for longer
    with contextlib.suppress(ChildProcessError):
        while time.monotonic() < deadline:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.01)


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
        # The first step alone, from its batch in hand: where torch.compile compiles (its backward too).
        "step_one_s": ends[0] - starts[0],
        "peak_memory_mb": notes.get("peak_memory_mb"),
        "wall_s": ended - started,
        "teardown_s": ended - max(ends[-1], *(t for t, _ in validations[-1:])),
        "between_steps": sum(starts[i] - ends[i - 1] for i in steady) / sum(gaps),
        "time_to_target_s": (reached[0] - started) if reached else None,
        "steps": len(ends),
        "final_val_loss" if w.block_size else "final_val_acc": validations[-1][1] if validations else None,
        **tokens,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: w1,w2,w3,w4,w5; with --gpu: g1)")
    parser.add_argument(
        "--contenders", default=None, help=f"comma-separated, of {', '.join(CONTENDERS)} (default: each workload's own)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default: 3, W4: 5)")
    parser.add_argument(
        "--nproc", type=int, default=None, help="processes per contender (default: 2 on the CPU, every GPU with --gpu)"
    )
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument(
        "--deadline", type=float, help="start no run (nor a second try) that --timeout could carry past this many "
        "seconds from the suite's start; the runs left out are listed (bench/gpu.sh: its 8 minutes)",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int, help="optimizer steps per run, fewer than an epoch (a dry run)")
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="leave out bench/checkpoint_blocking.py (CPU figures)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    if unknown := sorted(set(args.contenders.split(",") if args.contenders else ()) - set(CONTENDERS)):
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose among {', '.join(CONTENDERS)}")
    return args


def main() -> None:
    args = arguments()
    _adopt_orphans()
    workloads = (args.workloads or ("g1" if args.gpu else "w1,w2,w3,w4,w5")).split(",")
    plan = {workload: contenders_of(workload, args.contenders) for workload in workloads}
    reps = {workload: args.reps or WORKLOADS[workload].reps for workload in workloads}
    if args.gpu:
        import torch

        nproc = args.nproc or torch.cuda.device_count()
    else:
        nproc = args.nproc or 2
    runs: list[dict] = []
    left_out: list[str] = []  # past --deadline
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
                    if args.deadline is not None and time.time() - began + args.timeout > args.deadline:
                        left_out.append(f"{workload} {contender} (rep {rep + 1}{', its second try' * (attempt > 1)})")
                        print(f"[{time.time() - began:5.0f} s] left out, past --deadline: {left_out[-1]}", flush=True)
                        break
                    result = run_once(contender, workload, nproc, args.gpu, args.timeout, args.max_steps)
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
    blocking = None if args.no_checkpoint else subprocess.run(
        [sys.executable, "-m", "bench.checkpoint_blocking", "w2" if "w2" in workloads else workloads[0], "--reps",
         str(max(*reps.values(), 5))], cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    asked = (args.contenders or "").split(",")
    cannot = {f"{w} {c}": why for (w, c), why in CANNOT.items() if w in workloads and c in asked}
    results = {"machine": report.machine(), "nproc": nproc, "gpu": args.gpu, "reps": reps, "suite_s": round(time.time() - began, 1), "runs": runs,
               "left_out": left_out, "cannot": cannot, "checkpoint": json.loads(blocking.stdout) if blocking else None}  # fmt: skip
    (args.out / "results.partial.json").unlink(missing_ok=True)
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
    # Failed at each try: twice in a row, or once where --deadline left out the second try.
    finished = {(r["workload"], r["contender"], r["rep"]) for r in runs if "failed" not in r}
    lost = list(dict.fromkeys(k for r in failed if (k := (r["workload"], r["contender"], r["rep"])) not in finished))
    if lost:
        sys.exit(
            f"{len(lost)} run(s) failed at every try: " + ", ".join(f"{w} {c} (rep {rep + 1})" for w, c, rep in lost)
        )


if __name__ == "__main__":
    main()
