"""Validation: loss and top-k accuracy over the whole validation set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from launcher.distributed.process_group import all_reduce_sum


def measured_topk(metrics: Sequence[str], num_classes: int) -> tuple[int, ...]:
    """The k of each top-k accuracy asked for in eval.metrics that makes sense for the class count."""
    return tuple(k for k in (1, 5) if f"acc{k}" in metrics and k <= num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    device: torch.device,
    *,
    autocast: contextlib.AbstractContextManager,
    topk: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """`val/loss` and `val/acc<k>` for each k in `topk`, each sample counted once.

    With several workers each evaluates its own shard and the sums are added up across them, so
    the metrics are those of exactly the whole validation set.
    """
    was_training = model.training
    model.eval()
    # Sums, not means: a mean of batch means would overweight a short last batch.
    # sums = [loss, correct@k..., count]
    sums = torch.zeros(len(topk) + 2, dtype=torch.float64, device=device)
    for batch_inputs, batch_targets in batches:
        inputs, targets = batch_inputs.to(device, non_blocking=True), batch_targets.to(device, non_blocking=True)
        with autocast:
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        sums[0] += loss.double() * len(targets)
        if topk:
            hits = outputs.topk(max(topk), dim=1).indices == targets.unsqueeze(1)
            sums[1:-1] += torch.stack([hits[:, :k].any(dim=1).sum() for k in topk]).double()
        sums[-1] += len(targets)
    model.train(was_training)
    loss_sum, *correct, count = all_reduce_sum(sums).tolist()
    metrics = {"val/loss": loss_sum / max(count, 1)}
    metrics.update({f"val/acc{k}": c / max(count, 1) for k, c in zip(topk, correct, strict=True)})
    return metrics
