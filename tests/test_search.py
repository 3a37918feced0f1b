"""`launch search`: the space and its errors, and searches run for real on digits with Optuna: ASHA
prunes trials through the launcher's own stop (checkpoint, status pruned) and the best trial is at
least the median of a grid over the same space; an interrupted search goes on without running a
finished trial again; a search as SLURM job arrays."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import time
from pathlib import Path

import optuna
import pytest
from conftest import RECIPES, run_launch, start_launch

from launcher.cli.recipe_checks import problems_in
from launcher.config.problems import RecipeError
from launcher.search.planning import Options, plan
from launcher.search.space import parse_space, probes

DIGITS = RECIPES / "digits.yaml"
# Small and short: a trial is 2 epochs of a width-8 CNN, about 5 s on one core.
SMALL = ["train.epochs=2", "model.width=8", "checkpoint.every_n_epochs=1", "logging.every_n_steps=1000"]


def test_the_space_and_its_problems_name_their_keys() -> None:
    space, fixed = parse_space(
        ["optimizer.lr=loguniform:1e-4:1e-1", "train.batch_size=choice:32,64", "model.width=int:4:16", "train.epochs=3"]
    )
    assert fixed == ["train.epochs=3"]
    assert space["train.batch_size"].choices == (32, 64) and space["model.width"].corners() == [4, 16]
    assert probes(space) == [
        {"optimizer.lr": 1e-4, "train.batch_size": 32, "model.width": 4},
        {"optimizer.lr": 1e-1, "train.batch_size": 64, "model.width": 16},
    ]
    with pytest.raises(RecipeError) as caught:
        parse_space([
            "optimizer.lr=loguniform:0:1", "train.batch_size=choice:32,,64", "model.width=int:8",
            "optimizer.weight_decay=uniform:a:b", "train.epochs=int:5:2",
        ])  # fmt: skip
    problems = {problem.path: problem.message for problem in caught.value.problems}
    assert "above 0" in problems["optimizer.lr"] and "empty choice" in problems["train.batch_size"]
    assert "two bounds" in problems["model.width"] and "must be numbers" in problems["optimizer.weight_decay"]
    assert "LOW must be below HIGH" in problems["train.epochs"]


def test_every_corner_of_the_space_is_checked_against_the_recipe() -> None:
    with pytest.raises(RecipeError) as caught:
        plan(
            str(DIGITS), ["optimizer.lrr=uniform:0.1:0.2", "train.batch_size=int:0:64"], Options(trials=4), problems_in
        )
    text = str(caught.value)
    assert "optimizer.lrr" in text and "did you mean" in text.lower() and "train.batch_size" in text


def study_of(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "journal.log")))
    return optuna.load_study(study_name="search", storage=storage)


def only_folder(root: Path, pattern: str) -> Path:
    (folder,) = root.glob(f"digits/{pattern}")
    return folder


@pytest.mark.slow
def test_asha_prunes_trials_and_the_best_is_at_least_the_grid_median(tmp_path: Path) -> None:
    space = ["optimizer.lr=loguniform:1e-4:1e-1", "train.batch_size=choice:64,128"]
    started = time.monotonic()
    result = run_launch(
        "search", DIGITS, *space, *SMALL, f"run.output={tmp_path}", "--cpu", "--trials", "12", "--pruner", "asha",
        cwd=tmp_path, timeout=900,
    )  # fmt: skip
    searched_s = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    folder = only_folder(tmp_path, "search-*")
    rows = json.loads((folder / "results.json").read_text())
    study = study_of(folder)
    states = [trial.state.name for trial in study.trials]
    pruned = [row for row in rows if row["status"] == "pruned"]
    assert len(rows) == len(states) == 12 and states.count("PRUNED") == len(pruned) >= 1, states
    assert states.count("COMPLETE") == sum(row["status"] == "finished" for row in rows) >= 1
    for row in pruned:  # stopped by the launcher's stop: a checkpoint after the epoch it was judged at
        run = Path(row["folder"])
        at = json.loads((run / "pruned.json").read_text())
        assert at["epoch"] == 1 and not (run / "metrics.json").exists()
        assert "(pruned); checkpoint:" in (run / "log.txt").read_text()
        assert sorted(run.glob("checkpoints/step-*.pt"))
    best = max(row["val/acc1"] for row in rows if row["status"] == "finished")
    assert best == pytest.approx(study.best_value)

    # The grid over the same space: the range's ends and its middle on the log scale, both batch sizes.
    grid = run_launch(
        "sweep", DIGITS, "optimizer.lr=1e-4,3e-3,1e-1", "train.batch_size=64,128", *SMALL, f"run.output={tmp_path}",
        "--cpu", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert grid.returncode == 0, grid.stdout + grid.stderr
    grid_values = [
        row["val/acc1"] for row in json.loads((only_folder(tmp_path, "sweep-*") / "results.json").read_text())
    ]
    median = statistics.median(grid_values)
    print(
        f"search: {searched_s:.0f} s, {len(pruned)} of 12 pruned, best {best:.4f}; grid {sorted(grid_values)}, median {median:.4f}"
    )
    assert best >= median

    report = run_launch("report", folder, cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    page = (folder / "report" / "index.html").read_text()
    assert "search search-" in page and "importance of each key" in page


@pytest.mark.slow
def test_a_trial_of_two_workers_is_pruned_by_both_at_one_step(tmp_path: Path) -> None:
    # TPE seeded with train.seed 0 draws 0.003 first, then 1e-5: the second trial trails the first
    # at epoch 1, and ASHA (its first rung at epoch 1) prunes it.
    result = run_launch(
        "search", DIGITS, "optimizer.lr=choice:0.00001,0.003", *SMALL, f"run.output={tmp_path}", "--nproc", "2",
        "--trials", "2", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    folder = only_folder(tmp_path, "search-*")
    assert [trial.state.name for trial in study_of(folder).trials] == ["COMPLETE", "PRUNED"]
    run = folder / "trial-0001"
    stops = {
        re.search(r"stopped at step (\d+) \(pruned\)", (run / f"log.rank{rank}.txt").read_text()) for rank in (0, 1)
    }
    assert None not in stops
    (step,) = {int(found.group(1)) for found in stops if found}  # both ranks, the same step
    assert step > json.loads((run / "pruned.json").read_text())["step"]  # the step after the evaluation
    assert (run / "checkpoints" / f"step-{step:08d}.pt").exists() and not (run / "metrics.json").exists()
    assert "the run was pruned by its search" in result.stderr


@pytest.mark.slow
def test_an_interrupted_search_goes_on_without_running_a_finished_trial_again(tmp_path: Path) -> None:
    command = ["search", DIGITS, "optimizer.lr=loguniform:1e-3:1e-1", *SMALL, f"run.output={tmp_path}", "--cpu",
               "--trials", "3", "--pruner", "none", "--name", "resumed"]  # fmt: skip
    process = start_launch(*command, cwd=tmp_path, env={**os.environ})
    folder = tmp_path / "digits" / "search-resumed"
    deadline = time.monotonic() + 300
    # Trial 1 is part-way, with a complete checkpoint (its checksum written: the step file alone,
    # renamed into place just before, does not count yet, and the trial would start again).
    while not list(folder.glob("trial-0001/checkpoints/step-*.pt.sha256")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # no clean stop: trial 1 stays RUNNING in the study
    process.wait()
    finished = {"trial-0000": (folder / "trial-0000" / "metrics.json").stat().st_mtime_ns}
    assert [trial.state.name for trial in study_of(folder).trials] == ["COMPLETE", "RUNNING"]

    again = run_launch("search", folder, "--cpu", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trial 1 [2/3] {'optimizer.lr'" in again.stderr and "resuming from" in again.stderr
    assert "trial 0 " not in again.stderr
    assert {name: (folder / name / "metrics.json").stat().st_mtime_ns for name in finished} == finished
    trials = study_of(folder).trials
    assert [(t.number, t.state.name) for t in trials] == [(n, "COMPLETE") for n in range(3)]
    assert sorted(p.name for p in folder.glob("trial-*")) == [f"trial-{n:04d}" for n in range(3)]
    # The trial that was cut off ran from its checkpoint: two epochs in all, in its one run folder.
    assert json.loads((folder / "trial-0001" / "metrics.json").read_text())["final"]["epoch"] == 2

    more = run_launch("search", folder, "--cpu", "--trials", "4", cwd=tmp_path, timeout=600)
    assert more.returncode == 0 and "trial 3 [4/4]" in more.stderr and "trial 2 " not in more.stderr


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_search_runs_as_slurm_job_arrays(tmp_path: Path) -> None:
    result = run_launch(
        "search", DIGITS, "optimizer.lr=loguniform:1e-3:1e-1", "train.batch_size=choice:64,128", *SMALL,
        f"run.output={tmp_path}", "--trials", "4", "--slurm", "--nproc", "1", "--time", "10", "--parallel", "2",
        cwd=tmp_path, timeout=900, python_on_path=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    folder = only_folder(tmp_path, "search-*")
    assert result.stdout.count("submitted trials") == 2  # two arrays of two: the second drawn after the first's results
    assert "submitted trials 0, 1 as one job array" in result.stdout
    states = [trial.state.name for trial in study_of(folder).trials]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, states
    rows = json.loads((folder / "results.json").read_text())
    assert {row["status"] for row in rows} <= {"finished", "pruned"} and len(rows) == 4
    assert sorted(p.name for p in (folder / "slurm").glob("*_0_log.out"))
