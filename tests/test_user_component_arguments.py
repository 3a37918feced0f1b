"""The user's own components get every keyword argument the recipe gives them, whatever its name.

The launcher's own parameters (`factory`, `kind`, ...) are positional-only, so an argument of
the user's called `kind` or `factory` reaches the user's code; `name`, the component's own key,
is given under `kwargs:`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, launch

from launcher.cli.recipe_checks import problems_in
from launcher.config.loading import load_recipe
from launcher.config.problems import RecipeError
from launcher.distributed.runtime import single_process
from launcher.training.setup import setup

DIGITS = ROOT / "recipes" / "digits.yaml"


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(FIXTURES / "user_parts.py", tmp_path / "user_parts.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `launch` does for the working directory, caches cleared
    return tmp_path


def built_model(*overrides: str) -> object:
    recipe = load_recipe(DIGITS, ["scheduler=null", "data.transforms.train=[ToTensor]", *overrides], check=problems_in)
    return setup(recipe, single_process(True)).net


@pytest.mark.parametrize("model", ["user_parts:net", "user_parts:Net", "user_parts:anything"])
def test_arguments_named_kind_factory_and_name_reach_the_users_model(user_module: Path, model: str) -> None:
    net = built_model(f"model={{name: '{model}', kind: mlp, factory: 7, kwargs: {{name: hello}}}}")
    assert {key: net.given[key] for key in ("kind", "factory", "name")} == {
        "kind": "mlp",
        "factory": 7,
        "name": "hello",
    }


def test_a_kwargs_callable_gets_every_argument_and_no_launcher_parameter(user_module: Path) -> None:
    net = built_model("model={name: 'user_parts:anything', kind: a, factory: b, self: c, depth: 3}")
    # `self` is an ordinary keyword for a **kwargs callable; the data's class count is passed to
    # a model that takes it, as to any other.
    assert net.given == {"kind": "a", "factory": "b", "self": "c", "depth": 3, "num_classes": 10}


def test_a_dataset_argument_called_name_is_given_under_kwargs(user_module: Path) -> None:
    recipe = load_recipe(
        DIGITS,
        [
            "data.dataset={name: 'user_parts:Named', kind: columns, kwargs: {name: wikitext, size: 30}}",
            "data.transforms={train: [], val: []}",
            "model={name: mlp}",
            "train.batch_size=8",
        ],
        check=problems_in,
    )
    data = setup(recipe, single_process(True)).data
    dataset = data.train.dataset if hasattr(data.train, "dataset") else data.train
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    assert (dataset.name, dataset.kind, dataset.size) == ("wikitext", "columns", 30)
    assert recipe.data.dataset.name == "user_parts:Named"


def test_wrong_arguments_under_kwargs_are_named_with_their_dotted_path(user_module: Path) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe(
            DIGITS,
            ["model={name: 'user_parts:Net', kind: a, factory: b, kwargs: {nmae: x}}"],
            check=problems_in,
        )
    text = str(error.value)
    assert "model.kwargs.nmae: Net takes no argument 'nmae' (did you mean 'name'?)" in text
    assert "model.name: Net needs 'name', which the recipe does not give" in text


def test_an_argument_given_twice_or_a_kwargs_that_is_no_mapping_is_a_recipe_error(user_module: Path, capsys) -> None:
    assert launch("check", DIGITS, "model={name: 'user_parts:net', kind: a, kwargs: {kind: b}}") == 2
    assert "model: kind: given both beside 'name' and under 'kwargs:'; keep one" in capsys.readouterr().err
    assert launch("check", DIGITS, "model={name: 'user_parts:net', kwargs: [1, 2]}") == 2
    assert "model: kwargs: a mapping of argument names to values, got [1, 2]" in capsys.readouterr().err


def test_a_dataset_split_argument_the_launcher_passes_is_named_not_a_traceback(user_module: Path, capsys) -> None:
    assert launch("check", DIGITS, "data.dataset={name: 'user_parts:Split', train: false}") == 2
    err = capsys.readouterr().err
    assert "error: data.dataset.train: the launcher passes train= itself" in err
    assert "Traceback" not in err
