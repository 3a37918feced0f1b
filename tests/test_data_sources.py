"""ImageFolder, CSV and the user's own components, on files the tests write; transfer learning."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import FIXTURES, ROOT, launch, run_dirs, run_launch
from PIL import Image

pytestmark = pytest.mark.slow


def write_image_folder(root: Path, per_class: int = 12, size: int = 16) -> None:
    """Three classes a small model can tell apart: the colour that dominates the image."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index, name in enumerate(["red", "green", "blue"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else per_class // 2):
                pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                pixels[..., index] += 150
                Image.fromarray(pixels, mode="RGB").save(folder / f"{i}.png")


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_image_folder_with_its_own_validation_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image_folder(tmp_path / "images")
    recipe = write_recipe(
        tmp_path / "colours.yaml",
        f"""
        data:
          dataset: {{name: ImageFolder, root: {tmp_path / "images"}}}
          transforms: {{train: [ToTensor], val: [ToTensor]}}
          num_workers: 1
        model: {{name: small_cnn, width: 8}}
        optimizer: {{name: Adam, lr: 0.01}}
        train: {{epochs: 4, batch_size: 8}}
        run: {{output: {tmp_path / "runs"}}}
        """,
    )
    assert launch(recipe, "--cpu") == 0
    (run,) = run_dirs(tmp_path / "runs", "colours")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"]["val/acc1"] == 1.0  # the colours are easy
    assert "36 training / 18 validation samples, 3 classes" in (run / "log.txt").read_text()
    assert "val/acc5" not in metrics["final"]  # only 3 classes: no top-5

    blue = tmp_path / "images" / "val" / "blue" / "0.png"
    assert launch("predict", recipe, "--checkpoint", run / "checkpoints" / "best.pt", blue) == 0
    assert capsys.readouterr().out.split("\t")[1] == "blue"


def test_image_folder_without_a_split_holds_out_a_seeded_fraction(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    recipe = write_recipe(
        tmp_path / "flat.yaml",
        f"""
        data:
          dataset: {{name: ImageFolder, root: {tmp_path / "images" / "train"}}}
          transforms: {{train: [ToTensor], val: [ToTensor]}}
          val_fraction: 0.25
          num_workers: 0
        model: {{name: mlp, hidden: [16]}}
        train: {{epochs: 1, batch_size: 9}}
        run: {{output: {tmp_path / "runs"}}}
        """,
    )
    assert launch(recipe, "--cpu") == 0
    (run,) = run_dirs(tmp_path / "runs", "flat")
    assert "27 training / 9 validation samples, 3 classes" in (run / "log.txt").read_text()


def write_table(path: Path, rows: int, seed: int) -> None:
    """Two noisy features; the class is which side of a line the point falls, as a word."""
    rng = np.random.default_rng(seed)
    with path.open("w") as file:
        file.write("x1,x2,label\n")
        for _ in range(rows):
            x = rng.normal(size=2) * [1.0, 100.0]  # very different scales: the MLP normalizes its input
            file.write(f"{x[0]:.4f},{x[1]:.4f},{'above' if x[0] + x[1] / 100 > 0 else 'below'}\n")


def test_csv_table_with_word_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_table(tmp_path / "train.csv", 400, seed=1)
    write_table(tmp_path / "val.csv", 100, seed=2)
    recipe = write_recipe(
        tmp_path / "table.yaml",
        f"""
        data:
          dataset: {{name: csv, path: {tmp_path / "train.csv"}, val_path: {tmp_path / "val.csv"}}}
          num_workers: 0
        model: {{name: mlp, hidden: [32]}}
        optimizer: {{name: Adam, lr: 0.01}}
        train: {{epochs: 8, batch_size: 32}}
        run: {{output: {tmp_path / "runs"}}}
        """,
    )
    assert launch(recipe, "--cpu") == 0
    (run,) = run_dirs(tmp_path / "runs", "table")
    assert json.loads((run / "metrics.json").read_text())["final"]["val/acc1"] >= 0.9

    rows = tmp_path / "new.csv"
    rows.write_text("x1,x2\n2.0,50\n-2.0,-50\n")
    capsys.readouterr()
    assert launch("predict", recipe, "--checkpoint", run / "checkpoints" / "best.pt", rows) == 0
    predicted = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert predicted == ["above", "below"]


def test_csv_errors_name_the_file_and_row(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,x\n1,oops,y\n")
    recipe = write_recipe(
        tmp_path / "bad.yaml", f"data: {{dataset: {{name: csv, path: {tmp_path / 'bad.csv'}}}}}\nmodel: {{name: mlp}}\n"
    )
    result = run_launch("check", recipe, cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.csv: line 3 is not 2 numbers and a target" in result.stderr


def test_user_components_from_the_recipes_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(FIXTURES / "my_components.py", project / "my_components.py")
    recipe = write_recipe(
        project / "blobs.yaml",
        f"""
        data: {{dataset: {{name: "my_components:Blobs", centers: 4}}, num_workers: 0}}
        model: {{name: "my_components:Linear", scale: 2.0}}
        loss: {{name: "my_components:make_loss"}}
        optimizer: {{name: SGD, lr: 0.5}}
        train: {{epochs: 5, batch_size: 30}}
        run: {{output: {tmp_path / "runs"}}}
        """,
    )
    # From another working directory: the recipe's own folder is searched for user code.
    result = run_launch(recipe, "--cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path / "runs", "blobs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"]["val/acc1"] >= 0.95
    assert "300 training / 300 validation samples, 4 classes" in (run / "log.txt").read_text()  # its own split


def test_user_factory_returning_the_wrong_kind_is_named(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "wrong.py", tmp_path / "wrong.py")
    recipe = write_recipe(
        tmp_path / "wrong.yaml",
        "data: {dataset: {name: digits}, num_workers: 0, transforms: {train: [ToTensor], val: [ToTensor]}}\nmodel: {name: 'wrong:make_model'}\n",
    )
    result = run_launch("check", recipe, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "model 'wrong:make_model' built a str ('a string'), expected a torch.nn.modules.module.Module" in result.stderr
    )


def _offline_env(torch_home: Path) -> dict[str, str]:
    # A proxy on a closed loopback port: any download fails at once, as on a machine with no network.
    return {
        **os.environ,
        "TORCH_HOME": str(torch_home),
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }


def test_pretrained_weights_offline_give_a_clear_error(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "ft.yaml",
        "data: {dataset: {name: digits}, transforms: {train: [ToTensor], val: [ToTensor]}}\nmodel: {name: resnet18, weights: IMAGENET1K_V1}\n",
    )
    result = run_launch("check", recipe, cwd=tmp_path, env=_offline_env(tmp_path / "torch"))
    assert result.returncode == 2
    assert "could not download the ResNet18_Weights.IMAGENET1K_V1 weights of resnet18" in result.stderr
    assert "This machine looks offline" in result.stderr
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in result.stderr
    assert "Traceback" not in result.stderr


def test_finetune_from_cached_weights_freezes_the_backbone_and_fits_the_head(tmp_path: Path) -> None:
    # Stand-in pretrained weights in torch's own cache, where a real download would have put them.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18().state_dict()
    torch.save(pretrained, cache / "resnet18-f37072fd.pth")
    write_image_folder(tmp_path / "images", per_class=8, size=32)
    recipe = write_recipe(
        tmp_path / "ft.yaml",
        f"""
        data:
          dataset: {{name: ImageFolder, root: {tmp_path / "images"}}}
          transforms: {{train: [ToTensor], val: [ToTensor]}}
          num_workers: 0
        model: {{name: resnet18, weights: IMAGENET1K_V1, freeze: ["*"]}}
        train: {{epochs: 1, batch_size: 8}}
        run: {{output: {tmp_path / "runs"}}}
        """,
    )
    result = run_launch(recipe, "--cpu", cwd=tmp_path, env=_offline_env(tmp_path / "torch"))
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path / "runs", "ft")
    trained = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert trained["fc.weight"].shape == (3, 512)  # a new head for 3 classes
    assert not torch.equal(trained["fc.weight"], pretrained["fc.weight"][:3])
    for name in ("conv1.weight", "layer4.1.conv2.weight"):  # the frozen backbone did not move
        assert torch.equal(trained[name], pretrained[name]), name
    assert "(1,539 trainable)" in (run / "log.txt").read_text()  # 512 * 3 + 3


def test_torchvision_download_offline_gives_a_clear_error(tmp_path: Path) -> None:
    result = run_launch(
        "check",
        str(ROOT / "recipes" / "cifar10_resnet18.yaml"),
        f"data.dataset.root={tmp_path}",
        cwd=tmp_path,
        env=_offline_env(tmp_path / "torch"),
    )
    assert result.returncode == 2
    assert f"data.dataset: could not download CIFAR10 into {tmp_path}" in result.stderr
    assert "This machine looks offline" in result.stderr and "Traceback" not in result.stderr


def test_shipped_tabular_recipe_on_iris(tmp_path: Path) -> None:
    # As shipped, from the repository root: the recipe's CSV path is relative to the working directory.
    result = run_launch("recipes/tabular_csv.yaml", "--cpu", f"run.output={tmp_path}", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path, "tabular_csv")
    assert json.loads((run / "metrics.json").read_text())["final"]["val/acc1"] >= 0.9
    assert "120 training / 30 validation samples, 3 classes" in (run / "log.txt").read_text()
