"""Using a trained checkpoint: validation metrics (`launch eval`) and predictions (`launch predict`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from launcher import checkpoint
from launcher.checkpoint import sharded
from launcher.config.schema import Recipe
from launcher.data import text
from launcher.data.build import build_datasets, build_transform
from launcher.data.datasets import DataInfo
from launcher.data.loaders import eval_loader
from launcher.distributed.runtime import autocast
from launcher.errors import UserError
from launcher.models.build import build_model
from launcher.rundir import find_resume, is_checkpoint_folder
from launcher.training.optim import build_loss
from launcher.training.task import evaluate
from launcher.training.tasks import build_task, wants_classes


def load_model(recipe: Recipe, path: Path, device: torch.device) -> tuple[torch.nn.Module, DataInfo, dict]:
    """The recipe's model with the checkpoint's weights, in eval mode, what it was trained on, and its recipe."""
    if path.is_dir() and not is_checkpoint_folder(path):  # a run folder or its checkpoints/: the newest checkpoint
        path = find_resume(str(path), recipe.run.output, recipe.run.resolved_name)[1]
    state = sharded.load_meta(path) if sharded.is_sharded(path) else checkpoint.load(path)
    info = DataInfo(**state["data"])
    # No download: the checkpoint holds the weights, and a model built for the classes has the head's shape.
    model = build_model(recipe.model.model_copy(update={"weights": None, "freeze": []}), info)
    try:
        if sharded.is_sharded(path):  # each rank's shards, put together into this one process's whole tensors
            state["model"] = sharded.load_into(path, {"model": model.state_dict()})["model"]
        model.load_state_dict(state["model"])
    except (RuntimeError, checkpoint.DamagedCheckpoint) as error:
        raise UserError(
            f"{path} does not fit this recipe's model ({recipe.model.name}): {' '.join(str(error).split())[:400]}"
        ) from None
    return model.to(device).eval(), info, state["recipe"]


def evaluate_checkpoint(recipe: Recipe, path: Path, device: torch.device) -> dict[str, float]:
    model, info, trained_with = load_model(recipe, path, device)
    # The held-out split depends on the seed: use the one the checkpoint was trained with.
    data = build_datasets(recipe.data, seed=trained_with["train"]["seed"], classes=wants_classes(recipe.task))
    loader = eval_loader(data.val, recipe.data, batch_size=recipe.eval.batch_size or recipe.train.batch_size, pin=False)
    task = build_task(recipe.task, recipe.eval.metrics, build_loss(recipe.loss).to(device), info)
    return evaluate(task, model, loader, device, autocast(recipe.train.precision, device))


def predict(
    recipe: Recipe, path: Path, files: list[str], device: torch.device, prompts: Sequence[str] = ()
) -> Iterator[tuple[str, str]]:
    """(what, the task's answer) for each image file, each row of each CSV file, or each prompt
    (a text file's content, or given as it is) of a language model."""
    model, info, _ = load_model(recipe, path, device)
    task = build_task(recipe.task, [], build_loss(recipe.loss).to(device), info)
    for label, x in _prediction_inputs(recipe, info, files, prompts):
        with torch.no_grad():
            yield label, task.answer(model, x.unsqueeze(0).to(device), info)


def _prediction_inputs(
    recipe: Recipe, info: DataInfo, files: list[str], prompts: Sequence[str]
) -> Iterator[tuple[str, torch.Tensor]]:
    if info.tokenizer == "bytes":
        for name in files:
            yield name, _prompt(Path(name).read_text(errors="replace"), name)
        for number, prompt in enumerate(prompts, start=1):
            yield f"prompt {number}", _prompt(prompt, f"--prompt {prompt!r}")
        return
    if prompts:
        raise UserError("launch predict: --prompt is for language models trained on text; this model takes files")
    transform = build_transform(recipe.data.transforms.val)
    resizes = any("Resize" in t.name or "Crop" in t.name for t in recipe.data.transforms.val)
    for name in files:
        for label, raw in _inputs(Path(name), info, resizes):
            x = transform(raw) if transform else raw
            if not isinstance(x, torch.Tensor):  # an image, where transforms.val is empty or ends in no ToTensor
                raise UserError(
                    f"{label}: data.transforms.val gives {type(x).__name__}, not a tensor: end it with ToTensor"
                )
            yield label, x


def _prompt(prompt: str, where: str) -> torch.Tensor:
    tokens = text.encode(prompt)
    if len(tokens) == 0:
        raise UserError(f"launch predict: {where} is empty; a language model continues a prompt")
    return tokens


def _inputs(path: Path, info: DataInfo, resizes: bool) -> Iterator[tuple[str, Image.Image | torch.Tensor]]:
    if info.image_mode is not None:
        try:
            image = Image.open(path).convert(info.image_mode)
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"{path}: not an image this model can read ({error})") from None
        if info.image_size and not resizes and list(image.size) != info.image_size:
            image = image.resize(info.image_size)  # [width, height]: resize takes a list as it takes a tuple
        yield str(path), image
        return
    n_features = info.input_shape[0] if info.input_shape else None
    with path.open(newline="") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            try:
                values = [float(v) for v in row[:n_features]]
            except ValueError:
                continue  # a header row
            if len(values) != n_features:
                raise UserError(f"{path}:{number}: expected {n_features} numbers, got {len(row)} columns")
            yield f"{path}:{number}", torch.tensor(values, dtype=torch.float32)
