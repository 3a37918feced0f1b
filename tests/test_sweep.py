"""`launch sweep`: the grid and its rules, run names, every combination validated before anything
runs, and sweeps run for real on digits: one run after another here (one process or two), a failed
run among finished ones, a rerun that skips, resumes and retries, and a SLURM job array."""

from __future__ import annotations

import csv
import json
import os
import re
import textwrap
from pathlib import Path

import pytest
from conftest import RECIPES, launch, run_launch, scalars

from launcher.config.loading import dump_recipe, load_recipe
from launcher.config.problems import RecipeError
from launcher.errors import UserError
from launcher.sweep.grid import MAX_NAME, combinations, parse_command_line, run_names, split_choices
from launcher.sweep.planning import plan
from launcher.sweep.results import ranked

DIGITS = RECIPES / "digits.yaml"
SAFE_NAME = re.compile(r"[A-Za-z0-9._+=,-]+")


# --- the grid and the names -----------------------------------------------------------------------


def test_only_commas_at_the_top_level_of_a_value_separate_choices() -> None:
    assert split_choices("0.1,0.03,0.01") == ["0.1", "0.03", "0.01"]
    assert split_choices("[a,b]") == ["[a,b]"]  # a YAML list is one value
    assert split_choices("[a,b],[c]") == ["[a,b]", "[c]"]
    assert split_choices("{name: StepLR, step_size: 2},null") == ["{name: StepLR, step_size: 2}", "null"]
    assert split_choices("'a,b'") == ["'a,b'"]
    grid, fixed = parse_command_line([
        "optimizer.lr=0.1,3e-4", "model.freeze=[a.*,b]", "train.epochs=3", "data.classes=[x,y],[z]",
        "scheduler={name: StepLR, step_size: 2},null", "model.weights='x,y'",
    ])  # fmt: skip
    assert grid == {
        "optimizer.lr": [0.1, 0.0003],  # each choice read as YAML
        "data.classes": [["x", "y"], ["z"]],
        "scheduler": [{"name": "StepLR", "step_size": 2}, None],
    }
    assert fixed == ["model.freeze=[a.*,b]", "train.epochs=3", "model.weights='x,y'"]  # one value each, as given
    with pytest.raises(RecipeError, match="'0.1,,0.2' has an empty choice"):
        parse_command_line(["optimizer.lr=0.1,,0.2"])


def test_every_combination_the_first_key_varying_slowest_each_named_by_its_values() -> None:
    grid = {"optimizer.lr": [0.1, 0.01], "train.batch_size": [32, 64]}
    combos = combinations(grid)
    assert combos == [
        {"optimizer.lr": 0.1, "train.batch_size": 32}, {"optimizer.lr": 0.1, "train.batch_size": 64},
        {"optimizer.lr": 0.01, "train.batch_size": 32}, {"optimizer.lr": 0.01, "train.batch_size": 64},
    ]  # fmt: skip
    assert run_names(grid, combos) == [
        "lr=0.1,batch_size=32",
        "lr=0.1,batch_size=64",
        "lr=0.01,batch_size=32",
        "lr=0.01,batch_size=64",
    ]


def test_run_names_are_unique_filesystem_safe_and_say_which_key_where_the_last_part_is_ambiguous() -> None:
    ambiguous = {"data.transforms.train.0.size": [28], "data.transforms.val.0.size": [28, 32]}
    assert run_names(ambiguous, combinations(ambiguous)) == [
        "train.0.size=28,val.0.size=28",
        "train.0.size=28,val.0.size=32",
    ]
    odd = {
        "data.dataset.root": ["/data/a b", "data/a_b"],
        "model.freeze": [["a.*", "b"]],
        "checkpoint.best": [None],
        "train.drop_last": [True],
    }
    names = run_names(odd, combinations(odd))
    assert names[0].startswith(
        "root=data_a_b,freeze=a._b,best=null,drop_last=true-"
    )  # the same text twice: a hash tells them apart
    assert len(set(names)) == 2 and all(SAFE_NAME.fullmatch(name) for name in names)
    long = {"model.freeze": [["layer" * 40], ["layer" * 41]]}
    names = run_names(long, combinations(long))
    assert len(set(names)) == 2 and all(len(name) <= MAX_NAME for name in names)


def test_the_sweep_folder_is_the_same_for_the_same_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["optimizer.lr=0.1,0.01", "train.epochs=1", f"run.output={tmp_path}"]
    first = plan(str(DIGITS), args)
    assert first.folder == plan(str(DIGITS), args).folder
    assert re.fullmatch(r"sweep-[0-9a-f]{8}", first.folder.name) and first.folder.parent == tmp_path / "digits"
    assert plan(str(DIGITS), ["optimizer.lr=0.1,0.03", *args[1:]]).folder != first.folder  # another grid
    assert plan(str(DIGITS), [*args[:2], "train.epochs=2", args[2]]).folder != first.folder  # other fixed overrides
    assert plan(str(DIGITS), args, name="lr").folder == tmp_path / "digits" / "sweep-lr"
    with pytest.raises(UserError, match="--name ../x: use letters"):
        plan(str(DIGITS), args, name="../x")
    # Once written, the same recipe by another spelling of its path is still the same sweep.
    first.write()
    monkeypatch.chdir(tmp_path)
    assert plan(os.path.relpath(DIGITS), args).folder == first.folder


def write_recipe(tmp_path: Path, sweep: str) -> Path:
    path = tmp_path / "swept.yaml"
    path.write_text(textwrap.dedent(f"""\
        data: {{dataset: {{name: digits}}, num_workers: 0}}
        model: {{name: small_cnn}}
        run: {{output: {tmp_path}}}
        sweep: {sweep}
    """))  # fmt: skip
    return path


def test_the_recipe_sweep_section_with_the_command_line_over_it(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "{optimizer.lr: [0.1, 0.01], train.batch_size: [16, 32], train.seed: [1, 2]}")
    assert load_recipe(recipe).sweep == {
        "optimizer.lr": [0.1, 0.01],
        "train.batch_size": [16, 32],
        "train.seed": [1, 2],
    }  # `launch` accepts it
    sweep = plan(str(recipe), [])
    assert (
        sweep.grid == {"optimizer.lr": [0.1, 0.01], "train.batch_size": [16, 32], "train.seed": [1, 2]}
        and len(sweep.runs) == 8
    )
    # A list on the command line replaces the recipe's for that key; one value takes the key out of the grid.
    sweep = plan(str(recipe), ["train.batch_size=8,64,128", "train.seed=5", "eval.batch_size=100,200"])
    assert sweep.grid == {"optimizer.lr": [0.1, 0.01], "train.batch_size": [8, 64, 128], "eval.batch_size": [100, 200]}
    run = sweep.runs[-1]
    assert run.name == "lr=0.01,train.batch_size=128,eval.batch_size=200"  # two keys end in batch_size
    resolved = sweep.recipes[run.name]
    assert (
        resolved.optimizer.kwargs["lr"],
        resolved.train.batch_size,
        resolved.eval.batch_size,
        resolved.train.seed,
    ) == (0.01, 128, 200, 5)
    assert resolved.sweep == {}  # each run's recipe.yaml is one run
    with pytest.raises(UserError, match="nothing to sweep"):
        plan(str(recipe), ["sweep={}"])


def test_a_bad_sweep_section_is_a_recipe_error_with_its_dotted_path(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(tmp_path, "{optimizer.lr: 0.1, train.seed: []}"))
    assert [str(p) for p in caught.value.problems] == [
        "sweep.optimizer.lr: input should be a valid list, got 0.1",
        "sweep.train.seed: list should have at least 1 item after validation, not 0, got []",
    ]
    with pytest.raises(RecipeError, match="'run.output': a sweep cannot vary run.name, run.output or sweep"):
        load_recipe(write_recipe(tmp_path, "{run.output: [a, b]}"))
    with pytest.raises(RecipeError, match=r"train.seed: \[1, 1\]: a value comes twice"):
        plan(str(write_recipe(tmp_path, "{train.seed: [1, 1]}")), [])


def test_every_combination_is_validated_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "sweep",
        DIGITS,
        "train.batch_size=32,0",
        "optimizer.lr=0.1,fast",
        "train.epocs=1",
        "--cpu",
        f"run.output={tmp_path}",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "3 problems in the recipe; nothing was run." in err
    assert "- train.epocs: unknown key (did you mean 'epochs'?)\n" in err  # in every run: said once, plainly
    assert (
        "- train.batch_size: input should be greater than or equal to 1, got 0 (in 2 of the 4 runs: batch_size=0,lr=0.1; batch_size=0,lr=fast)"
        in err
    )
    assert (
        "- optimizer.lr: AdamW wants a number for 'lr', got the text 'fast' (in 2 of the 4 runs: batch_size=32,lr=fast; batch_size=0,lr=fast)"
        in err
    )
    assert not any(tmp_path.iterdir())  # no folder: nothing started


def test_the_metric_must_be_one_the_runs_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch("sweep", DIGITS, "optimizer.lr=0.1,0.01", "--metric", "val/acc2", f"run.output={tmp_path}") == 2
    assert (
        "--metric val/acc2: not measured by this recipe (eval.metrics); choose one of val/loss, val/acc1, val/acc5"
        in capsys.readouterr().err
    )


def test_a_diverged_run_is_never_the_best(tmp_path: Path) -> None:
    sweep = plan(str(DIGITS), ["optimizer.lr=0.1,0.01,0.001", f"run.output={tmp_path}"], metric="val/loss")
    rows = [{"run": "a", "val/loss": float("nan")}, {"run": "b", "val/loss": 0.5}, {"run": "c", "val/loss": 0.2}]
    assert [row["run"] for row in ranked(sweep, rows)] == ["c", "b", "a"]
    assert [row.get("rank") for row in rows] == [None, 2, 1]


def test_a_sweep_folder_only_gets_its_results_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = plan(str(DIGITS), ["optimizer.lr=0.1,0.01", f"run.output={tmp_path}"])
    sweep.write()
    assert launch("sweep", sweep.folder, "--metric", "val/acc9") == 2
    assert "--metric val/acc9: not measured by this sweep's runs; choose one of val/loss" in capsys.readouterr().err
    assert json.loads((sweep.folder / "sweep.json").read_text())["metric"] == "val/acc1"  # not written
    assert launch("sweep", sweep.folder, "--nproc", "2") == 2
    assert "it takes no --nproc: to run the sweep, give its recipe and grid again" in capsys.readouterr().err
    assert launch("sweep", sweep.folder, "--metric", "val/loss") == 1  # nothing ran yet: every run pending
    assert results(sweep.folder)["lr=0.1"]["status"] == "pending"


def test_a_run_trained_with_another_recipe_is_neither_skipped_nor_resumed_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ("sweep", DIGITS, "optimizer.lr=0.1,0.01", f"run.output={tmp_path}", "--cpu")
    sweep = plan(str(DIGITS), command[2:4])
    earlier = sweep.run_dir(sweep.runs[0])  # as if trained before the recipe's model was edited
    earlier.path.mkdir(parents=True)
    dump_recipe(load_recipe(DIGITS, ["optimizer.lr=0.1", "model.width=8"]), earlier.recipe)
    earlier.metrics.write_text("{}")
    assert launch(*command) == 2
    assert "this recipe trains something else than the run did:\n  model.width: 8 -> 32" in capsys.readouterr().err
    assert not sweep.run_dir(sweep.runs[1]).path.exists()  # nothing ran


def test_memory_reuse_is_not_swept_where_one_process_trains_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch("sweep", DIGITS, "train.reuse_freed_memory=true,false", "--cpu", f"run.output={tmp_path}") == 2
    assert "train.reuse_freed_memory: one process trains every run here" in capsys.readouterr().err
    assert not list((tmp_path / "digits").glob("sweep-*"))  # refused before the folder exists


def test_slurm_flags_need_slurm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch("sweep", DIGITS, "optimizer.lr=0.1,0.01", "--parallel", "2", f"run.output={tmp_path}") == 2
    assert "--parallel: for --slurm sweeps only" in capsys.readouterr().err


def test_report_command_hands_the_folder_to_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch("report", tmp_path / "missing") == 2
    assert "error: report:" in capsys.readouterr().err


# --- sweeps that train -------------------------------------------------------------------------------


def sweep_folder(output: Path) -> Path:
    (folder,) = (output / "digits").glob("sweep-*")
    return folder


def results(folder: Path) -> dict[str, dict]:
    return {row["run"]: row for row in json.loads((folder / "results.json").read_text())}


def hparams(run: Path) -> dict[str, object]:
    """The hparams a run logged, as TensorBoard's HParams plugin reads them from the event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in values.items()}


@pytest.mark.slow
def test_a_local_sweep_trains_every_combination_in_its_own_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch("sweep", DIGITS, "optimizer.lr=0.1,0.01", "train.epochs=1", "--cpu", f"run.output={tmp_path}") == 0
    out = capsys.readouterr().out
    folder = sweep_folder(tmp_path)
    spec = json.loads((folder / "sweep.json").read_text())
    assert spec["recipe"] == str(DIGITS) and (spec["metric"], spec["mode"]) == ("val/acc1", "max")
    assert spec["grid"] == {"optimizer.lr": [0.1, 0.01]}
    assert spec["runs"] == [
        {"name": "lr=0.1", "params": {"optimizer.lr": 0.1}},
        {"name": "lr=0.01", "params": {"optimizer.lr": 0.01}},
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        "lr=0.01",
        "lr=0.1",
        "results.csv",
        "results.json",
        "sweep.json",
    ]
    rows = results(folder)
    with (folder / "results.csv").open() as file:
        csv_rows = {row["run"]: row for row in csv.DictReader(file)}
    for name, lr in (("lr=0.1", 0.1), ("lr=0.01", 0.01)):
        run = folder / name
        assert {"recipe.yaml", "log.txt", "tensorboard", "checkpoints", "metrics.json"} <= {
            p.name for p in run.iterdir()
        }
        assert load_recipe(run / "recipe.yaml").optimizer.kwargs["lr"] == lr
        summary = json.loads((run / "metrics.json").read_text())
        row = rows[name]
        assert (row["status"], row["optimizer.lr"], row["epochs"], row["steps"]) == ("finished", lr, 1, 22)
        for metric in ("val/loss", "val/acc1", "val/acc5"):
            assert row[metric] == summary["final"][metric]
            assert float(csv_rows[name][metric]) == summary["final"][metric]
        assert (row["best"], row["best_step"], row["wall_time_s"]) == (
            summary["best"]["value"],
            summary["best"]["step"],
            summary["wall_time_s"],
        )
        assert row["folder"] == str(run.resolve())
        assert hparams(run)["optimizer.lr"] == pytest.approx(lr) and hparams(run)["train.epochs"] == 1
        assert scalars(run)["val/acc1"][-1][1] == pytest.approx(summary["final"]["val/acc1"])
    # The table: best first by val/acc1, then where to look.
    best, second = sorted(rows.values(), key=lambda row: row["val/acc1"], reverse=True)
    assert (best["rank"], second["rank"]) == (1, 2)
    table = out[out.index("best first:") :]
    assert re.search(rf"\n  1  {re.escape(best['run'])} +finished +{best['val/acc1']:.4f}", table), out
    assert table.index(f"  1  {best['run']} ") < table.index(f"  2  {second['run']} ")
    assert f"results:     {folder / 'results.csv'}, {folder / 'results.json'}" in out
    assert f"TensorBoard: tensorboard --logdir {folder}" in out
    # The sweep folder again: the same results, rewritten from what is on disk.
    results_before = (folder / "results.json").read_text()
    assert launch("sweep", folder) == 0
    assert (folder / "results.json").read_text() == results_before
    assert table in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_a_rerun_skips_finished_runs_resumes_unfinished_ones_and_retries_failed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lr=-0.1 passes validation (a number) and fails when the optimizer is built, in the run.
    command = (
        "sweep",
        DIGITS,
        "optimizer.lr=0.03,0.01,-0.1",
        "train.max_steps=4",
        "checkpoint.every_n_steps=2",
        "logging.every_n_steps=1",
        "--cpu",
        f"run.output={tmp_path}",
    )
    assert launch(*command) == 1
    folder = sweep_folder(tmp_path)
    rows = results(folder)
    assert [rows[name]["status"] for name in ("lr=0.03", "lr=0.01", "lr=-0.1")] == ["finished", "finished", "failed"]
    assert rows["lr=-0.1"]["error"] == "optimizer AdamW: Invalid learning rate: -0.1"
    assert "error: optimizer AdamW: Invalid learning rate: -0.1" in (folder / "lr=-0.1" / "log.txt").read_text()
    assert "lr=-0.1: failed: optimizer AdamW: Invalid learning rate: -0.1" in capsys.readouterr().out

    # lr=0.01 made unfinished: no metrics.json, its newest checkpoint gone (step 2's is left).
    finished, unfinished = folder / "lr=0.03", folder / "lr=0.01"
    summary = json.loads((unfinished / "metrics.json").read_text())
    (unfinished / "metrics.json").unlink()
    for path in (unfinished / "checkpoints").glob("step-00000004.pt*"):
        path.unlink()
    finished_mtime = (finished / "metrics.json").stat().st_mtime_ns

    assert launch(*command) == 1  # lr=-0.1 fails again
    err = capsys.readouterr().err
    assert f"[1/3] lr=0.03: finished already ({finished / 'metrics.json'}): skipped" in err
    assert (finished / "metrics.json").stat().st_mtime_ns == finished_mtime
    assert f"[2/3] lr=0.01: resuming from {unfinished / 'checkpoints' / 'step-00000002.pt'}" in err
    assert "resumed from" in (unfinished / "log.txt").read_text()
    resumed = json.loads((unfinished / "metrics.json").read_text())
    assert resumed["final"] == summary["final"]  # resumed on the CPU: the same numbers as before
    assert [step for step, _ in scalars(unfinished)["train/loss"]] == [1, 2, 3, 4]  # no step twice
    assert "[3/3] lr=-0.1: starting" in err
    rows = results(folder)
    assert [rows[name]["status"] for name in ("lr=0.03", "lr=0.01", "lr=-0.1")] == ["finished", "finished", "failed"]


@pytest.mark.slow
def test_each_run_of_a_sweep_can_have_several_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        launch("sweep", DIGITS, "optimizer.lr=0.1,0.01", "train.max_steps=2", "--nproc", "2", f"run.output={tmp_path}")
        == 0
    )
    folder = sweep_folder(tmp_path)
    for name in ("lr=0.1", "lr=0.01"):
        assert {"log.rank0.txt", "log.rank1.txt", "metrics.json"} <= {p.name for p in (folder / name).iterdir()}
        assert "x 2 process(es)" in (folder / name / "log.rank0.txt").read_text()
    assert {row["status"] for row in results(folder).values()} == {"finished"}


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_sweep_goes_to_slurm_as_one_job_array(tmp_path: Path) -> None:
    command = ["sweep", DIGITS, "optimizer.lr=0.1,0.01", "train.max_steps=3", f"run.output={tmp_path}",
               "--slurm", "--nproc", "1", "--time", "10", "--parallel", "2"]  # fmt: skip
    result = run_launch(*command, "--wait", cwd=tmp_path, timeout=600, python_on_path=True)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = sweep_folder(tmp_path)
    job_ids = re.findall(r"  job (\d+_[01]): ", result.stdout)
    assert "submitted 2 run(s) as one job array, at most 2 at once" in result.stdout and len(job_ids) == 2
    rows = results(folder)
    for name, job_id in zip(("lr=0.1", "lr=0.01"), job_ids, strict=True):
        summary = json.loads((folder / name / "metrics.json").read_text())
        assert (
            rows[name]["status"] == "finished"
            and rows[name]["val/acc1"] == summary["final"]["val/acc1"]
            and rows[name]["steps"] == 3
        )
        assert f"run folder {folder / name}" in (folder / "slurm" / f"{job_id}_0_log.out").read_text()
    assert "best first:" in result.stdout
    again = run_launch(*command, cwd=tmp_path, timeout=600, python_on_path=True)
    assert again.returncode == 0 and "nothing to submit: every run has finished or is in the queue" in again.stdout
    assert "lr=0.1: finished already: skipped" in again.stderr
