"""The benchmark suite: `launch` side by side with a plain torchrun script, Lightning and Accelerate.

    python bench/run.py                         # W1-W3 on the CPU, 3 repetitions (about 10 min on 2 cores)
    python bench/run.py --workloads w1 --reps 1 # the smoke run CI does
    python bench/run.py --gpu                   # G1 on every GPU of this machine

Every contender trains the same model on the same data with the same batch per process, seed,
number of processes and backend (bench/workloads.py), each in a fresh process tree, the runs
interleaved (A B C D A B C D ...). Figures come from the stopwatch in bench/probe.py; the table
gives medians with [min-max] and ratios to the plain script. Results: bench/RESULTS.md and
bench/results.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
from bench.workloads import WORKLOADS  # noqa: E402

CONTENDERS = ("plain", "launch", "lightning-bare", "lightning", "accelerate", "single")


def command(contender: str, workload: str, nproc: int, gpu: bool, scratch: Path) -> list[str]:
    python, w = sys.executable, WORKLOADS[workload]
    contenders = ROOT / "bench" / "contenders"
    if contender == "plain":
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
    started = time.time()
    process = subprocess.Popen(command(contender, workload, nproc, gpu, scratch), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout_s)
        ended = time.time()
        notes_file = scratch / f"{contender}-{workload}.json"
        # gloo's abort at interpreter exit (bench/README.md) comes after the last step and the last
        # evaluation, once rank 0 has written its notes: the training is whole, and counts.
        aborted_at_exit = process.returncode != 0 and "SIGABRT" in output and notes_file.exists()
        if process.returncode != 0 and not aborted_at_exit:
            return {"failed": f"exit {process.returncode}: {output[-2000:]}"}
        notes = json.loads(notes_file.read_text())
        if aborted_at_exit and len(notes["val_acc"]) < WORKLOADS[workload].epochs:
            return {"failed": f"exit {process.returncode}, before its last evaluation: {output[-2000:]}"}
        if contender == "launch":  # its own validation, from its TensorBoard events
            notes["val_acc"] = report.launch_accuracies(scratch / "runs")
        result = figures(
            notes,
            started,
            ended,
            WORKLOADS[workload].target_accuracy,
            global_batch=WORKLOADS[workload].batch_size * nproc,
        )
        return {**result, "aborted_at_exit": True} if aborted_at_exit else result
    except subprocess.TimeoutExpired:
        return {"failed": f"no end after {timeout_s:.0f} s"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the whole tree: workers left behind would skew the next runs
        process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def figures(notes: dict, started: float, ended: float, target_accuracy: float | None, global_batch: int) -> dict:
    starts, ends, evals, accuracies = notes["starts"], notes["ends"], notes["evals"], notes["val_acc"]
    warmup = max(3, len(ends) // 10)
    steady = [
        i for i in range(warmup, len(ends)) if not any(ends[i - 1] < t < ends[i] for t in evals)
    ]  # no evaluation in between
    gaps = [ends[i] - ends[i - 1] for i in steady]
    reached = [t for t, acc in accuracies if target_accuracy is not None and acc >= target_accuracy]
    return {
        "step_ms": statistics.median(gaps) * 1000,
        # From the mean: costs that come every N steps (logging, checks) count here, not in the median.
        "samples_per_s": global_batch * len(gaps) / sum(gaps),
        "first_step_s": ends[0] - started,
        "wall_s": ended - started,
        "teardown_s": ended - max(ends[-1], *(t for t, _ in accuracies[-1:])),
        "between_steps": sum(starts[i] - ends[i - 1] for i in steady) / sum(gaps),
        "time_to_target_s": (reached[0] - started) if reached else None,
        "steps": len(ends),
        "final_val_acc": accuracies[-1][1] if accuracies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: w1,w2,w3; with --gpu: g1)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--nproc", type=int, default=None, help="processes per contender (default: 2 on the CPU, every GPU with --gpu)"
    )
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    workloads = (args.workloads or ("g1" if args.gpu else "w1,w2,w3")).split(",")
    contenders = args.contenders.split(",")
    if args.gpu:
        import torch

        nproc = args.nproc or torch.cuda.device_count()
    else:
        nproc = args.nproc or 2
    runs: list[dict] = []
    began = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    for rep in range(args.reps):
        for workload in workloads:
            # Interleaved, and each repetition starts with another contender: none always runs first.
            for contender in contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]:
                # A failed run is recorded, then tried once more: the suite still has its figures, and a
                # contender that fails at random (see bench/README.md) does not fail the suite alone.
                for attempt in (1, 2):
                    result = run_once(contender, workload, nproc, args.gpu, args.timeout)
                    runs.append(
                        {"rep": rep, "workload": workload, "contender": contender, "attempt": attempt, **result}
                    )
                    (args.out / "results.partial.json").write_text(json.dumps(runs, indent=1) + "\n")
                    done = f"[{time.time() - began:5.0f} s] rep {rep + 1}/{args.reps} {workload} {contender:15s}"
                    if "failed" not in result:
                        aborted = (
                            "  (aborted at exit after training: gloo, see bench/README.md)"
                            if result.get("aborted_at_exit")
                            else ""
                        )
                        print(
                            f"{done} step {result['step_ms']:7.1f} ms  first step {result['first_step_s']:5.1f} s  wall {result['wall_s']:5.1f} s{aborted}",
                            flush=True,
                        )
                        break
                    print(
                        f"{done} FAILED{' (trying once more)' if attempt == 1 else ''} {result['failed']}", flush=True
                    )
    blocking = subprocess.run([sys.executable, "-m", "bench.checkpoint_blocking", "w2" if "w2" in workloads else workloads[0], "--reps",
                               str(max(args.reps, 5))], cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    results = {"machine": report.machine(), "nproc": nproc, "gpu": args.gpu, "reps": args.reps, "suite_s": round(time.time() - began, 1), "runs": runs,
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
