"""How long a checkpoint blocks the training loop: `launch`'s writer against `torch.save`.

    python -m bench.checkpoint_blocking [w2] [--reps 5]

The state is what `launch` saves for the workload (model and AdamW state after a step, about
126 MB for W2's 10.5M parameters), written into a fresh folder beside the repository (the same
disk as the runs). Figures: `torch.save` of the state to a file; the time `Writer.save` keeps the
loop waiting, synchronous (the default) and `asynchronous`; and the time the writer needs in
all (serializing, fsync, checksum, rename), which happens beside training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workloads  # noqa: E402
from launcher import checkpoint  # noqa: E402


def state_of(workload: str) -> dict:
    model = workloads.model(workload)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train, _ = workloads.datasets(workload)
    x, y = (torch.stack(column) for column in zip(*(train[i] for i in range(8)), strict=True))
    torch.nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten()).backward()  # W4: every token
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": [checkpoint.rng_states()]}


def measure(workload: str, reps: int) -> dict:
    state = state_of(workload)
    folder = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=ROOT))
    times: dict[str, list[float]] = {
        "torch_save_ms": [],
        "sync_blocking_ms": [],
        "async_blocking_ms": [],
        "writer_total_ms": [],
        "back_to_back_ms": [],
    }
    writers = {"sync": checkpoint.Writer(keep_last=2), "async": checkpoint.Writer(keep_last=2, asynchronous=True)}
    try:
        for rep in range(reps + 1):  # the first round warms the page cache and the writers' buffers up
            started = time.perf_counter()
            torch.save(state, folder / "plain.pt")
            plain = time.perf_counter() - started
            for mode, writer in writers.items():
                started = time.perf_counter()
                writer.save(state, checkpoint.step_path(folder / mode, rep))
                blocked = time.perf_counter() - started
                writer.wait()
                total = time.perf_counter() - started
                if rep:
                    times[f"{mode}_blocking_ms"].append(blocked * 1000)
                    if mode == "sync":
                        times["writer_total_ms"].append(total * 1000)
            # An epoch's end with a new best: best.pt, then the step checkpoint of the same step,
            # which the training loop hands over as a second name for best.pt (training/checkpointing.py's save).
            writer = writers["sync"]
            started = time.perf_counter()
            writer.save(state, folder / "sync" / checkpoint.BEST)
            writer.save_link(folder / "sync" / checkpoint.BEST, checkpoint.step_path(folder / "sync", 1000 + rep))
            back_to_back = time.perf_counter() - started
            writer.wait()
            if rep:
                times["torch_save_ms"].append(plain * 1000)
                times["back_to_back_ms"].append(back_to_back * 1000)
        size_mb = (folder / "plain.pt").stat().st_size / 1e6
    finally:
        for writer in writers.values():
            writer.close()
        shutil.rmtree(folder, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "workload": workload,
        "size_mb": round(size_mb, 1),
        "reps": reps,
        **{k: [round(medians[k], 1), round(min(v), 1), round(max(v), 1)] for k, v in times.items()},
        "sync_ratio": round(medians["sync_blocking_ms"] / medians["torch_save_ms"], 3),
        "async_ratio": round(medians["async_blocking_ms"] / medians["torch_save_ms"], 3),
        "back_to_back_ratio": round(medians["back_to_back_ms"] / medians["torch_save_ms"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", nargs="?", default="w2")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.workload, args.reps)))


if __name__ == "__main__":
    main()
