"""The ranks' agreement on stopping (training/stopping.py), on two real gloo processes: they
compare their flags about once a second of steps, and at once after an evaluation, where a
search's pruner raises rank 0's flag alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from launcher.training.stopping import PRUNED, StopRequests


def _prune_after_an_evaluation(rank: int, folder: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=2)
    try:
        stop = StopRequests(torch.device("cpu"))
        for _ in range(3):
            assert stop.agreed() == set()  # quick steps: the checks grow far apart
        if rank == 0:
            stop.reasons.add(PRUNED)  # the pruner, at an evaluation, on rank 0 alone
        periodic = [sorted(stop.agreed()) for _ in range(3)]  # the next steps, before the next periodic check
        stop.check_at_next_step()  # every rank, after the evaluation
        at_once = sorted(stop.agreed())
        (folder / f"rank{rank}.json").write_text(json.dumps({"periodic": periodic, "at_once": at_once}))
    finally:
        dist.destroy_process_group()


def test_a_flag_raised_at_an_evaluation_is_agreed_by_every_rank_at_the_next_step(tmp_path: Path) -> None:
    mp.spawn(_prune_after_an_evaluation, args=(tmp_path,), nprocs=2)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"periodic": [[], [], []], "at_once": ["pruned"]}
