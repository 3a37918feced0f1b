"""`task: language_model`: next-token prediction, measured in tokens.

The loss is the recipe's (CrossEntropyLoss by default) over every target token of the batch, so
val/loss is the mean cross-entropy per token of the whole validation set (nats per token: per
byte for a byte-level corpus), and val/perplexity is exp(val/loss), exact on any number of ranks.
A model either returns logits (batch, time, vocab), or, with `model_computes_loss: true`,
computes its own loss as Hugging Face models do: it is called with the batch's fields
(`model(**batch)`: input_ids, labels, ...) and returns an object or dict with `loss` (and `logits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from launcher.data import text
from launcher.data.datasets import DataInfo
from launcher.errors import UserError
from launcher.models.gpt import sample
from launcher.training.task import Step, TaskBase

if TYPE_CHECKING:
    from torchmetrics import Metric


class LanguageModel(TaskBase):
    """Next-token prediction. Batches are (tokens, next tokens) pairs, or with
    `model_computes_loss` whatever the model takes by name (a dict: input_ids, labels...)."""

    unit = "tokens"

    def __init__(
        self,
        loss_fn: nn.Module,
        metrics: dict[str, Metric] | None = None,
        *,
        perplexity: bool = True,
        model_computes_loss: bool = False,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 40,
        seed: int = 0,
    ) -> None:
        super().__init__(metrics)
        self.loss_fn, self.perplexity, self.model_computes_loss = loss_fn, perplexity, model_computes_loss
        self.max_new_tokens, self.temperature, self.top_k, self.seed = max_new_tokens, temperature, top_k, seed
        self.ignore_index = getattr(loss_fn, "ignore_index", None)

    def step(self, model: nn.Module, batch: Any) -> Step:
        if self.model_computes_loss:
            return self._step_with_models_loss(model, batch)
        inputs, targets = batch
        logits = model(inputs)
        loss = self.loss_fn(logits.flatten(0, -2), targets.flatten())
        return Step(loss, logits, targets, self._tokens(targets))

    def _step_with_models_loss(self, model: nn.Module, batch: Any) -> Step:
        if not isinstance(batch, Mapping):
            raise UserError(
                "task.model_computes_loss: the model is called with the batch's fields by name (model(**batch)), "
                f"so a batch must be a dict (input_ids, labels, ...), not a {type(batch).__name__}"
            )
        output = model(**batch)
        loss, logits = _field(output, "loss"), _field(output, "logits")
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise UserError(
                "task.model_computes_loss: the model must return its loss as a scalar tensor, under `loss` (an "
                f"object or dict, as Hugging Face models do); it returned {type(output).__name__}"
            )
        targets = batch.get("labels")
        # Hugging Face models shift the labels inside: a sequence's first label predicts nothing.
        tokens = self._tokens(targets[..., 1:]) if isinstance(targets, torch.Tensor) else 1
        return Step(loss, logits, targets, tokens)

    def _tokens(self, targets: torch.Tensor) -> int:
        if self.ignore_index is None or torch.is_grad_enabled():
            return targets.numel()  # training: for the throughput, every position (counting would sync a GPU)
        return int((targets != self.ignore_index).sum())  # padding the loss ignores is not a token

    def derived(self, results: dict[str, float]) -> dict[str, float]:
        if not self.perplexity:
            return {}
        return {"val/perplexity": math.exp(min(results["val/loss"], 700.0))}  # exp overflows past ~709

    def answer(self, model: nn.Module, inputs: torch.Tensor, info: DataInfo) -> str:
        """The prompt and `max_new_tokens` tokens sampled after it (temperature, top_k, seeded)."""
        if info.tokenizer != "bytes" or not info.input_shape:
            raise UserError(
                "launch predict: this model was trained on tokens without a tokenizer the launcher knows (only "
                "byte-level text: the python_source and text datasets)"
            )
        generator = torch.Generator().manual_seed(self.seed)
        tokens = sample(
            lambda tokens: _field(model(tokens), "logits"), inputs[0], self.max_new_tokens, block_size=info.input_shape[0], temperature=self.temperature,
            top_k=self.top_k, generator=generator,
        )  # fmt: skip
        return text.decode(tokens)


def _field(output: Any, name: str) -> Any:
    if isinstance(output, Mapping):
        return output.get(name)
    if isinstance(output, torch.Tensor):  # the logits, or a model's own loss alone
        return output if (name == "loss") == (output.dim() == 0) else None
    return getattr(output, name, None)
