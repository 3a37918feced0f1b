"""Recipe loading: defaults, overrides and precedence, and every kind of error with its dotted path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import RECIPES, launch

from launcher.cli.recipe_checks import problems_in
from launcher.config.loading import json_schema, load_recipe
from launcher.config.problems import RecipeError
from launcher.config.schema import Recipe

MINIMAL = """
data: {dataset: {name: digits}}
model: {name: small_cnn}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, *overrides: str) -> Recipe:
    return load_recipe(path, overrides, check=problems_in)


def problems(path: Path, *overrides: str) -> dict[str, str]:
    with pytest.raises(RecipeError) as caught:
        load(path, *overrides)
    return {p.path: p.message for p in caught.value.problems}


def test_defaults_fill_every_section(tmp_path: Path) -> None:
    recipe = load(write(tmp_path, MINIMAL, "tiny.yaml"))
    assert recipe.train.epochs == 10 and recipe.train.batch_size == 64 and recipe.train.grad_accum_steps == 1
    assert recipe.optimizer.name == "AdamW" and recipe.loss.name == "CrossEntropyLoss" and recipe.scheduler is None
    assert recipe.checkpoint.keep_last == 3 and recipe.checkpoint.best.metric == "val/acc1"
    assert recipe.run.name == "tiny"  # from the file name
    assert str(tmp_path) in recipe.run.import_paths  # the recipe's folder, for user code


def test_precedence_command_line_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "train: {epochs: 3, batch_size: 16}\noptimizer: {name: SGD, lr: 0.5}\n")
    recipe = load(path, "train.epochs=7", "optimizer.momentum=0.9", "scheduler={name: StepLR, step_size: 2}")
    assert recipe.train.epochs == 7  # command line beats the file
    assert recipe.train.batch_size == 16  # the file beats the default
    assert recipe.train.seed == 0  # the default where neither says
    assert recipe.optimizer.kwargs == {"lr": 0.5, "momentum": 0.9}
    assert recipe.scheduler is not None and recipe.scheduler.kwargs == {"step_size": 2}


def test_override_values_are_yaml_typed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    recipe = load(path, "optimizer.lr=1e-3", "model.freeze=[a.*, b]", "train.grad_clip=1", "checkpoint.best=null")
    assert recipe.optimizer.kwargs["lr"] == 0.001  # 1e-3 is a number, as in YAML 1.2
    assert recipe.model.freeze == ["a.*", "b"]
    assert recipe.train.grad_clip == 1.0 and recipe.checkpoint.best is None


def test_override_into_a_list_item(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + "  \ndata:\n  dataset: {name: digits}\n  transforms: {train: [ToTensor, {name: Normalize, mean: [0.5], std: [0.5]}]}\n",
    )
    recipe = load(path, "data.transforms.train.1.std=[0.25]")
    assert recipe.data.transforms.train[1].kwargs["std"] == [0.25]
    assert "data.transforms.train.5" in problems(path, "data.transforms.train.5.std=1")


def test_unknown_keys_everywhere_with_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "train: {epocs: 3}\nchekpoint: {keep_last: 2}\n")
    found = problems(path, "logging.every_n_step=5")
    assert found["train.epocs"] == "unknown key (did you mean 'epochs'?)"
    assert found["chekpoint"] == "unknown key (did you mean 'checkpoint'?)"
    assert found["logging.every_n_step"] == "unknown key (did you mean 'every_n_steps'?)"


def test_wrong_types_name_the_value(tmp_path: Path) -> None:
    found = problems(write(tmp_path, MINIMAL + "train: {epochs: ten, batch_size: 0, precision: fp8}\n"))
    assert "valid integer" in found["train.epochs"] and "'ten'" in found["train.epochs"]
    assert "greater than or equal to 1" in found["train.batch_size"]
    assert "'fp8'" in found["train.precision"]


def test_missing_required_fields(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "model: {width: 3}\n"))
    assert found["data"] == "required, but missing"
    assert found["model.name"] == "required, but missing"


def test_bad_component_names_with_did_you_mean(tmp_path: Path) -> None:
    text = """
    data:
      dataset: {name: digitz}
      transforms: {train: [ToTensr]}
    model: {name: resnet19}
    loss: {name: CrossEntropy}
    optimizer: {name: Adamm}
    scheduler: {name: CosineAnealingLR}
    """
    found = problems(write(tmp_path, text))
    assert "did you mean 'digits'" in found["data.dataset.name"]
    assert "did you mean 'ToTensor'" in found["data.transforms.train.0.name"]
    assert "did you mean 'resnet18'" in found["model.name"]
    assert "did you mean 'CrossEntropyLoss'" in found["loss.name"]
    assert "did you mean 'Adam'" in found["optimizer.name"]
    assert "did you mean 'CosineAnnealingLR'" in found["scheduler.name"]


def test_component_arguments_are_checked_against_the_signature(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    found = problems(
        path, "optimizer.lrr=0.1", "model.widht=8", "loss.label_smothing=0.1", "scheduler={name: StepLR, step_sise: 1}"
    )
    assert "did you mean 'lr'" in found["optimizer.lrr"]
    assert "did you mean 'width'" in found["model.widht"]
    assert "did you mean 'label_smoothing'" in found["loss.label_smothing"]
    assert "did you mean 'step_size'" in found["scheduler.step_sise"]
    assert "got the text 'fast'" in problems(path, "optimizer.lr=fast")["optimizer.lr"]
    # Required arguments the launcher does not fill in itself (T_max and total_steps it does).
    assert (
        problems(path, "scheduler={name: StepLR}")["scheduler.step_size"]
        == "StepLR needs 'step_size', which the recipe does not give"
    )
    assert load(path, "scheduler={name: CosineAnnealingLR}").scheduler.kwargs == {}


def test_best_checkpoint_mode_follows_the_metric(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load(path, "checkpoint.best.metric=val/loss").checkpoint.best.mode_for(None) == "min"
    assert load(path).checkpoint.best.mode_for(None) == "max"
    assert load(path, "checkpoint.best={metric: val/loss, mode: max}").checkpoint.best.mode_for(None) == "max"
    # Left unset, not filled in: a metric's own higher_is_better (known once it is built) comes first,
    # and a recipe.yaml written with it still follows a checkpoint.best.metric given later.
    assert load(path).checkpoint.best.mode is None
    score = "eval.metrics=[acc1, 'my_metrics:score']"  # a user's metric, logged as val/score
    assert load(path, score, "checkpoint.best.metric=val/score").checkpoint.best.mode_for(False) == "min"
    assert load(path, score, "checkpoint.best={metric: val/score, mode: max}").checkpoint.best.mode_for(False) == "max"


def test_plateau_schedule_must_be_per_epoch(tmp_path: Path) -> None:
    found = problems(write(tmp_path, MINIMAL), "scheduler={name: ReduceLROnPlateau, interval: step}")
    assert "use interval: epoch" in found["scheduler"]


def test_user_components_of_the_wrong_kind_say_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "import torch\nclass NotAModel(torch.utils.data.Dataset):\n    pass\nNOT_CALLABLE = 3\n"
    )
    path = write(
        tmp_path,
        "data: {dataset: {name: 'mine:NOT_CALLABLE'}}\nmodel: {name: 'mine:NotAModel'}\noptimizer: {name: 'mine:Nope'}\n",
    )
    found = problems(path)
    assert "mine.NotAModel" in found["model.name"] and "not a torch.nn.modules.module.Module" in found["model.name"]
    assert "is a int" in found["data.dataset.name"]
    assert "has no 'Nope'" in found["optimizer.name"]
    assert "cannot import module 'nowhere'" in problems(path, "model.name=nowhere:Net")["model.name"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "data: {dataset: {name: digitz}}\nmodel: {name: small_cnn, widht: 3}\ntrain: {epocs: 1, batch_size: x}\n",
    )
    assert set(problems(path)) == {"data.dataset.name", "model.widht", "train.epocs", "train.batch_size"}


def test_malformed_files(tmp_path: Path) -> None:
    assert "not valid YAML" in str(problems(write(tmp_path, "data: {\n")))
    assert "a mapping of sections" in str(problems(write(tmp_path, "[1, 2]\n")))
    assert "cannot read the recipe" in str(problems(tmp_path / "absent.yaml"))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "run: {name: !!python/object/apply:os.system ['echo pwned']}\n")
    assert "the tag python/object/apply:os.system is refused" in str(problems(path))


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if recipe.name == "imagefolder_finetune.yaml":  # it wants the user's images: a folder must be there
        monkeypatch.chdir(tmp_path)
        (tmp_path / "data" / "my_images").mkdir(parents=True)
    loaded = load(recipe)
    assert recipe.read_text().startswith("# yaml-language-server: $schema=recipe.schema.json")
    assert loaded.run.name == recipe.stem


def test_shipped_schema_file_matches_launch_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert launch("schema") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema()
    assert json.loads((RECIPES / "recipe.schema.json").read_text()) == printed, (
        "regenerate: launch schema > recipes/recipe.schema.json"
    )
    assert {"data", "model", "optimizer", "train", "checkpoint", "logging", "run"} <= set(printed["properties"])


def test_task_metric_and_best_problems_are_reported_together_before_anything_runs(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, "tiny.yaml")
    with pytest.raises(RecipeError) as caught:
        load(path, "task={name: regresion}", "eval.metrics=[mae]")
    assert "task: 'regresion' is not a task this version trains" in str(caught.value)
    assert "(did you mean 'regression'?)" in str(caught.value)
    with pytest.raises(RecipeError) as caught:
        load(path, "task={name: regression, scale: 2}", "eval.metrics=[mea, r2]", "checkpoint.best.metric=val/acc1")
    found = {p.path: p.message for p in caught.value.problems}
    assert found["eval.metrics.0"].startswith("'mea': regression measures mae, mse, rmse, r2")
    assert found["checkpoint.best.metric"].startswith(
        "val/acc1 is not measured: choose one of val/loss, val/mea, val/r2"
    )
    assert found["task.scale"] == "regression takes no argument 'scale'"
    recipe = load(path, "task=regression")
    assert recipe.eval.metrics == ["mae", "rmse", "r2"]
    assert recipe.checkpoint.best is not None and (
        recipe.checkpoint.best.metric,
        recipe.checkpoint.best.mode_for(None),
    ) == ("val/loss", "min")
    assert load(path, "task=regression", "checkpoint.best.metric=val/r2").checkpoint.best.mode_for(None) == "max"


WARMUP_COSINE = """
scheduler:
  name: SequentialLR
  interval: step
  schedulers:
    - {name: LinearLR, start_factor: 0.01, total_iters: 40}
    - {name: CosineAnnealingLR, eta_min: 3.0e-4}
  milestones: [40]
"""


def test_schedules_inside_a_schedule_load_and_override(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + WARMUP_COSINE)
    recipe = load(path, "scheduler.milestones=[50]", "scheduler.schedulers.0.total_iters=50")
    assert recipe.scheduler is not None and recipe.scheduler.kwargs["milestones"] == [50]
    assert recipe.scheduler.kwargs["schedulers"] == [
        {"name": "LinearLR", "start_factor": 0.01, "total_iters": 50},
        {"name": "CosineAnnealingLR", "eta_min": 3.0e-4},
    ]
    assert "scheduler.schedulers.2" in problems(path, "scheduler.schedulers.2.gamma=0.5")  # no appending


def test_schedules_inside_a_schedule_are_checked_with_their_dotted_paths(tmp_path: Path) -> None:
    text = """
    scheduler:
      name: SequentialLR
      schedulers:
        - {name: LinearRL}
        - {name: CosineAnnealingLR, eta_mn: 3.0e-4}
        - {name: StepLR, kwargs: {step_sise: 3}}
      milestones: [40, 50]
    """
    path = write(tmp_path, MINIMAL + textwrap.dedent(text), "inner.yaml")
    found = problems(path)
    assert found == {
        "scheduler.schedulers.0.name": "no scheduler named 'LinearRL' among the built-ins or in torch.optim.lr_scheduler (did you mean 'LinearLR'?)",
        "scheduler.schedulers.1.eta_mn": "CosineAnnealingLR takes no argument 'eta_mn' (did you mean 'eta_min'?)",
        "scheduler.schedulers.2.kwargs.step_sise": "StepLR takes no argument 'step_sise' (did you mean 'step_size'?)",
        "scheduler.schedulers.2.step_size": "StepLR needs 'step_size', which the recipe does not give",
    }
    mixed = problems(
        write(tmp_path, MINIMAL + WARMUP_COSINE), "scheduler.schedulers=[LinearLR, {name: CosineAnnealingLR}]"
    )
    assert mixed == {"scheduler.schedulers.0": "'LinearLR': write each scheduler of the list as {name: ...}"}
    # The inner ones are checked even where the outer name is wrong.
    assert set(problems(path, "scheduler.name=SequentialRL")) == {"scheduler.name", *found}


DECAY_ON_MATRICES = """
optimizer:
  name: AdamW
  weight_decay: 0.1
  param_groups:
    - {params: ["*.bias", "*norm*"], weight_decay: 0.0}
    - {ndim: 1, weight_decay: 0.0}
"""


def test_parameter_groups_load_and_override(tmp_path: Path) -> None:
    recipe = load(write(tmp_path, MINIMAL + DECAY_ON_MATRICES), "optimizer.param_groups.1.ndim=[0, 1]")
    assert [(g.params, g.dims, g.options) for g in recipe.optimizer.param_groups or []] == [
        (["*.bias", "*norm*"], None, {"weight_decay": 0.0}),
        ([], {0, 1}, {"weight_decay": 0.0}),
    ]
    assert recipe.optimizer.kwargs == {"weight_decay": 0.1}  # the groups are not an argument of AdamW
    assert load(write(tmp_path, MINIMAL)).optimizer.param_groups is None


def test_parameter_group_arguments_are_checked_with_their_dotted_paths_and_the_rest(tmp_path: Path) -> None:
    text = """
    optimizer:
      name: AdamW
      param_groups:
        - {params: ["*.bias"], weight_dcay: 0.0}
        - {ndim: 1, lr: fast}
        - {lr: 0.1}
        - {ndim: -1}
    """
    # Reported with the rest of the recipe's problems, an inner schedule's among them.
    found = problems(
        write(tmp_path, MINIMAL + WARMUP_COSINE + textwrap.dedent(text)), "scheduler.schedulers.1.eta_mn=0"
    )
    assert found == {
        "optimizer.param_groups.0.weight_dcay": "AdamW takes no argument 'weight_dcay' (did you mean 'weight_decay'?)",
        "optimizer.param_groups.1.lr": "AdamW wants a number for 'lr', got the text 'fast'",
        "optimizer.param_groups.2": "a parameter group chooses its parameters: give params (name patterns), ndim, or both",
        "optimizer.param_groups.3.ndim.0": "input should be greater than or equal to 0, got -1",
        "scheduler.schedulers.1.eta_mn": "CosineAnnealingLR takes no argument 'eta_mn' (did you mean 'eta_min'?)",
    }
