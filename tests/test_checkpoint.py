"""Checkpoint files: atomic writes, what counts as a checkpoint, keep-last-K, safe loading, RNG state."""

from __future__ import annotations

import os
import pickle
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RECIPES, launch, run_dirs

from launcher import checkpoint
from launcher.checkpoint import files as checkpoint_files
from launcher.errors import UserError


def test_save_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = checkpoint.save({"w": torch.arange(5)}, checkpoint.step_path(tmp_path, 7))
    assert path.name == "step-00000007.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, "step-00000007.pt.sha256"]
    assert torch.equal(checkpoint.load(path)["w"], torch.arange(5))


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path: Path) -> None:
    path = checkpoint.save({"w": torch.ones(3)}, tmp_path / "best.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk trouble halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        checkpoint.save({"w": torch.zeros(3), "bad": Unpicklable()}, path)
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best.pt.sha256"]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_writer_saves_the_state_as_it_was_handed_over_and_prunes_beside_training(
    asynchronous: bool, tmp_path: Path
) -> None:
    writer = checkpoint.Writer(keep_last=2, asynchronous=asynchronous)
    weights = torch.zeros(1000)
    for step in range(1, 5):
        weights.fill_(step)
        writer.save({"w": weights, "step": step}, checkpoint.step_path(tmp_path, step))
        weights.fill_(-1)  # training goes on at once and changes the state in place
    writer.close()  # the last one complete
    assert [p.name for p in checkpoint.saved_steps(tmp_path)] == ["step-00000003.pt", "step-00000004.pt"]
    for step in (3, 4):
        assert torch.equal(checkpoint.load(checkpoint.step_path(tmp_path, step))["w"], torch.full((1000,), float(step)))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_step_checkpoint_of_the_best_step_is_a_second_name_for_best_pt(
    hard_links: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hard_links:  # a filesystem without them: the writer copies instead

        def no_links(*args: object) -> None:
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(checkpoint_files.os, "link", no_links)
    writer = checkpoint.Writer(keep_last=2)
    best, step = tmp_path / checkpoint.BEST, checkpoint.step_path(tmp_path, 10)
    writer.save({"w": torch.full((1000,), 10.0)}, best)
    writer.save_link(best, step)
    writer.wait()
    assert (step.stat().st_ino == best.stat().st_ino) == hard_links  # one file, two names; or a copy
    writer.save({"w": torch.full((1000,), 20.0)}, best)  # a later, better step replaces best.pt
    writer.close()
    assert torch.equal(checkpoint.load(step)["w"], torch.full((1000,), 10.0))  # its own checksum checked
    assert torch.equal(checkpoint.load(best)["w"], torch.full((1000,), 20.0))
    assert checkpoint.checksum_path(step).read_text().endswith("  step-00000010.pt\n")
    assert checkpoint.saved_steps(tmp_path) == [step]
    assert not list(tmp_path.glob(".*.tmp"))


def test_best_pt_saved_again_while_the_save_before_is_finishing_keeps_each_its_own_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two better evaluations in a row: the second best.pt is serialized while the first one's
    # flush, checksum and rename are still under way in the writer's thread (held here).
    go_on, hashing = threading.Event(), checkpoint_files._sha256

    def held(path: Path, fsync: bool = False) -> str:
        assert go_on.wait(timeout=60)
        return hashing(path, fsync)

    monkeypatch.setattr(checkpoint_files, "_sha256", held)
    writer = checkpoint.Writer(keep_last=2)
    best = tmp_path / checkpoint.BEST
    writer.save({"w": torch.full((1000,), 1.0)}, best)
    writer.save({"w": torch.full((1000,), 2.0)}, best)  # the first is still finishing
    go_on.set()
    writer.close()
    assert torch.equal(checkpoint.load(best)["w"], torch.full((1000,), 2.0))  # its checksum checked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best.pt.sha256"]


def test_the_writer_raises_a_failed_write_at_the_next_save_with_its_path(tmp_path: Path) -> None:
    writer = checkpoint.Writer(keep_last=2, asynchronous=True)
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    writer.save({"w": torch.ones(3)}, checkpoint.step_path(tmp_path / "checkpoints", 1))  # fails beside training
    with pytest.raises(UserError, match=f"cannot write the checkpoint {tmp_path / 'checkpoints' / 'step-00000001.pt'}"):
        writer.save({"w": torch.ones(3)}, checkpoint.step_path(tmp_path, 2))
    writer.close()


def test_only_complete_step_files_count(tmp_path: Path) -> None:
    for step in (30, 4, 100):
        checkpoint.save({"step": step}, checkpoint.step_path(tmp_path, step))
    (tmp_path / ".step-00000200.pt.123.tmp").write_bytes(b"half a checkpoint")  # a crash mid-write
    torch.save({"step": 300}, checkpoint.step_path(tmp_path, 300))  # a crash before its checksum
    (tmp_path / "best.pt").write_bytes(b"x")
    assert [p.name for p in checkpoint.saved_steps(tmp_path)] == [
        "step-00000004.pt",
        "step-00000030.pt",
        "step-00000100.pt",
    ]
    assert checkpoint.latest(tmp_path).name == "step-00000100.pt"
    assert checkpoint.latest(tmp_path / "absent") is None


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in range(1, 7):
        checkpoint.save({"step": step}, checkpoint.step_path(tmp_path, step))
    checkpoint.save({"best": True}, tmp_path / checkpoint.BEST)
    assert checkpoint.prune(tmp_path, keep_last=2) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt") == [
        "best.pt",
        "step-00000005.pt",
        "step-00000006.pt",
    ]
    assert len(list(tmp_path.glob("*.sha256"))) == 3


def test_prune_reports_what_it_could_not_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = checkpoint.step_path(tmp_path, 1)
    checkpoint.save({"step": 1}, stuck)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:  # a file the filesystem will not let go of
        if path == stuck:
            raise PermissionError(1, "Operation not permitted", str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    for step in range(2, 4):
        checkpoint.save({"step": step}, checkpoint.step_path(tmp_path, step))
    assert checkpoint.prune(tmp_path, keep_last=1) == [stuck]
    assert not checkpoint.step_path(tmp_path, 2).exists() and checkpoint.step_path(tmp_path, 3).exists()


def test_loading_refuses_code_and_the_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "step-00000001.pt"
    torch.save({"model": Payload()}, path)  # a real torch checkpoint, with a pickled payload inside
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
def test_a_damaged_checkpoint_is_refused_with_its_path(damage: str, tmp_path: Path) -> None:
    path = checkpoint.save({"w": torch.arange(1000)}, checkpoint.step_path(tmp_path, 3))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)
    with pytest.raises(
        checkpoint.DamagedCheckpoint, match=f"{path} is damaged: its bytes no longer match step-00000003.pt.sha256"
    ):
        checkpoint.load(path)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = checkpoint.save({"rng": checkpoint.rng_states()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.restore_rng_states(checkpoint.load(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


@pytest.mark.faults
@pytest.mark.slow
def test_keep_last_two_of_six_and_a_checkpoint_that_cannot_be_deleted_does_not_stop_training(tmp_path: Path) -> None:
    recipe = (
        RECIPES / "digits.yaml",
        "--cpu",
        "checkpoint.every_n_epochs=1",
        "checkpoint.keep_last=2",
        f"run.output={tmp_path}",
    )
    assert launch(*recipe, "train.epochs=1") == 0
    (run,) = run_dirs(tmp_path, "digits")
    stuck = checkpoint.step_path(run / "checkpoints", 1)
    stuck.mkdir()  # an old "checkpoint" that unlink cannot remove, even as root
    (stuck / "x").write_text("")
    checkpoint.checksum_path(stuck).write_text(f"0  {stuck.name}\n")
    torch.set_num_threads(2)
    assert launch(*recipe, "train.epochs=6", "--resume", run) == 0  # 5 more saves, each followed by pruning
    assert f"could not delete the old checkpoint {stuck}; training goes on" in (run / "log.txt").read_text()
    assert [p.name for p in checkpoint.saved_steps(run / "checkpoints")] == ["step-00000110.pt", "step-00000132.pt"]
    assert (run / "checkpoints" / "best.pt").exists() and stuck.is_dir()


def test_a_rank_handing_over_its_shard_digests_never_touches_the_folder_rank_0_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 publishes a sharded checkpoint (renames its folder) the moment the other ranks'
    digest files appear. A rank that fsynced the folder after that rename failed with 'No such
    file or directory' (seen once in CI); here rank 0 renames at that very moment."""
    from launcher.checkpoint import sharded

    path = tmp_path / "step-00000006.pt"
    partial = sharded.partial_path(path)
    partial.mkdir()
    (partial / "__1_0.distcp").write_bytes(b"rank 1's shard")
    real_replace = os.replace

    def replace_then_rank_0_publishes(source: str | Path, target: str | Path) -> None:
        real_replace(source, target)
        if Path(target).name == ".rank-1.sha256":
            Path(target).parent.rename(path)

    monkeypatch.setattr(os, "replace", replace_then_rank_0_publishes)
    writer = sharded.ShardedWriter(keep_last=2, asynchronous=False, rank=1, world_size=2, timeout_s=5)
    try:
        writer._finish(None, None, partial, path)
    finally:
        writer.close()
    handed_over = (path / ".rank-1.sha256").read_text()
    digest = checkpoint_files._sha256(path / "__1_0.distcp")
    assert handed_over == f"{digest}  step-00000006.pt/__1_0.distcp\n"
