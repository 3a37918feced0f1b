"""Classification metrics by name (eval.metrics): on 2 ranks with unequal shards (359 validation
digits: 180 and 179), each equals scikit-learn's on the final checkpoint's predictions over the
whole validation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_dirs, run_launch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from launcher import checkpoint
from launcher.config.loading import load_recipe
from launcher.data.build import build_datasets
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
