"""Streams (iterable datasets): shared out over ranks and loader workers, each sample once per
epoch; ranks whose streams hold different numbers of batches stop together; a mid-epoch resume
is bitwise, and where it cannot be exact (a stream with no position, another world size) the run
says so.

The streams and the model are the user's own (tests/fixtures/streams.py): each sample carries
its id and epoch, and the model writes down those of every sample it is fed, by rank, so the
tests read what training and evaluation saw.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FIXTURES, assert_same_weights, final_checkpoint, final_weights, launch, run_dirs, run_launch

from launcher.cli.recipe_checks import problems_in
from launcher.config.loading import load_recipe
from launcher.config.schema import Data
from launcher.data.build import PositionedTransformedStream, TransformedStream
from launcher.data.loaders import StreamBatches
from launcher.distributed.runtime import single_process
from launcher.errors import UserError
from launcher.training.setup import setup

RECIPE = """\
data: {dataset: {name: "streams:Numbers", n: 64}, num_workers: 2}
model: {name: "streams:Recorder", folder: seen}
optimizer: {name: SGD, lr: 0.1}
scheduler: null
train: {max_steps: 24, batch_size: 4, drop_last: false}
checkpoint: {best: null}
"""
NO_POSITION = "has no state_dict/load_state_dict"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the user's streams and a recipe (stream.yaml) that trains on them."""
    shutil.copy(FIXTURES / "streams.py", tmp_path / "streams.py")
    (tmp_path / "stream.yaml").write_text(RECIPE)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `launch` does for the recipe's folder
    return tmp_path


def seen(folder: Path, split: str = "train") -> dict[int, list[tuple[int, int]]]:
    """The (id, epoch) of every sample the model was fed, by rank, in order."""
    return {
        int(path.suffixes[0][1:]): [tuple(map(int, line.split())) for line in path.read_text().splitlines()]
        for path in sorted(folder.glob(f"{split}.*.txt"))
    }


def by_epoch(records: list[tuple[int, int]]) -> dict[int, list[int]]:
    epochs: dict[int, list[int]] = collections.defaultdict(list)
    for sample, epoch in records:
        epochs[epoch].append(sample)
    return dict(epochs)


def train_args(project: Path, *overrides: str, output: str = "runs", folder: str = "seen") -> list[str | Path]:
    return [project / "stream.yaml", f"run.output={project / output}", f"model.folder={project / folder}", *overrides]


# --- the loader, in this process: ranks simulated by RANK and WORLD_SIZE, 2 real loader workers ---


def batches_of(dataset: Any, stop_after: int | None = None, state: dict | None = None, done: int = 0) -> tuple:
    """This rank's input batches (all, or the first `stop_after`), and the position after them."""
    stream = StreamBatches(
        dataset,
        Data.model_validate({"dataset": {"name": "x"}, "num_workers": 2}),
        batch_size=4,
        drop_last=False,
        seed=0,
        rank=0,
        pin=False,
    )
    stream.start_epoch(0)
    if state is not None:
        assert stream.resume(state, done, same_world_size=True) is None
    inputs: list[torch.Tensor] = []
    for batch in stream:
        inputs.append(batch[0])
        if len(inputs) == stop_after:
            break
    return inputs, stream.state_dict()


def with_noise(x: torch.Tensor) -> torch.Tensor:
    """A random augmentation of the features (the id and epoch are left as they are)."""
    return torch.cat([x[:2], x[2:] + torch.rand(len(x) - 2)])


@pytest.mark.parametrize("kind", ["positioned", "plain", "transformed"])
def test_readers_share_a_stream_out_once_and_a_resumed_loader_goes_on_where_it_was(
    kind: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams  # the user's module, from the project folder

    def stream() -> Any:
        if kind == "plain":
            return streams.PlainNumbers(50)
        if kind == "transformed":
            return PositionedTransformedStream(streams.Numbers(50), with_noise)
        return streams.Numbers(50)

    everything = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        whole, _ = batches_of(stream())
        head, position = batches_of(stream(), stop_after=3)  # 2 batches from worker 0, 1 from worker 1
        rest, _ = batches_of(stream(), state=position, done=3)
        assert len(head + rest) == len(whole) and all(map(torch.equal, head + rest, whole)), rank
        everything += [int(i) for batch in whole for i in batch[:, 0]]
    # 50 items over 2 ranks x 2 workers: 13, 13, 12 and 12 each.
    assert sorted(everything) == list(range(50))


def test_a_transformed_stream_keeps_its_streams_lack_of_a_position(project: Path) -> None:
    import streams

    assert not hasattr(TransformedStream(streams.PlainNumbers(8), with_noise), "state_dict")
    assert hasattr(PositionedTransformedStream(streams.Numbers(8), with_noise), "state_dict")


# --- recipe errors, before training ---


def built(project: Path, *overrides: str) -> Any:
    recipe = load_recipe(project / "stream.yaml", list(overrides), check=problems_in)
    return setup(recipe, single_process(True))


def test_a_stream_with_no_length_needs_max_steps(project: Path) -> None:
    with pytest.raises(UserError, match=r"streams:Numbers is a stream with no length .* set train.max_steps"):
        built(project, "train.max_steps=null", "train.epochs=2")
    s = built(project, "train.max_steps=null", "train.epochs=2", "data.dataset.length=32")
    assert (s.batches_per_epoch, s.steps_per_epoch, s.planned_epochs, s.planned_steps) == (None, 8, 2, 16)


def test_a_stream_with_no_validation_split_is_refused(project: Path) -> None:
    with pytest.raises(UserError, match="no fraction can be held out"):
        built(project, "data.dataset={name: 'streams:one_stream'}")


def test_a_per_epoch_schedule_that_needs_a_length_needs_train_epochs(project: Path) -> None:
    with pytest.raises(UserError, match="CosineAnnealingLR per epoch needs its length"):
        built(project, "scheduler={name: CosineAnnealingLR}")
    built(project, "scheduler={name: CosineAnnealingLR, interval: step}")  # its length: max_steps


# --- real runs: 2 gloo ranks x 2 loader workers, or one process ---


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 samples on 2 ranks x 2 loader workers, batch 4: 8 steps an epoch, 3 epochs (24 steps)."""
    folder = tmp_path_factory.mktemp("two_by_two")
    shutil.copy(FIXTURES / "streams.py", folder / "streams.py")
    (folder / "stream.yaml").write_text(RECIPE)
    result = run_launch(*train_args(folder), "--nproc", "2", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.mark.slow
def test_every_sample_once_per_epoch_on_two_ranks_with_two_loader_workers_each(two_by_two: Path) -> None:
    trained = seen(two_by_two / "seen")
    assert sorted(trained) == [0, 1]
    for rank, records in trained.items():
        assert [len(ids) for ids in by_epoch(records).values()] == [32, 32, 32], rank
    for epoch in range(3):
        ids = [i for records in trained.values() for i in by_epoch(records)[epoch]]
        assert sorted(ids) == list(range(64)), epoch
    # Validation: each evaluation (after epochs 1, 2 and at the end) sees each of the 16 samples
    # once, on one rank or the other.
    evaluated = seen(two_by_two / "seen", "val")
    assert not set(i for i, _ in evaluated[0]) & set(i for i, _ in evaluated[1])
    assert collections.Counter(i for records in evaluated.values() for i, _ in records) == {
        100_000 + i: 3 for i in range(16)
    }


@pytest.mark.slow
def test_a_mid_epoch_resume_on_two_ranks_is_bitwise(two_by_two: Path) -> None:
    folder = two_by_two
    common = ("checkpoint.every_n_steps=100",)  # the checkpoint is the stopped run's last
    args = train_args(folder, *common, output="pieces", folder="pieces-seen")
    result = run_launch(*args, "train.max_steps=13", "--nproc", "2", cwd=folder)  # 5 steps into epoch 2
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(folder / "pieces", "stream")
    assert final_checkpoint(run)["progress"]["batches_done"] == 5
    result = run_launch(*args, "--nproc", "2", "--resume", run, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert NO_POSITION not in (run / "log.rank0.txt").read_text()
    (straight,) = run_dirs(folder / "runs", "stream")
    assert final_checkpoint(run)["progress"] == final_checkpoint(straight)["progress"]
    assert_same_weights(final_weights(run), final_weights(straight))
    # Each rank was fed the same samples in the same order, across the stop.
    assert seen(folder / "pieces-seen") == seen(folder / "seen")


@pytest.mark.slow
def test_ranks_with_unequal_batch_counts_stop_together(project: Path) -> None:
    # 50 samples over 2 ranks x 2 workers: 13, 13 | 12, 12 items, so 4 + 4 = 8 batches of 4 on
    # rank 0 and 3 + 3 = 6 on rank 1: every epoch ends for both after 6. With 4 batches an
    # optimizer step, the last 2 of each epoch are a window the stream's end cuts short: dropped.
    overrides = ("data.dataset.n=50", "train.epochs=2", "train.max_steps=100", "train.grad_accum_steps=4")
    result = run_launch(*train_args(project, *overrides), "--nproc", "2", cwd=project, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = run_dirs(project / "runs", "stream")
    progress = final_checkpoint(run)["progress"]
    assert (progress["epoch"], progress["step"]) == (2, 2)
    for rank, records in seen(project / "seen").items():
        epochs = by_epoch(records)
        assert [len(ids) for ids in epochs.values()] == [24, 24], rank  # 6 batches of 4
        assert len(set(epochs[0])) == 24 and epochs[1] == epochs[0], rank  # each epoch starts afresh


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["streams:Numbers", "streams:PlainNumbers"])
def test_a_mid_epoch_resume_in_one_process_is_bitwise_and_a_stream_with_no_position_says_so(
    dataset: str, project: Path
) -> None:
    common = (f"data.dataset.name={dataset}", "train.max_steps=40")  # 16 steps an epoch
    assert launch(*train_args(project, *common, output="straight", folder="straight-seen"), "--cpu") == 0
    args = train_args(project, *common, output="pieces", folder="pieces-seen")
    assert launch(*args, "train.max_steps=21", "--cpu") == 0  # 5 steps into epoch 2: 3 batches from worker 0, 2 from 1
    (run,) = run_dirs(project / "pieces", "stream")
    assert launch(*args, "--cpu", "--resume", run) == 0
    log = (run / "log.txt").read_text()
    if dataset == "streams:PlainNumbers":
        assert f"resuming mid-epoch on PlainNumbers, which {NO_POSITION}: the loader re-reads and discards the 5" in log
    else:
        assert NO_POSITION not in log
    (straight,) = run_dirs(project / "straight", "stream")
    assert_same_weights(final_weights(run), final_weights(straight))
    assert seen(project / "pieces-seen") == seen(project / "straight-seen")


@pytest.mark.slow
def test_resuming_a_stream_on_another_world_size_starts_the_epoch_again(project: Path) -> None:
    args = train_args(project, "train.max_steps=6")  # one process: 16 steps an epoch
    assert launch(*args, "--cpu") == 0
    (run,) = run_dirs(project / "runs", "stream")
    result = run_launch(*args, "train.max_steps=10", "--nproc", "2", "--resume", run, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "log.rank0.txt").read_text()
    assert "the checkpoint is from another number of ranks" in log
    assert "Epoch 1 starts again from its beginning: the 6 batch(es) per rank it had trained on" in log
    # The resumed run's first batch on rank 0 is its reader 0's (of 4) first: 0, 4, 8, 12.
    resumed = seen(project / "seen")[0][6 * 4 :]
    assert [i for i, _ in resumed[:4]] == [0, 4, 8, 12]
