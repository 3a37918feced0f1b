"""The trackers of logging.trackers (TensorBoard, metrics.csv, MLflow, W&B offline), each read back
with its own reader: MLflow's client on the local SQLite store, W&B's `wandb leet inspect` on the
offline run's transaction log, pandas on metrics.csv. A run killed after a checkpoint and resumed
keeps one MLflow run and one W&B run with one value per step; 2 ranks log from rank 0 alone; a
tracker that is not installed is refused before anything starts. No network: W&B runs offline,
MLflow's telemetry is off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RECIPES, final_checkpoint, run_dirs, run_launch, scalars, start_launch

from launcher.rundir import RunDir
from launcher.tracking.metrics_csv import CsvTracker, csv_series
from launcher.tracking.readback import run_series
from launcher.tracking.tensorboard import last_scalars

DIGITS = RECIPES / "digits.yaml"
ALL = "logging.trackers=[tensorboard,csv,mlflow,wandb]"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing reaches the network: W&B offline and quiet, MLflow's and W&B's telemetry off.
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                        "DO_NOT_TRACK": "1", "WANDB_DISABLE_CODE": "true"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def mlflow_runs(output: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id])


def mlflow_history(output: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _heartbeat_step(out: Path) -> int:
    """The last step rank 0 finished, from its heartbeat file; -1 before its first."""
    for beat in out.glob("digits/*/heartbeat/rank0"):
        first = beat.read_text().split()[:1]
        if first and first[0].isdigit():
            return int(first[0])
    return -1


def wandb_records(part: Path) -> list[dict]:
    """The records of one offline W&B run folder, read with W&B's own reader."""
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(part)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def wandb_history(part: Path, key: str) -> list[tuple[int, float]]:
    return [
        (r["history"]["step"].get("num", 0), r["history"]["item"][key])
        for r in wandb_records(part)
        if r["type"] == "history" and key in r["history"]["item"]
    ]


def test_metrics_csv_a_new_tag_adds_a_column_and_a_resume_drops_the_later_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = CsvTracker(path)
    for step in (1, 2, 3):
        first.scalars({"train/loss": 1.0 / step}, step)
    first.scalars({"val/acc1": 0.5}, 3)  # the same step: the same row
    first.scalars({"train/loss": 0.2}, 4)
    first.close()
    assert path.read_text().splitlines() == [
        "step,train/loss,val/acc1", "1,1.0,", "2,0.5,", "3,0.3333333333333333,0.5", "4,0.2,",
    ]  # fmt: skip
    resumed = CsvTracker(path, resume_step=2)  # the checkpoint was at step 2: steps 3 and 4 go
    resumed.scalars({"train/loss": 0.4}, 3)
    resumed.close()
    assert csv_series(path) == {"train/loss": [(1, 1.0), (2, 0.5), (3, 0.4)]}
    assert last_scalars(csv_series(path)) == (3, {"train/loss": 0.4})


@pytest.mark.slow
def test_every_tracker_reads_back_what_the_run_logged(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    out = tmp_path / "runs"
    result = run_launch(
        DIGITS, "--cpu", "train.max_steps=20", "logging.every_n_steps=5", ALL, f"run.output={out}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"MLflow: mlflow ui --backend-store-uri sqlite:///{out.resolve()}/mlflow.db" in result.stderr
    (run,) = run_dirs(out, "digits")
    board = scalars(run)
    assert [s for s, _ in board["train/loss"]] == [5, 10, 15, 20]
    table = pandas.read_csv(run / "metrics.csv", index_col="step")
    assert list(table.index) == [5, 10, 15, 20] and table["val/acc1"].notna().tolist() == [False] * 3 + [True]
    assert table["train/loss"].tolist() == pytest.approx([v for _, v in board["train/loss"]], rel=1e-6)
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert table.loc[20, "val/acc1"] == final["val/acc1"]
    ids = final_checkpoint(run)["trackers"]
    assert set(ids) == {"mlflow", "wandb"}

    from mlflow import MlflowClient

    (mlflow_run,) = mlflow_runs(out)
    assert (mlflow_run.info.run_id, mlflow_run.info.status, mlflow_run.info.run_name) == (
        ids["mlflow"],
        "FINISHED",
        run.name,
    )
    assert mlflow_run.data.params["optimizer.lr"] == "0.003" and mlflow_run.data.params["train.max_steps"] == "20"
    history = mlflow_history(out, ids["mlflow"], "train/loss")
    assert [s for s, _ in history] == [5, 10, 15, 20]
    assert [v for _, v in history] == pytest.approx([v for _, v in board["train/loss"]], rel=1e-6)
    assert mlflow_run.data.metrics["val/acc1"] == final["val/acc1"]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert sorted(a.path for a in client.list_artifacts(ids["mlflow"])) == ["metrics.json", "recipe.yaml"]
    kept = Path(client.download_artifacts(ids["mlflow"], "metrics.json", str(tmp_path / "down")))
    assert json.loads(kept.read_text())["final"] == final

    (part,) = (run / "wandb").glob(f"offline-run-*-{ids['wandb']}")
    records = wandb_records(part)
    (started,) = [r["run"] for r in records if r["type"] == "run"]
    assert (started["run_id"], started["project"], started["display_name"]) == (ids["wandb"], "digits", run.name)
    config = {k: v for r in records if r["type"] == "config" for k, v in r["config"]["update"].items()}
    assert config["optimizer.lr"] == 0.003
    assert wandb_history(part, "train/loss") == history  # the very values MLflow has
    assert wandb_history(part, "val/acc1") == [(20, final["val/acc1"])]
    saved = {f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]}
    assert {"recipe.yaml", "metrics.json"} <= saved


@pytest.mark.slow
def test_without_tensorboard_status_sweep_and_report_read_metrics_csv(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = run_launch(DIGITS, "--cpu", "train.max_steps=10", "logging.every_n_steps=5", "logging.trackers=[csv]",
                        f"run.output={out}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TensorBoard:" not in result.stderr
    (run,) = run_dirs(out, "digits")
    assert not (run / "tensorboard").exists()
    series = run_series(RunDir(run).tensorboard(None), RunDir(run).metrics_csv)
    assert [s for s, _ in series["train/loss"]] == [5, 10] and "val/acc1" in series
    report = run_launch("report", run, "--out", tmp_path / "report", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "report" / "index.html").exists()


@pytest.mark.slow
@pytest.mark.faults
def test_a_run_killed_after_a_checkpoint_and_resumed_keeps_one_tracker_run_with_one_value_a_step(
    tmp_path: Path,
) -> None:
    out = tmp_path / "runs"
    recipe = (DIGITS, "--cpu", "train.max_steps=30", "logging.every_n_steps=1", "checkpoint.every_n_steps=10",
              "checkpoint.every_n_epochs=null", ALL, f"run.output={out}")  # fmt: skip
    # W&B writes its offline log every 15 s (its default): every 0.2 s here, so that the killed
    # part holds steps after the checkpoint (private setting x_transaction_log_flush_interval).
    env = {**os.environ, "WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": "0.2"}
    process = start_launch(*recipe, cwd=tmp_path, env=env)
    # Killed a few steps after the checkpoint at step 10: steps 11.. were logged, and are trained again.
    deadline = time.monotonic() + 180
    while _heartbeat_step(out) < 14:
        assert time.monotonic() < deadline and process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.005)
    # Training (the launch process itself, with --cpu) frozen there, before its checkpoint at step
    # 20, while W&B's own process writes what it was sent; then everything killed.
    os.kill(process.pid, signal.SIGSTOP)
    time.sleep(0.5)  # W&B's next flush
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(out, "digits")
    assert final_checkpoint(run)["progress"]["step"] == 10
    ids = final_checkpoint(run)["trackers"]
    (mlflow_run,) = mlflow_runs(out)
    crashed = mlflow_history(out, ids["mlflow"], "train/loss")
    assert mlflow_run.info.status == "RUNNING" and crashed[-1][0] >= 13  # killed: no goodbye
    time.sleep(1.1)  # a later second for TensorBoard's event file and W&B's folder name
    result = run_launch(*recipe, "--resume", run, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    board = scalars(run)["train/loss"]
    assert [s for s, _ in board] == list(range(1, 31))
    (mlflow_run,) = mlflow_runs(out)  # the same MLflow run, reopened
    assert (mlflow_run.info.run_id, mlflow_run.info.status) == (ids["mlflow"], "FINISHED")
    history = mlflow_history(out, ids["mlflow"], "train/loss")
    assert [s for s, _ in history] == list(range(1, 31))  # one value a step
    # The steps the killed run logged after its checkpoint kept their first values: those of the
    # same training from the same checkpoint, the resumed run's (bitwise on the CPU, float32 in TensorBoard).
    assert [v for _, v in history] == pytest.approx([v for _, v in board], rel=1e-6)
    assert [s for s, _ in mlflow_history(out, ids["mlflow"], "val/acc1")] == [22, 30]

    parts = sorted((run / "wandb").glob(f"offline-run-*-{ids['wandb']}"))
    assert len(parts) == 2 and final_checkpoint(run)["trackers"]["wandb"] == ids["wandb"]  # one W&B run, 2 parts
    killed, resumed = ([s for s, _ in wandb_history(part, "train/loss")] for part in parts)
    assert killed[-1] > 10 and killed == list(range(1, killed[-1] + 1))  # logged after the checkpoint
    assert resumed == list(range(killed[-1] + 1, 31))  # one value a step across both parts, for `wandb sync`
    assert [s for s, _ in csv_series(run / "metrics.csv")["train/loss"]] == list(range(1, 31))


@pytest.mark.slow
def test_two_ranks_log_from_rank_0_alone(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = run_launch(DIGITS, "--nproc", "2", "train.max_steps=8", "logging.every_n_steps=2", "logging.trackers=[csv,mlflow,wandb]",
                        f"run.output={out}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(out, "digits")
    (mlflow_run,) = mlflow_runs(out)
    assert [s for s, _ in mlflow_history(out, mlflow_run.info.run_id, "train/loss")] == [2, 4, 6, 8]
    (part,) = (run / "wandb").glob("offline-run-*")
    assert [s for s, _ in wandb_history(part, "train/loss")] == [2, 4, 6, 8]
    assert [s for s, _ in csv_series(run / "metrics.csv")["train/loss"]] == [2, 4, 6, 8]


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_that_is_not_installed_is_refused_before_anything_starts(tracker: str, tmp_path: Path) -> None:
    # Not installed, as Python sees it: sys.modules[name] = None makes `import name` raise
    # ModuleNotFoundError and importlib.util.find_spec(name) answer None.
    code = (f"import sys; sys.modules[{tracker!r}] = None; from launcher.cli.main import main; "
            f"sys.exit(main(sys.argv[1:]))")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, str(DIGITS), "--cpu", f"logging.trackers=[csv,{tracker}]", f"run.output={tmp_path}"],
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"logging.trackers: {tracker} is not installed: pip install 'launcher[{tracker}]'" in done.stderr
    assert not (tmp_path / "digits").exists() or not any((tmp_path / "digits").iterdir())
