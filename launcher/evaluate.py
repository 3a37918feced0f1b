"""Validation: loss and top-k accuracy over the whole validation set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    topk: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """`val/loss` and `val/acc<k>` for each k in `topk`, each sample counted once."""
    was_training = model.training
    model.eval()
    # Sums, not means: a mean of batch means would overweight a short last batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(len(topk), dtype=torch.float64, device=device)
    count = 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        loss_sum += loss.double() * len(targets)
        top = outputs.topk(max(topk), dim=1).indices
        hits = top == targets.unsqueeze(1)
        correct += torch.stack([hits[:, :k].any(dim=1).sum() for k in topk]).double()
        count += len(targets)
    model.train(was_training)
    metrics = {"val/loss": (loss_sum / max(count, 1)).item()}
    metrics.update({f"val/acc{k}": (c / max(count, 1)).item() for k, c in zip(topk, correct)})
    return metrics
