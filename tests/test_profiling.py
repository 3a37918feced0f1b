"""What a run records about itself beside its metrics: a torch.profiler window on rank 0 (a
trace Perfetto opens), the gradient norm and peak memory in the train logs, and NCCL's flight
recorder switched on for GPU runs, a failed run's message pointing at its dumps."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RECIPES, SMALL_LM, run_dirs, run_launch, scalars

from launcher.distributed import flight_recorder

STEPS = ("distributed.fsdp.shard=[TransformerBlock]", "train.max_steps=4", "checkpoint.every_n_steps=4")


def _run(tmp_path: Path, name: str, recipe: Path, *overrides: str) -> Path:
    output = tmp_path / name
    result = run_launch(recipe, "--nproc", "2", f"run.output={output}", *overrides, cwd=tmp_path, timeout=None)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(output, recipe.stem)
    return run


@pytest.mark.slow
def test_a_profile_window_writes_one_trace_on_rank_0_with_the_steps_asked_for(tmp_path: Path) -> None:
    window = "logging.profile={wait: 1, warmup: 1, active: 3}"
    run = _run(tmp_path, "profiled", RECIPES / "digits.yaml", "train.epochs=1", "train.max_steps=8", window)
    (trace,) = (run / "profile").glob("*.pt.trace.json")  # rank 0's only
    assert trace.name.startswith("rank0.")
    events = json.loads(trace.read_text())["traceEvents"]  # Chrome's trace format: what Perfetto opens
    steps = sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")})
    assert steps == ["ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"]  # after 1 waited and 1 warmed up
    assert any(e.get("name") == "aten::convolution" for e in events)
    log = (run / "log.rank0.txt").read_text()
    assert f"profile of this process's steps 3-5 written to {run / 'profile'}" in log
    assert "gpuGetDeviceCount" not in log


@pytest.mark.slow
def test_the_gradient_norm_is_logged_before_clipping_and_fsdp_measures_ddps(tmp_path: Path) -> None:
    lm = RECIPES / "tiny_lm.yaml"
    ddp = scalars(_run(tmp_path, "ddp", lm, *SMALL_LM, *STEPS))
    fsdp = scalars(_run(tmp_path, "fsdp", lm, *SMALL_LM, *STEPS, "distributed.strategy=fsdp", "train.grad_clip=0.01"))
    assert [s for s, _ in ddp["train/grad_norm"]] == [s for s, _ in fsdp["train/grad_norm"]] == [1, 2, 3, 4]
    # Step 1: the same weights and batch, so the same norm: FSDP's is all-reduced over its shards,
    # and the one logged is measured before clipping.
    (_, whole), (_, sharded) = ddp["train/grad_norm"][0], fsdp["train/grad_norm"][0]
    assert sharded == pytest.approx(whole, rel=1e-5)
    assert all(norm > 0.1 for _, norm in fsdp["train/grad_norm"])  # the norms before clipping to 0.01
    assert all(value > 0 for _, value in ddp["train/peak_memory_mb"] + ddp["train/tokens_per_s"])


def test_gpu_runs_switch_the_flight_recorder_on_into_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in flight_recorder.environment(tmp_path):
        monkeypatch.delenv(name, raising=False)
    flight_recorder.switch_on(tmp_path, torch.device("cpu"))
    assert not any(name in os.environ for name in flight_recorder.environment(tmp_path))  # gloo: no dumps
    monkeypatch.setenv("TORCH_FR_BUFFER_SIZE", "50")  # the user's own setting is kept
    flight_recorder.switch_on(tmp_path, torch.device("cuda", 0))  # no GPU needed: the environment only
    assert os.environ["TORCH_FR_BUFFER_SIZE"] == "50"
    assert os.environ["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert os.environ["TORCH_FR_DUMP_TEMP_FILE"] == str(tmp_path / "flight_recorder" / "rank_")
    assert (tmp_path / "flight_recorder").is_dir()
    assert flight_recorder.pointer(tmp_path) is None  # nothing dumped: nothing to point at


RECORD = """
import sys, torch, torch.distributed as dist
rank, folder = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
tensor = torch.ones(3)
for _ in range(3):
    dist.all_reduce(tensor)
dump = torch._C._distributed_c10d._dump_fr_trace(includeCollectives=True, includeStackTraces=False, onlyActive=False)
open(f"{folder}/flight_recorder/rank_{rank}", "wb").write(dump)
dist.destroy_process_group()
"""


def test_a_failed_runs_pointer_names_the_dumps_and_torchs_reader_reads_them(tmp_path: Path) -> None:
    """Real recorder dumps (gloo records collectives too, though only NCCL dumps on a timeout, so
    each rank dumps its own here) in the folder the environment names: the pointer counts them,
    and torch's flight-recorder loader reads each rank's collectives."""
    (tmp_path / "flight_recorder").mkdir()
    environment = {**os.environ, "TORCH_FR_BUFFER_SIZE": "100"}
    ranks = [
        subprocess.Popen([sys.executable, "-c", RECORD, str(rank), str(tmp_path)], env=environment) for rank in range(2)
    ]
    assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]
    pointer = flight_recorder.pointer(tmp_path)
    assert pointer is not None
    assert f"dumped 2 rank(s)' last collectives into {tmp_path / 'flight_recorder'}" in pointer
    assert f"torchfrtrace {tmp_path / 'flight_recorder'} --prefix rank_" in pointer
    from torch.distributed.flight_recorder.components.loader import read_dump

    for rank in range(2):
        dump = read_dump("rank_", str(tmp_path / "flight_recorder" / f"rank_{rank}"))
        names = [entry["profiling_name"] for entry in dump["entries"]]
        assert names.count("gloo:all_reduce") == 3, names
    assert pickle.loads((tmp_path / "flight_recorder" / "rank_0").read_bytes())["version"]
