"""The task: what a batch's loss is and what an evaluation measures. Built in: classification
(the recipe's loss on class scores; accuracy, F1, AUROC) and regression (MAE, RMSE, R2); the
metrics are torchmetrics'. Another task plugs in here, behind the same Protocol. A batch is
whatever the loader yields (tuples, dicts, nested), moved to the device by the caller
(`training.batches`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import torch
from torch import nn

from launcher.config.schema import Best
from launcher.data.datasets import DataInfo
from launcher.distributed.process_group import all_reduce_sum
from launcher.distributed.wrapper import for_evaluation, forwards_run_collectives
from launcher.errors import UserError
from launcher.training.batches import to_device
from launcher.training.metrics import empty_list_states, fill_empty_list_states

if TYPE_CHECKING:
    from torchmetrics import Metric


class Step(NamedTuple):
    """One batch through the model: the loss to go backward from (a mean over `items`: samples or
    tokens), what the model returned, and the targets the metrics compare it with."""

    loss: torch.Tensor
    outputs: Any
    targets: Any
    items: int


class Task(Protocol):
    """What the loop and `launch predict` ask of a task. A user's task (`task: {name: module:attr}`)
    implements it, most simply by subclassing `TaskBase`, which gives every part but `step`."""

    counted: tuple[str, ...]  # the tags of the metrics `counts` gives (val/acc1, ...)
    metrics: dict[str, Metric]  # torchmetrics', by the tag they are logged under (val/f1_macro, val/mae, ...)
    unit: str  # what Step.items counts: "samples" or "tokens" (logged as train/<unit>_per_s)

    def step(self, model: nn.Module, batch: Any) -> Step:
        """Run the model on one batch (already on the device) and compute its loss."""
        ...

    def update(self, step: Step) -> None:
        """Add one validation batch's outputs and targets to the metrics."""
        ...

    def counts(self, step: Step) -> dict[str, torch.Tensor]:
        """Metrics the task counts itself, as a count of items per tag (val/acc1: the correct
        ones): added up across ranks with the loss, divided by the items at the end."""
        ...

    def derived(self, results: dict[str, float]) -> dict[str, float]:
        """Metrics that follow from the whole evaluation's others (val/perplexity from val/loss)."""
        ...

    def answer(self, model: nn.Module, inputs: torch.Tensor, info: DataInfo) -> str:
        """`launch predict`: the model's answer for one input (a batch of one, on the device), as printed."""
        ...


class TaskBase:
    """Defaults for every part of Task but `step`: no metric of its own beyond the loss (the
    recipe's eval.metrics are added as `metrics`), items counted as samples, no answer."""

    counted: tuple[str, ...] = ()
    unit = "samples"

    def __init__(self, metrics: dict[str, Metric] | None = None) -> None:
        self.metrics = dict(metrics or {})

    def update(self, step: Step) -> None:
        for metric in self.metrics.values():
            metric.update(step.outputs, step.targets)

    def counts(self, step: Step) -> dict[str, torch.Tensor]:
        return {}

    def derived(self, results: dict[str, float]) -> dict[str, float]:
        return {}

    def answer(self, model: nn.Module, inputs: torch.Tensor, info: DataInfo) -> str:
        raise UserError(f"launch predict: the task {type(self).__name__} does not say how to answer (Task.answer)")


def metric_tags(task: Task) -> list[str]:
    """What `evaluate` returns: the values checkpoint.best.metric and a sweep's --metric may take."""
    return ["val/loss", *task.counted, *task.metrics, *task.derived({"val/loss": 0.0})]


def best_mode(task: Task, best: Best) -> Literal["max", "min"]:
    """Whether best.pt follows the maximum or the minimum of checkpoint.best.metric: the recipe's
    mode, else the metric's own `higher_is_better` (torchmetrics'; a user's metric may say min
    for any name), else by its name."""
    return best.mode_for(getattr(task.metrics.get(best.resolved_metric), "higher_is_better", None))


@torch.no_grad()
def evaluate(
    task: Task,
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> dict[str, float]:
    """val/loss and each of the task's metrics over the whole validation set: each rank evaluates
    its own shard; the loss sums are added up across ranks and the metrics gather their states.
    Ranks may have different numbers of batches, or none (more ranks than samples): nothing
    here runs a collective per batch (`for_evaluation`), and a rank with no batch still gives
    every metric states of the others' kind (`fill_empty_list_states`).

    Sums, not means: a mean of batch means would overweight a short last batch.
    """
    net = for_evaluation(model)
    was_training = net.training
    net.eval()
    for metric in task.metrics.values():
        metric.to(device).reset()
    totals: dict[str, torch.Tensor] = {}
    for batch, counts in _in_step(batches, device) if forwards_run_collectives(net) else ((b, True) for b in batches):
        with autocast:
            step = task.step(net, to_device(batch, device))
        if not counts:
            continue
        counted = {"val/loss": step.loss.double() * step.items, **task.counts(step)}
        counted["items"] = torch.tensor(step.items, dtype=torch.float64, device=device)
        for key, value in counted.items():
            totals[key] = totals.get(key, 0) + value.double()
        task.update(step)
    net.train(was_training)
    totals["empty"] = torch.tensor(empty_list_states(task.metrics), dtype=torch.float64, device=device)
    keys = ["val/loss", *task.counted, "items", "empty"]  # the same on every rank, one with no batch too
    summed = all_reduce_sum(
        torch.stack([totals.get(k, torch.zeros((), dtype=torch.float64, device=device)) for k in keys])
    )
    by_key = dict(zip(keys, summed.tolist(), strict=True))
    if by_key.pop("empty"):  # on some rank: every rank takes part
        fill_empty_list_states(task.metrics)
    items = max(by_key.pop("items"), 1)
    results = {
        **{k: v / items for k, v in by_key.items()},
        **{tag: float(m.compute()) for tag, m in task.metrics.items()},
    }
    return {**results, **task.derived(results)}


def _in_step(batches: Iterable[Any], device: torch.device) -> Iterator[tuple[Any, bool]]:
    """(batch, whether it counts), as many as the rank with the most batches has: where each
    forward gathers parameters from every rank (FSDP), a rank whose shard has ended runs its
    last batch again, uncounted, until every rank's has. One all-reduce per batch says whether
    any rank still has one (the forward's own all-gathers cost far more)."""
    iterator, spare = iter(batches), None
    while True:
        batch = next(iterator, None)
        if not all_reduce_sum(torch.tensor([batch is not None], dtype=torch.float32, device=device)).item():
            return
        if batch is not None:
            spare = batch
            yield batch, True
            continue
        if spare is None:  # an empty shard (more ranks than samples): a batch of the dataset's first sample
            spare = _first_sample_batch(batches)
        yield spare, False


def _first_sample_batch(batches: Iterable[Any]) -> Any:
    loader = batches if isinstance(batches, torch.utils.data.DataLoader) else None
    if loader is None or isinstance(loader.dataset, torch.utils.data.IterableDataset):
        raise UserError(
            "a rank has no validation batch, and its sharded model needs one to keep in step: use fewer ranks"
        )
    collate = loader.collate_fn or torch.utils.data.default_collate
    return collate([loader.dataset[0]])


class Classification(TaskBase):
    """The recipe's loss on class scores; the named metrics on them (acc1, acc5, f1_macro, auroc)."""

    def __init__(self, loss_fn: nn.Module, topk: tuple[int, ...], metrics: dict[str, Metric]) -> None:
        super().__init__(metrics)
        self.loss_fn, self.topk = loss_fn, topk
        self.counted = tuple(f"val/acc{k}" for k in topk)

    def step(self, model: nn.Module, batch: Any) -> Step:
        inputs, targets = batch
        outputs = model(inputs)
        return Step(self.loss_fn(outputs, targets), outputs, targets, len(targets))

    def counts(self, step: Step) -> dict[str, torch.Tensor]:
        if not self.topk:
            return {}
        hits = step.outputs.topk(max(self.topk), dim=1).indices == step.targets.unsqueeze(1)
        return {f"val/acc{k}": hits[:, :k].any(dim=1).sum() for k in self.topk}

    def update(self, step: Step) -> None:
        for metric in self.metrics.values():
            metric.update(step.outputs.float(), step.targets)

    def answer(self, model: nn.Module, inputs: torch.Tensor, info: DataInfo) -> str:
        """The likeliest class and its probability."""
        probabilities = model(inputs).float().softmax(dim=1)[0]
        index = int(probabilities.argmax())
        return f"{info.classes[index]}\t{float(probabilities[index]):.3f}"


class Regression(TaskBase):
    """The recipe's loss (MSELoss, L1Loss, ...) on the model's values; a model with one output
    gives (N, 1), compared with targets of shape (N,)."""

    def __init__(self, loss_fn: nn.Module, metrics: dict[str, Metric]) -> None:
        super().__init__(metrics)
        self.loss_fn = loss_fn

    def step(self, model: nn.Module, batch: Any) -> Step:
        inputs, targets = batch
        outputs = model(inputs)
        if outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1:
            outputs = outputs.squeeze(-1)
        if outputs.shape != targets.shape:
            raise UserError(
                f"task regression: the model gives {list(outputs.shape)} for targets of {list(targets.shape)}; "
                "they must match (one output per target value)"
            )
        targets = targets.to(outputs.dtype)
        return Step(self.loss_fn(outputs, targets), outputs, targets, len(targets))

    def update(self, step: Step) -> None:
        for metric in self.metrics.values():
            metric.update(step.outputs.double(), step.targets.double())

    def answer(self, model: nn.Module, inputs: torch.Tensor, info: DataInfo) -> str:
        """The predicted value (values, tab-separated, for several outputs)."""
        return "\t".join(f"{v:.6g}" for v in model(inputs).float().flatten().tolist())
