"""MLflow, a tracker rank 0 logs to where the recipe asks (`logging.trackers: [mlflow]`, `pip install 'launcher[mlflow]'`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from launcher.config.schema import Mlflow

PARAMS_PER_CALL = 100  # MLflow's limit on params in one log_batch
PARAM_LENGTH = 6000  # and on a param's value


def default_tracking_uri(output: Path) -> str:
    """A SQLite store beside the run folders of run.output: the runs of a recipe, resumed or not, in one place."""
    return f"sqlite:///{(output / 'mlflow.db').resolve()}"


class MlflowTracker:
    """One MLflow run per launcher run: params (the flattened recipe) when it starts, the scalars
    with their steps, recipe.yaml and metrics.json as artifacts at the end.

    A resumed run (`run_id`: its earlier part's) reopens that MLflow run. MLflow keeps every value
    logged and has no call that removes one, so a step the crashed part logged after its last
    checkpoint is not logged again: the first value of each step stands, as in W&B, which drops
    a step below the run's current one. It is that of the same training from the same checkpoint
    (bitwise on the CPU; the throughputs and peak memory excepted), and each metric's history has one value per step.
    """

    def __init__(
        self, section: Mlflow, *, output: Path, name: str, run_name: str, params: dict[str, Any], run_id: str | None
    ) -> None:
        # start-up: MLflow (seconds) only on rank 0, and only where the recipe asks for it
        from mlflow import MlflowClient

        # MLflow's INFO lines (creating the database tables of a new store) are not the run's news.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.client = MlflowClient(section.tracking_uri or default_tracking_uri(output))
        self.logged_until: dict[str, int] = {}  # per metric, the last step its history holds
        self.finished = False
        if run_id is None:
            experiment = self._experiment(section.experiment or name, None if section.tracking_uri else output)
            self.id = self.client.create_run(experiment, run_name=run_name).info.run_id
            self._log_params(params)
            return
        self.id = run_id
        self.client.update_run(run_id, status="RUNNING")
        logged = self.client.get_run(run_id).data
        for key in logged.metrics:
            self.logged_until[key] = max(m.step for m in self.client.get_metric_history(run_id, key))
        # Params cannot change in MLflow: a resumed run keeps the values it started with (the
        # trainer warns of the differences; the recipe.yaml artifact at the end has the new ones).
        self._log_params({k: v for k, v in params.items() if k not in logged.params})

    def _experiment(self, name: str, output: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # start-up: MLflow's exception, where MLflow is loaded already
        from mlflow.exceptions import MlflowException

        # Where the store is the default one, the artifacts go beside it (not to ./mlruns of wherever launch ran).
        location = (output / "mlartifacts").resolve().as_uri() if output is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another run of a sweep created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, params: dict[str, Any]) -> None:
        # start-up: MLflow's entities, where MLflow is loaded already
        from mlflow.entities import Param

        items = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in params.items()]
        for first in range(0, len(items), PARAMS_PER_CALL):
            self.client.log_batch(self.id, params=items[first : first + PARAMS_PER_CALL])

    def run_id(self) -> str | None:
        return self.id

    def scalars(self, values: dict[str, float], step: int) -> None:
        # start-up: MLflow's entities, where MLflow is loaded already
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items() if step > self.logged_until.get(k, -1)]
        if metrics:
            self.client.log_batch(self.id, metrics=metrics)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
        for path in files:
            if path.exists():
                self.client.log_artifact(self.id, str(path))
        self.client.set_terminated(self.id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        if not self.finished:
            self.client.set_terminated(self.id, "KILLED")  # stopped or failed: a resumed run reopens it
