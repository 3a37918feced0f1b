"""Training switches: gradient accumulation, clipping, mixed precision, histograms, image grids, hparams, memory reuse,
determinism."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RECIPES, ROOT, final_checkpoint, final_weights, launch, run_dirs

pytestmark = pytest.mark.slow

IRIS = ROOT / "recipes" / "tabular_csv.yaml"
# Iris without the input BatchNorm, so a batch's result does not depend on how it is split.
PLAIN_MLP = (
    "model.normalize_input=false",
    f"data.dataset.path={ROOT / 'recipes' / 'data' / 'iris.csv'}",
    "optimizer={name: SGD, lr: 0.1}",
)


def test_gradient_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    big, accumulated = tmp_path / "big", tmp_path / "accumulated"
    assert launch(IRIS, "--cpu", f"run.output={big}", "train.batch_size=32", "train.max_steps=3", *PLAIN_MLP) == 0
    assert (
        launch(
            IRIS,
            "--cpu",
            f"run.output={accumulated}",
            "train.batch_size=16",
            "train.grad_accum_steps=2",
            "train.max_steps=3",
            *PLAIN_MLP,
        )
        == 0
    )
    (big_run,), (accumulated_run,) = run_dirs(big, "tabular_csv"), run_dirs(accumulated, "tabular_csv")
    a, b = final_weights(big_run), final_weights(accumulated_run)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_each_step(tmp_path: Path) -> None:
    clip, lr = 1e-6, 0.1
    assert launch(
        IRIS, "--cpu", f"run.output={tmp_path}", "train.max_steps=5", f"train.grad_clip={clip}",
        "checkpoint.every_n_steps=1", "checkpoint.keep_last=10", "checkpoint.best=null", *PLAIN_MLP,
    ) == 0  # fmt: skip
    (run,) = run_dirs(tmp_path, "tabular_csv")
    steps = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(steps) == 5
    first, last = (torch.load(p, weights_only=True)["model"] for p in (steps[0], steps[-1]))
    # Plain SGD moves the weights by lr x (clipped) gradient: 4 steps, each of norm <= clip.
    distance = torch.sqrt(sum(((last[n] - first[n]) ** 2).sum() for n in first))
    assert 0 < distance <= 4 * lr * clip * 1.001


def test_bf16_mixed_precision_trains_on_the_cpu(tmp_path: Path) -> None:
    assert (
        launch(RECIPES / "digits.yaml", "--cpu", f"run.output={tmp_path}", "train.precision=bf16", "train.epochs=4")
        == 0
    )
    import json

    (run,) = run_dirs(tmp_path, "digits")
    assert json.loads((run / "metrics.json").read_text())["final"]["val/acc1"] >= 0.9


def test_histograms_image_grid_and_hparams_reach_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert launch(
        RECIPES / "digits.yaml", "--cpu", f"run.output={tmp_path}", "train.epochs=1",
        "logging.histograms=true", "logging.image_grid=true",
    ) == 0  # fmt: skip
    (run,) = run_dirs(tmp_path, "digits")
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert "weights/features.0.0.weight" in tags["histograms"] and "grads/head.1.weight" in tags["histograms"]
    assert tags["images"] == ["train/batch"]
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["optimizer.lr"].number_value == pytest.approx(0.003)
    assert session.hparams["model.name"].string_value == "small_cnn"
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/loss", "val/acc1", "val/acc5"}


# A few steps of a 10M-parameter MLP with AdamW (bench W2's model), counting page faults after warm-up.
_FAULTS_PER_STEP = """
import resource, sys, torch
from launcher.distributed.runtime import reuse_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "reuse":
    assert reuse_freed_memory(), "glibc's mallopt refused the settings"
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
optimizer = torch.optim.AdamW(model.parameters())
x, y = torch.randn(64, 1024), torch.randint(0, 10, (64,))
for step in range(15):
    if step == 5:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_reusing_freed_memory_spares_the_page_faults_of_every_step() -> None:
    """train.reuse_freed_memory (on by default): the steps' gradients and optimizer temporaries come
    back from the heap instead of being faulted in from the kernel again each step."""

    def faults_per_step(mode: str) -> float:
        # The fewest of 3 runs: other processes only add faults (the kernel compacting or migrating
        # pages under load: CI once saw 614 a step with reuse on a busy machine, 0.1 to 205 here).
        runs = [
            subprocess.run(
                [sys.executable, "-c", _FAULTS_PER_STEP, mode], cwd=ROOT, capture_output=True, text=True, check=True
            )
            for _ in range(3)
        ]
        return min(float(done.stdout) for done in runs)

    default, reused = faults_per_step("default"), faults_per_step("reuse")
    assert default > 1000, f"glibc's defaults faulted only {default} pages a step: the test no longer shows anything"
    assert reused < default / 10, (default, reused)


def test_setup_sets_the_process_wide_switches_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs of a local sweep share one process: a run without train.deterministic after one with
    it must not stay deterministic; train.reuse_freed_memory reaches the allocator only where it is on."""
    from launcher.config.loading import load_recipe
    from launcher.distributed.runtime import single_process
    from launcher.training import setup as training

    calls: list[bool] = []
    monkeypatch.setattr(training, "reuse_freed_memory", lambda: calls.append(True) or True)
    try:
        training.setup(load_recipe(RECIPES / "digits.yaml", ["train.deterministic=true"]), single_process(True))
        assert torch.are_deterministic_algorithms_enabled() and calls == [True]
        training.setup(load_recipe(RECIPES / "digits.yaml", ["train.reuse_freed_memory=false"]), single_process(True))
        assert not torch.are_deterministic_algorithms_enabled() and calls == [True]
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_two_runs_with_one_seed_are_bitwise_equal_with_or_without_loader_workers_and_deterministic_is_recorded(
    tmp_path: Path,
) -> None:
    # The digits recipe augments at random (RandomAffine): each batch's augmentations are seeded,
    # so two loader worker processes give the batches the main process would have made.
    for name, workers in (("a", 0), ("b", 2)):
        torch.set_num_threads(2)
        assert launch(RECIPES / "digits.yaml", "--cpu", "train.epochs=2", "train.deterministic=true", f"data.num_workers={workers}",
                      f"run.output={tmp_path / name}") == 0  # fmt: skip
    (a,), (b,) = run_dirs(tmp_path / "a", "digits"), run_dirs(tmp_path / "b", "digits")
    first, second = final_checkpoint(a), final_checkpoint(b)
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    assert (
        json.loads((a / "metrics.json").read_text())["final"] == json.loads((b / "metrics.json").read_text())["final"]
    )
    assert "deterministic: true" in (a / "recipe.yaml").read_text()
