"""Classification metrics by name (eval.metrics): on 2 ranks with unequal shards (359 validation
digits: 180 and 179), and on 3 ranks of which one has no validation sample, each equals
scikit-learn's on the final checkpoint's predictions over the whole validation set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, launch, run_dirs, run_launch, scalars
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from launcher import checkpoint
from launcher.config.loading import load_recipe
from launcher.data.build import build_datasets
from launcher.sweep.planning import metric_mode
from launcher.training.inference import load_model

pytestmark = pytest.mark.slow

DIGITS = ROOT / "recipes" / "digits.yaml"


def test_f1_and_auroc_on_two_ranks_equal_scikit_learn(tmp_path: Path) -> None:
    result = run_launch(
        DIGITS, "--nproc", "2", f"run.output={tmp_path}", "train.epochs=1",
        "eval.metrics=[acc1, acc5, f1_macro, auroc]", "checkpoint.best.metric=val/f1_macro", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path, "digits")
    summary = json.loads((run / "metrics.json").read_text())
    final = summary["final"]
    assert summary["best"]["metric"] == "val/f1_macro"

    recipe = load_recipe(run / "recipe.yaml")
    model, _, trained_with = load_model(recipe, checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    val = build_datasets(recipe.data, seed=trained_with["train"]["seed"]).val
    inputs = torch.stack([val[i][0] for i in range(len(val))])
    targets = torch.tensor([val[i][1] for i in range(len(val))])
    assert len(targets) == 359
    with torch.no_grad():
        scores = model(inputs).softmax(dim=1).double().numpy()
    y = targets.numpy()
    assert final["val/acc1"] == pytest.approx(accuracy_score(y, scores.argmax(1)), rel=1e-9)
    assert final["val/f1_macro"] == pytest.approx(f1_score(y, scores.argmax(1), average="macro"), rel=1e-6)
    assert final["val/auroc"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"), rel=1e-6)


def test_a_rank_with_no_validation_sample_measures_what_one_process_does(tmp_path: Path) -> None:
    # 3 ranks, 2 validation rows: rank 2's shard is empty. It must still take part in every
    # collective, with states of the others' kind (AUROC's list states: gloo aborted), and no
    # rank may wait for a per-batch collective (DDP's buffer broadcast: the MLP's input
    # BatchNorm; ranks 0 and 1 hung).
    rng = np.random.default_rng(0)
    rows = ["x1,x2,label"] + [f"{a:.4f},{b:.4f},{'up' if a + b > 0 else 'down'}" for a, b in rng.normal(size=(96, 2))]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("x1,x2,label\n0.3,0.1,up\n-0.2,0.4,down\n")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"data: {{dataset: {{name: csv, path: {tmp_path / 'train.csv'}, val_path: {tmp_path / 'val.csv'}}}, num_workers: 0}}\n"
        "model: {name: mlp, hidden: [8], normalize_input: true}\n"
        "train: {epochs: 2, batch_size: 8}\n"
        "eval: {metrics: [acc1, f1_macro, auroc]}\n"
        f"run: {{output: {tmp_path / 'runs'}}}\n"
    )
    result = run_launch(recipe, "--nproc", "3", cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(tmp_path / "runs", "tiny")
    final = json.loads((run / "metrics.json").read_text())["final"]

    loaded = load_recipe(run / "recipe.yaml")
    model, _, trained_with = load_model(loaded, checkpoint.latest(run / "checkpoints"), torch.device("cpu"))
    val = build_datasets(loaded.data, seed=trained_with["train"]["seed"]).val
    inputs, targets = torch.stack([val[i][0] for i in range(2)]), np.array([val[i][1] for i in range(2)])
    with torch.no_grad():
        scores = model(inputs).softmax(dim=1).double().numpy()
    assert final["val/acc1"] == pytest.approx(accuracy_score(targets, scores.argmax(1)), rel=1e-9)
    assert final["val/f1_macro"] == pytest.approx(f1_score(targets, scores.argmax(1), average="macro"), rel=1e-6)
    assert final["val/auroc"] == pytest.approx(roc_auc_score(targets, scores[:, 1]), rel=1e-6)


ERROR_RATE = '''
import torch
from torchmetrics import Metric


class ErrorRate(Metric):
    """The share of misclassified samples: better lower, though its name does not say so."""

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("wrong", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        self.wrong += (scores.argmax(dim=1) != targets).sum()
        self.total += targets.numel()

    def compute(self) -> torch.Tensor:
        return self.wrong / self.total
'''


def test_best_follows_a_user_metrics_own_direction(tmp_path: Path) -> None:
    (tmp_path / "error_rate_metric.py").write_text(ERROR_RATE)
    recipe = tmp_path / "iris_errors.yaml"
    recipe.write_text(
        f"data: {{dataset: {{name: csv, path: {ROOT / 'recipes' / 'data' / 'iris.csv'}}}, num_workers: 0}}\n"
        "model: {name: mlp, hidden: [16], normalize_input: true}\n"
        "optimizer: {name: AdamW, lr: 0.01}\n"
        "train: {epochs: 6, batch_size: 16}\n"
        'eval: {metrics: [acc1, "error_rate_metric:ErrorRate"]}\n'
        "checkpoint: {every_n_epochs: 6, best: {metric: val/ErrorRate}}\n"
        f"run: {{output: {tmp_path / 'runs'}}}\n"
    )
    assert launch(recipe, "--cpu") == 0
    (run,) = run_dirs(tmp_path / "runs", "iris_errors")
    assert load_recipe(run / "recipe.yaml").checkpoint.best.mode is None  # resolved at setup, from the metric
    best = json.loads((run / "metrics.json").read_text())["best"]
    series = scalars(run)["val/ErrorRate"]
    lowest = min(series, key=lambda point: point[1])
    assert lowest[1] < max(value for _, value in series)  # the two directions pick different steps
    assert best["mode"] == "min" and (best["step"], best["value"]) == (lowest[0], pytest.approx(lowest[1]))
    assert checkpoint.load(run / "checkpoints" / "best.pt")["progress"]["step"] == lowest[0]
    # A sweep ranked by it (no --mode) goes the same way; by its name alone it would be max.
    assert metric_mode("val/ErrorRate", ["acc1", "error_rate_metric:ErrorRate"]) == "min"
    assert metric_mode("val/ErrorRate", ["acc1"]) == "max"
