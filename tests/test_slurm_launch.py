"""`launch --slurm` against the real single-host cluster of slurm/cluster.sh: two nodes, gloo.

Marked `slurm` (skipped where no controller answers, failing instead where
LAUNCHER_REQUIRE_SLURM=1, as in CI). Jobs run `launch` from this Python's environment.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import (
    FIXTURES,
    ROOT,
    assert_same_weights,
    final_checkpoint,
    final_weights,
    launch,
    run_dirs,
    run_launch,
    scalars,
)

from launcher import checkpoint
from launcher.config.loading import dump_recipe, load_recipe
from launcher.rundir import new_run_dir
from launcher.slurm import status as slurm_status
from launcher.slurm import submission

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

DIGITS = ROOT / "recipes" / "digits.yaml"
TWO_NODES = ("--slurm", "--nodes", "2", "--nproc", "1", "--time", "10")
# The jobs run `launch` from PATH: this interpreter's.
launch_on_slurm = functools.partial(run_launch, timeout=600, python_on_path=True)


def submitted(result: subprocess.CompletedProcess[str]) -> tuple[str, Path]:
    """The job id and run folder that `launch --slurm` printed."""
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = re.search(r"submitted job (\S+):", result.stdout).group(1)
    run = Path(re.search(r"run folder:\s+(\S+)", result.stdout).group(1))
    return job_id, run


def wait_for_line(path: Path, text: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"'{text}' did not appear in {path} within {timeout_s} s")


def assert_no_duplicate_steps(run: Path) -> None:
    for tag, series in scalars(run).items():
        steps = [step for step, _ in series]
        assert steps == sorted(set(steps)), tag


@pytest.fixture(scope="module")
def two_node_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, float]:
    """The digits recipe as one uninterrupted 2-node job (1 CPU task per node); and how long
    from `launch --slurm` to its first logged step."""
    output = tmp_path_factory.mktemp("slurm")
    started = time.time()
    result = launch_on_slurm(DIGITS, *TWO_NODES, "--wait", f"run.output={output}", cwd=output)
    job_id, run = submitted(result)
    assert "epoch 15/15" in result.stdout  # --wait followed rank 0's log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    first_logged = min(events.Scalars("train/loss"), key=lambda e: e.step).wall_time
    return job_id, run, first_logged - started


@pytest.mark.slow
def test_two_node_job_trains_as_the_local_run_does(two_node_job: tuple[str, Path, float], tmp_path: Path) -> None:
    job_id, run, to_first_step = two_node_job
    print(f"launch --slurm to the first logged step: {to_first_step:.1f} s")
    assert launch(DIGITS, "--nproc", "2", f"run.output={tmp_path}") == 0
    (local,) = run_dirs(tmp_path, "digits")
    on_slurm = json.loads((run / "metrics.json").read_text())["final"]
    here = json.loads((local / "metrics.json").read_text())["final"]
    assert on_slurm["val/acc1"] == pytest.approx(here["val/acc1"]) and on_slurm["val/acc1"] > 0.95
    assert_same_weights(final_weights(run), final_weights(local))
    # Only rank 0 wrote TensorBoard; both ranks logged, each on its own node.
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "task 0 of 2" in (run / "slurm" / f"{job_id}_0_log.out").read_text()
    assert "task 1 of 2" in (run / "slurm" / f"{job_id}_1_log.out").read_text()


@pytest.mark.slow
def test_status_and_logs_show_the_job(two_node_job: tuple[str, Path, float]) -> None:
    job_id, run, _ = two_node_job
    for target in (run, job_id):
        status = launch_on_slurm("status", target, cwd=run)
        assert status.returncode == 0, status.stderr
        assert f"job {job_id}: COMPLETED on node[1-2]" in status.stdout
        assert "val/acc1 0.9" in status.stdout and "step-00000165.pt" in status.stdout
    logs = launch_on_slurm("logs", run, "--rank", "1", cwd=run)
    assert logs.returncode == 0 and "task 1 of 2" in logs.stdout
    no_such_rank = launch_on_slurm("logs", job_id, "--rank", "2", cwd=run)
    assert no_such_rank.returncode == 2 and f"job {job_id} has ranks 0 to 1: no rank 2" in no_such_rank.stderr


@pytest.mark.slow
@pytest.mark.parametrize("preemption", ["scontrol requeue", "USR2 warning"])
def test_a_preempted_job_resumes_to_the_same_weights(
    preemption: str, two_node_job: tuple[str, Path, float], tmp_path: Path
) -> None:
    _, uninterrupted, _ = two_node_job
    job_id, run = submitted(launch_on_slurm(DIGITS, *TWO_NODES, f"run.output={tmp_path}", cwd=tmp_path))
    log = run / "slurm" / f"{job_id}_0_log.out"
    wait_for_line(log, "epoch 3/15")
    if preemption == "scontrol requeue":  # SLURM requeues the job and sends SIGTERM
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    else:  # the warning ahead of a time limit or a preemption: the job requeues itself (submitit)
        subprocess.run(["scancel", "--signal", "USR2", job_id], check=True)
    state = slurm_status.wait_until_ended(job_id, timeout_s=400)
    text = log.read_text()
    assert state["State"] == "COMPLETED", text[-3000:]
    stopped = int(re.search(r"stopped at step (\d+)", text).group(1))
    assert 22 < stopped < 165
    # 11 steps an epoch; a stop at an epoch's last step resumes in that epoch, for its evaluation.
    assert (
        f"resumed from {run / 'checkpoints' / f'step-{stopped:08d}.pt'} at epoch {(stopped - 1) // 11 + 1}, step {stopped}"
        in text
    )
    assert slurm_status.restarts(job_id) == 1
    assert_same_weights(final_weights(run), final_weights(uninterrupted))
    assert_no_duplicate_steps(run)
    assert [s for s, _ in scalars(run)["train/loss"]] == [s for s, _ in scalars(uninterrupted)["train/loss"]]


@pytest.mark.slow
def test_a_requeued_job_keeps_one_mlflow_run_with_one_value_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from the jobs (sbatch passes the environment)
    trackers = ("train.epochs=6", "logging.every_n_steps=1", "logging.trackers=[tensorboard,csv,mlflow]")
    job_id, run = submitted(launch_on_slurm(DIGITS, *TWO_NODES, *trackers, f"run.output={tmp_path}", cwd=tmp_path))
    log = run / "slurm" / f"{job_id}_0_log.out"
    wait_for_line(log, "epoch 2/6")
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # SLURM requeues the job and sends SIGTERM
    state = slurm_status.wait_until_ended(job_id, timeout_s=400)
    text = log.read_text()
    assert state["State"] == "COMPLETED" and slurm_status.restarts(job_id) == 1, text[-3000:]
    assert re.search(r"stopped at step (\d+)", text) and "resumed from" in text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits")
    assert experiment is not None
    (only,) = client.search_runs([experiment.experiment_id])  # the requeued job reopened it
    assert only.info.run_id == final_checkpoint(run)["trackers"]["mlflow"] and only.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(only.info.run_id, "train/loss"))
    assert steps == list(range(1, 67)) == [s for s, _ in scalars(run)["train/loss"]]  # 11 steps an epoch, once each


@pytest.mark.slow
def test_the_requeue_limit_stops_the_run_with_a_clear_message(tmp_path: Path) -> None:
    job_id, run = submitted(
        launch_on_slurm(DIGITS, *TWO_NODES, "slurm.max_requeues=0", f"run.output={tmp_path}", cwd=tmp_path)
    )
    log = run / "slurm" / f"{job_id}_0_log.out"
    wait_for_line(log, "epoch 2/15")
    subprocess.run(["scancel", "--signal", "USR2", job_id], check=True)
    state = slurm_status.wait_until_ended(job_id, timeout_s=300)
    assert state["State"] == "FAILED"
    text = log.read_text()
    assert "the limit is slurm.max_requeues=0: not requeueing it again" in text
    assert f"go on with: launch {run / 'recipe.yaml'} --slurm --resume {run}" in text
    assert final_checkpoint(run)["progress"]["step"] == int(re.search(r"stopped at step (\d+)", text).group(1))


@pytest.mark.slow
def test_cancel_stops_the_job_and_keeps_its_last_checkpoint(tmp_path: Path) -> None:
    job_id, run = submitted(
        launch_on_slurm(DIGITS, *TWO_NODES, "train.epochs=300", f"run.output={tmp_path}", cwd=tmp_path)
    )
    wait_for_line(run / "slurm" / f"{job_id}_0_log.out", "epoch 6/300")
    cancel = launch_on_slurm("cancel", run, cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr
    assert f"job {job_id}: CANCELLED" in cancel.stderr
    assert slurm_status.job_state(job_id)["State"] == "CANCELLED"
    text = (run / "slurm" / f"{job_id}_0_log.out").read_text()
    stopped = int(re.search(r"stopped at step (\d+) \(terminated\)", text).group(1))
    newest = checkpoint.latest(run / "checkpoints")
    assert checkpoint.load(newest)["progress"]["step"] == stopped >= 66
    assert not list((run / "checkpoints").glob(".*.tmp"))  # no half-written file
    assert f"--slurm --resume {run}" in cancel.stderr
    # ... and the run goes on from it, as the message says, in a new job.
    resumed = launch_on_slurm(
        run / "recipe.yaml", *TWO_NODES, "--resume", run, "--wait", "train.epochs=20", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {newest} at epoch" in resumed.stdout
    assert [job["job_id"] for job in json.loads((run / "slurm" / "job.json").read_text())["jobs"]][0] == job_id
    assert json.loads((run / "metrics.json").read_text())["final"]["step"] == 220


@pytest.mark.slow
def test_an_array_of_three_runs_each_in_its_own_folder(tmp_path: Path) -> None:
    recipes = [
        load_recipe(DIGITS, ["train.epochs=2", f"train.seed={seed}", f"run.output={tmp_path}", "slurm.time=10"])
        for seed in (1, 2, 3)
    ]
    runs = [new_run_dir(r.run.output, r.run.name, run_id=f"seed-{r.train.seed}") for r in recipes]
    for recipe, run in zip(recipes, runs, strict=True):
        dump_recipe(recipe, run.recipe)
    job_ids = submission.submit_array(recipes, runs, tmp_path / "array", parallel=2)
    assert len(set(job_ids)) == 3 and all(re.fullmatch(r"\d+_[012]", j) for j in job_ids)
    for job_id in job_ids:
        assert slurm_status.wait_until_ended(job_id, timeout_s=300)["State"] == "COMPLETED"
    finals = [json.loads(run.metrics.read_text())["final"] for run in runs]
    assert [f["step"] for f in finals] == [44, 44, 44]
    assert len({f["val/loss"] for f in finals}) == 3  # three seeds, three runs
    # At most 2 ran at once.
    spans = []
    for job_id in job_ids:
        state = slurm_status.job_state(job_id)
        spans.append((datetime.fromisoformat(state["Start"]), datetime.fromisoformat(state["End"])))
    assert max(sum(s <= start < e for s, e in spans) for start, _ in spans) <= 2
    for target in (runs[1].path, job_ids[1]):  # by run folder, or by the array task's id
        status = launch_on_slurm("status", target, cwd=tmp_path)
        assert f"job {job_ids[1]}: COMPLETED" in status.stdout and f"run folder: {runs[1].path}" in status.stdout, (
            status.stderr
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--nodes", "3"), "slurm.nodes=3, but partition 'debug' has 2 node(s): node1, node2"),
        (("--nproc", "4"), "4 task(s) per node (slurm.nproc) x 1 CPU(s) per task (slurm.cpus_per_task) = 4 CPUs per node, but the nodes of 'debug' have at most 2 CPUs"),
        (("--gpus", "1"), "slurm.gpus=1 per node, but the nodes of 'debug' have at most 0 GPU(s)"),
        (("--mem", "64G"), "slurm.mem=64G per node, but the nodes of 'debug' have at most 4000 MB"),
        (("--partition", "gpu"), "slurm.partition=gpu: no such partition"),
        (("--gpus", "2", "--nproc", "2"), "slurm.gpus=2 and slurm.nproc=2: one task per GPU, or nproc CPU tasks; choose one"),
    ],
)  # fmt: skip
def test_inconsistent_resources_fail_before_the_queue(
    flags: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs_before = subprocess.run(["squeue", "-h", "-o", "%i"], check=True, capture_output=True, text=True).stdout
    assert launch(DIGITS, "--slurm", *flags, f"run.output={tmp_path}") == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no run folder
    assert (
        subprocess.run(["squeue", "-h", "-o", "%i"], check=True, capture_output=True, text=True).stdout == jobs_before
    )


def test_a_job_slurm_refuses_leaves_no_run_folder_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch(DIGITS, "--slurm", "--constraint", "nosuchfeature", f"run.output={tmp_path}") == 2
    assert (
        "error: SLURM refused the job: Batch job submission failed: Invalid feature specification"
        in capsys.readouterr().err
    )
    assert not list(tmp_path.glob("digits/*"))


@pytest.mark.slow
def test_a_time_limit_shorter_than_the_warning_delay_still_runs(tmp_path: Path) -> None:
    # signal_delay_s is 120 s by default: sent before the job starts, the warning would kill it.
    result = launch_on_slurm(
        DIGITS, *TWO_NODES[:-1], "1", "--wait", "train.epochs=2", f"run.output={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "time limit 1 min" in result.stdout and "epoch 2/2" in result.stdout


def test_a_bad_time_limit_is_a_recipe_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch(DIGITS, "--slurm", "--time", "soon", f"run.output={tmp_path}") == 2
    assert "slurm.time" in capsys.readouterr().err


@pytest.mark.slow
def test_the_job_script_checkpoints_before_its_time_limit_without_a_warning(tmp_path: Path) -> None:
    # slurm/train.sbatch as it ships, less its GPUs and its warning signal: the run must watch the
    # clock. A 1-minute limit and about a minute of training or more: one requeue or several.
    script = tmp_path / "train.sbatch"
    lines = (ROOT / "slurm" / "train.sbatch").read_text().splitlines()
    script.write_text(
        "\n".join(line for line in lines if not line.startswith(("#SBATCH --signal", "#SBATCH --gpus"))) + "\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    submit = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=1", f"--output={tmp_path}/slurm-%j.out",
         script, DIGITS, "train.epochs=100", "slurm.max_requeues=10", f"run.output={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=True,
    )  # fmt: skip
    job_id = submit.stdout.strip()
    state = slurm_status.wait_until_ended(job_id, timeout_s=500)
    text = (tmp_path / f"slurm-{job_id}.out").read_text()
    assert state["State"] == "COMPLETED", text[-3000:]
    assert "s left before the time limit" in text and f"requeueing job {job_id} (requeue 1 of at most 10)" in text
    run = tmp_path / "digits" / f"slurm-{job_id}"
    assert json.loads((run / "metrics.json").read_text())["final"]["step"] == 100 * 11
    assert slurm_status.restarts(job_id) >= 1
    assert_no_duplicate_steps(run)
    # The job script's run is followed like any other.
    status = launch_on_slurm("status", job_id, cwd=tmp_path)
    assert f"job {job_id}: COMPLETED" in status.stdout and f"run folder: {run}" in status.stdout, status.stderr
    assert "epoch 100/100" in launch_on_slurm("logs", run, cwd=tmp_path).stdout


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_and_is_named_with_its_node_and_traceback(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "failing.py", tmp_path / "failing.py")
    recipe = tmp_path / "failing.yaml"
    recipe.write_text("data: {dataset: {name: digits}, num_workers: 0, transforms: {train: [ToTensor], val: [ToTensor]}}\n"
                      "model: {name: 'failing:FailsOnRank1'}\ntrain: {epochs: 3, batch_size: 16}\ndistributed: {timeout_s: 60}\n")  # fmt: skip
    result = launch_on_slurm(recipe, *TWO_NODES, "--wait", f"run.output={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0
    assert "ended: FAILED" in result.stderr
    assert re.search(r"failed: rank 1 on node2 \(.*_1_log.out\):\n  Traceback", result.stderr), result.stderr
    assert "RuntimeError: boom in rank 1" in result.stderr
    _, run = submitted(subprocess.CompletedProcess([], 0, result.stdout, ""))
    status = launch_on_slurm("status", run, cwd=tmp_path)
    assert "FAILED" in status.stdout and "RuntimeError: boom in rank 1" in status.stdout
