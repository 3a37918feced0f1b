"""`launch eval`, `launch predict` and `launch export`: a checkpoint's metrics, its predictions
for files, and its model's weights in one file."""

from __future__ import annotations

from pathlib import Path

from launcher import checkpoint
from launcher.checkpoint import sharded
from launcher.config.schema import Recipe
from launcher.distributed.runtime import single_process
from launcher.rundir import find_resume, is_checkpoint_folder
from launcher.training.inference import evaluate_checkpoint
from launcher.training.inference import predict as run_predict


def evaluate(recipe: Recipe, checkpoint_path: Path, force_cpu: bool) -> int:

    metrics = evaluate_checkpoint(recipe, checkpoint_path, single_process(force_cpu).device)
    for name, value in metrics.items():
        print(f"{name} {value:.6f}")
    return 0


def predict(recipe: Recipe, checkpoint_path: Path, files: list[str], force_cpu: bool, prompts: list[str]) -> int:
    """One line per input: what, a tab, the answer (the class and its probability, the value...);
    an answer of several lines (generated text) under a `==> what <==` header instead."""
    device = single_process(force_cpu).device
    for what, answer in run_predict(recipe, checkpoint_path, files, device, prompts):
        print(f"==> {what} <==\n{answer}" if "\n" in answer else f"{what}\t{answer}", flush=True)
    return 0


def export(target: Path, out: Path) -> int:
    """`launch export`: the model's state dict of a checkpoint (a sharded one put together) in
    one file, for `model.load_state_dict(torch.load(FILE, weights_only=True))`."""
    path = target if target.is_file() or is_checkpoint_folder(target) else find_resume(str(target), "", "")[1]
    state = sharded.load_whole(path) if sharded.is_sharded(path) else checkpoint.load(path)["model"]
    checkpoint.save(state, out)
    count = sum(t.numel() for t in state.values())
    print(f"{out}: the model of {path} ({len(state)} tensors, {count:,} numbers)")
    return 0
