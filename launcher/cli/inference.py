"""`launch eval` and `launch predict`: a checkpoint's metrics, and its predictions for files."""

from __future__ import annotations

from pathlib import Path

from launcher.config.schema import Recipe
from launcher.distributed.runtime import single_process
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
