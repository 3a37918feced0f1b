"""The end of a run: resuming a run that is already complete, and a signal that comes after the
last step. Neither is a failure or a stop; both say that the run completed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, final_checkpoint, launch, run_dirs, session_members, start_launch

from launcher.tracking.run_logger import RunLogger

pytestmark = pytest.mark.slow

DIGITS = ROOT / "recipes" / "digits.yaml"


def test_resuming_a_complete_run_says_so_and_starts_no_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = (DIGITS, "train.epochs=1", f"run.output={tmp_path}")
    assert launch(*common, "--cpu") == 0
    (run,) = run_dirs(tmp_path, "digits")
    capsys.readouterr()
    assert launch(*common, "--nproc", "2", "--resume") == 0
    err = capsys.readouterr().err
    assert f"{run} is complete: epoch 1, step 22 of train.epochs=1" in err
    assert "nothing to do. To train it longer:" in err and "--resume" in err and "train.epochs=11" in err
    assert "val/acc1" in err  # the final metrics, from metrics.json
    assert "worker" not in err and "error" not in err
    assert not list(run.glob("log.rank*.txt"))  # no worker started
    # Where train.max_steps ended it, the hint raises train.max_steps.
    assert launch(*common[:1], "train.max_steps=10", common[2], "--cpu", "--resume", run) == 0
    assert "train.max_steps=44" in capsys.readouterr().err  # twice the 22 steps done
    # Asked for more, the same run goes on.
    assert launch(*common[:1], "train.epochs=2", common[2], "--cpu", "--resume") == 0
    assert final_checkpoint(run)["progress"]["epoch"] == 2


def test_a_signal_after_the_last_step_of_one_process_says_the_run_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    finish = RunLogger.finish

    def signalled_in_teardown(self, *args, **kwargs):  # after metrics.json, before the run returns
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, caught by the run's own handler
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(RunLogger, "finish", signalled_in_teardown)
    assert launch(DIGITS, "--cpu", "train.epochs=1", f"run.output={tmp_path}") == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM came after the run had completed: nothing is left to do" in err
    assert "--resume" not in err and "stopped" not in err
    (run,) = run_dirs(tmp_path, "digits")
    assert json.loads((run / "metrics.json").read_text())["final"]["epoch"] == 1


def test_a_signal_after_the_last_step_of_two_workers_says_the_run_completed(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copy(FIXTURES / "slow_teardown.py", hook / "sitecustomize.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    process = start_launch(DIGITS, "--nproc", "2", "train.epochs=1", "run.output=out", cwd=tmp_path, env=env)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "out" / "digits").glob("*/metrics.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM came after the run had completed" in output and "nothing is left to do" in output
    assert "go on with launch --resume" not in output
    deadline = time.monotonic() + 15  # the agent stops the workers, asleep in their slowed teardown
    while session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_members(process.pid) == []
