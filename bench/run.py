"""The benchmark suite: `launch` side by side with a plain torchrun script, Lightning and Accelerate.

    python bench/run.py                         # W1-W3 on the CPU, 3 repetitions (< 10 min on 2 cores)
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
import json
import os
import shutil
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
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(contenders / "plain_ddp.py"), workload]
    if contender == "single":  # one process, every core, the same global batch
        return [python, str(contenders / "plain_ddp.py"), workload, "--batch-size", str(w.batch_size * nproc)]
    if contender == "launch":
        where = ["--gpus", str(nproc)] if gpu else ["--nproc", str(nproc)]
        return [python, "-m", "launcher", str(ROOT / "bench" / "recipes" / f"{workload}.yaml"), *where, f"run.output={scratch / 'runs'}"]
    if contender.startswith("lightning"):
        bare = ["--bare"] if contender == "lightning-bare" else []
        return [python, str(contenders / "lightning_ddp.py"), workload, "--nproc", str(nproc), "--output", str(scratch / "lightning"), *bare]
    if contender == "accelerate":
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
                "--mixed_precision", "bf16" if gpu else "no", "--dynamo_backend", "no", str(contenders / "accelerate_ddp.py"), workload]  # fmt: skip
    raise ValueError(contender)


def run_once(contender: str, workload: str, nproc: int, gpu: bool, timeout_s: float) -> dict:
    """One run in a fresh process tree; its figures, from rank 0's stopwatch."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{contender}-{workload}-"))
    env = {**os.environ, "BENCH_OUT": str(scratch), "BENCH_CONTENDER": contender, "PYTHONPATH": str(ROOT)}
    started = time.time()
    try:
        done = subprocess.run(command(contender, workload, nproc, gpu, scratch), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s, start_new_session=True)  # fmt: skip
        ended = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"{contender} {workload} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
        notes = json.loads((scratch / f"{contender}-{workload}.json").read_text())
        if contender == "launch":  # its own validation, from its TensorBoard events
            notes["val_acc"] = report.launch_accuracies(scratch / "runs")
        return figures(notes, started, ended, WORKLOADS[workload].target_accuracy, global_batch=WORKLOADS[workload].batch_size * nproc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def figures(notes: dict, started: float, ended: float, target_accuracy: float | None, global_batch: int) -> dict:
    starts, ends, evals = notes["starts"], notes["ends"], notes["evals"]
    warmup = max(3, len(ends) // 10)
    steady = [i for i in range(warmup, len(ends)) if not any(ends[i - 1] < t < ends[i] for t in evals)]  # no evaluation in between
    step_s = statistics.median(ends[i] - ends[i - 1] for i in steady)
    waiting = sum(starts[i] - ends[i - 1] for i in steady)
    reached = [t for t, acc in notes["val_acc"] if target_accuracy is not None and acc >= target_accuracy]
    return {
        "step_ms": step_s * 1000,
        "samples_per_s": global_batch / step_s,
        "first_step_s": ends[0] - started,
        "wall_s": ended - started,
        "teardown_s": ended - max(ends[-1], *(evals or [0])),
        "data_stall": waiting / sum(ends[i] - ends[i - 1] for i in steady),
        "time_to_target_s": (reached[0] - started) if reached else None,
        "steps": len(ends),
        "final_val_acc": notes["val_acc"][-1][1] if notes["val_acc"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: w1,w2,w3; with --gpu: g1)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=None, help="processes per contender (default: 2 on the CPU, every GPU with --gpu)")
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
    for rep in range(args.reps):
        for workload in workloads:
            for contender in contenders:
                result = run_once(contender, workload, nproc, args.gpu, args.timeout)
                runs.append({"rep": rep, "workload": workload, "contender": contender, **result})
                print(f"[{time.time() - began:6.0f} s] rep {rep + 1}/{args.reps} {workload} {contender:15s} "
                      f"step {result['step_ms']:7.1f} ms  first step {result['first_step_s']:5.1f} s  wall {result['wall_s']:5.1f} s", flush=True)  # fmt: skip
    results = {"machine": report.machine(), "nproc": nproc, "reps": args.reps, "suite_s": round(time.time() - began, 1), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = report.markdown(results)
    (args.out / "RESULTS.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
