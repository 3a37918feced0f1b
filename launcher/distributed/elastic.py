"""Many workers on one machine or several: torch.distributed's elastic agent (the engine behind
torchrun) starts them, watches them, tears the group down when one fails, and restarts it when
`--max-restarts` allows. This module builds its configuration and explains its failures.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from launcher.distributed import early_start
from launcher.errors import RunFailed, UserError


@dataclass(frozen=True)
class Placement:
    """Where the workers go: torchrun's vocabulary."""

    nproc_per_node: int
    device_type: str  # "cuda" or "cpu"
    nnodes: str = "1"  # N or MIN:MAX
    rdzv_endpoint: str | None = None  # host:port; None: a free loopback port on this machine
    rdzv_id: str | None = None
    max_restarts: int = 0

    @property
    def node_range(self) -> tuple[int, int]:
        low, _, high = self.nnodes.partition(":")
        return int(low), int(high or low)

    @property
    def single_process(self) -> bool:
        return self.nproc_per_node == 1 and self.node_range == (1, 1)

    @property
    def multi_node(self) -> bool:
        return self.node_range[1] > 1


def place(
    gpus: int | None, nproc: int | None, cpu: bool, *, nnodes: str = "1", rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None, max_restarts: int = 0,
) -> Placement:  # fmt: skip
    """Decide the placement from the flags; fail before anything starts if it cannot be done here."""
    try:
        low, _, high = nnodes.partition(":")
        if int(low) < 1 or int(high or low) < int(low):
            raise ValueError
    except ValueError:
        raise UserError(f"--nnodes {nnodes}: give a number of nodes N, or MIN:MAX") from None
    multi_node = int(high or low) > 1
    if multi_node and not (rdzv_endpoint and rdzv_id):
        raise UserError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT (the same on every node) and --rdzv-id")
    if gpus is not None and (nproc is not None or cpu):
        raise UserError("--gpus puts one worker on each GPU; --nproc and --cpu are for CPU workers: choose one")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus is not None:
        if gpus < 1:
            raise UserError(f"--gpus {gpus}: give at least 1")
        if available == 0:
            raise UserError(
                f"--gpus {gpus}: this machine has no CUDA GPU (torch {torch.__version__}); use --nproc N for CPU workers"
            )
        if gpus > available:
            raise UserError(
                f"--gpus {gpus}: this machine has {available} visible GPU(s) ({_gpu_names()}); use --gpus {available} or fewer"
            )
        count, device_type = gpus, "cuda"
    elif nproc is not None:
        if nproc < 1:
            raise UserError(f"--nproc {nproc}: give at least 1")
        count, device_type = nproc, "cpu"
    elif available and not cpu:
        count, device_type = available, "cuda"
    else:
        count, device_type = 1, "cpu"
    return Placement(count, device_type, nnodes, rdzv_endpoint, rdzv_id, max_restarts)


def _gpu_names() -> str:
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def launch_config(placement: Placement, run_id: str, join_timeout_s: float, store_file: str | None = None) -> Any:
    """The agent's configuration. One node: the rendezvous is a FileStore at `store_file`, so that
    nothing listens on the network (the workers' own store listens on loopback only, see
    distributed.init_process_group). Several nodes: the TCP store at the endpoint, by torchrun's rules."""

    low, high = placement.node_range
    return LaunchConfig(
        min_nodes=low,
        max_nodes=high,
        nproc_per_node=placement.nproc_per_node,
        run_id=run_id,
        rdzv_backend="c10d",
        # place() refuses several nodes without an endpoint; one node meets at the store file.
        rdzv_endpoint=(placement.rdzv_endpoint if placement.multi_node else store_file) or "",
        rdzv_configs={"join_timeout": int(join_timeout_s)} if placement.multi_node else {"store_type": "file"},
        max_restarts=placement.max_restarts,
        monitor_interval=0.1,  # torchrun's: a dead worker, or the last one done, noticed within 0.1 s
        start_method=early_start.start_method(),  # forked from a process that has imported torch, or spawned
        local_addr="127.0.0.1" if not placement.multi_node else None,
    )


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run_workers(
    placement: Placement, run_id: str, join_timeout_s: float, entrypoint: Any, *args: Any
) -> dict[int, Any]:
    """Start the workers through the elastic agent; return each rank's result, or raise WorkersFailed.

    `join_timeout_s`: how long the nodes of a multi-node run wait for each other to join.
    """

    quiet_agent_logs()
    # Workers get a store of their own for each attempt. Seen with torch 2.15: on the agent's
    # shared store, a group restarted by --max-restarts failed to connect (gloo: connection
    # refused), apparently meeting the failed attempt's addresses.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    store_file = None
    if not placement.multi_node:
        descriptor, store_file = tempfile.mkstemp(prefix="launcher-rendezvous-")  # this user's only
        os.close(descriptor)
    try:
        return elastic_launch(launch_config(placement, run_id, join_timeout_s, store_file), entrypoint)(*args)
    except ChildFailedError as error:
        failures = with_siblings(error.failures)
        raise user_error_of(failures) or WorkersFailed(failures) from None
    except RendezvousTimeoutError:
        low, high = placement.node_range
        raise RunFailed(
            f"the rendezvous at {placement.rdzv_endpoint} (run id {run_id}) did not gather {low} node(s) within "
            f"{join_timeout_s:.0f} s (distributed.timeout_s); start `launch` on the missing nodes with the same "
            "--rdzv-endpoint, --rdzv-id and --nnodes"
        ) from None
    finally:
        if store_file is not None:
            Path(store_file).unlink(missing_ok=True)


class WorkersFailed(RunFailed):
    """A worker failed: the first failure's rank, host and traceback, not a bare ChildFailedError."""

    def __init__(self, failures: dict[int, ProcessFailure]) -> None:
        rank, failure = first_cause(failures)
        self.rank, self.exitcode = rank, failure.exitcode
        others = sorted(r for r in failures if r != rank)
        also = f" (also failed: rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))})" if others else ""
        super().__init__(f"rank {rank} failed on host {socket.gethostname()}{also}:\n{describe_failure(failure)}")


# The key of a worker's error file (TORCHELASTIC_ERROR_FILE, the file torch's `record` writes a
# traceback to) under which `report_user_error` puts a UserError's message and exit code.
USER_ERROR_KEY = "launcher_user_error"


def report_user_error(error: UserError) -> NoReturn:
    """In a worker: hand a UserError to `launch` as it is (message and exit code, no traceback),
    through the error file the elastic agent reads, and exit with the error's code."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        report = {
            "message": {
                "message": f"{type(error).__name__}: {error}",
                "extraInfo": {
                    "py_callstack": "",
                    "timestamp": str(int(time.time())),
                    USER_ERROR_KEY: {"message": str(error), "exit_code": error.exit_code},
                },
            }
        }
        Path(error_file).write_text(json.dumps(report))
    raise SystemExit(error.exit_code)


def user_error_of(failures: dict[int, ProcessFailure]) -> UserError | None:
    """Where the failure that started it is a UserError (a recipe problem found while building,
    say), that error as one process would have raised it: the message once where every rank that
    raised one says the same, each rank's where they differ. None for a crash."""
    reported = {rank: _user_error_in(failure) for rank, failure in failures.items()}
    first, _ = first_cause(failures)
    if reported[first] is None:
        return None
    errors = {rank: found for rank, found in sorted(reported.items()) if found is not None}
    messages = {found["message"] for found in errors.values()}
    if len(messages) == 1:
        text = messages.pop()
    else:
        text = "the ranks found different problems:\n" + "\n".join(
            f"  rank {rank}: {found['message']}" for rank, found in errors.items()
        )
    return RunFailed(text) if errors[first]["exit_code"] == RunFailed.exit_code else UserError(text)


def _user_error_in(failure: ProcessFailure) -> dict[str, Any] | None:
    message = failure.message
    if isinstance(message, dict):
        found = message.get("extraInfo", {}).get(USER_ERROR_KEY)
        return found if isinstance(found, dict) else None
    return None


# When one rank dies, its peers fail in their next collective; those are echoes, not the cause.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted", "Broken pipe")


def with_siblings(failures: dict[int, ProcessFailure]) -> dict[int, ProcessFailure]:
    """The failures the agent saw, plus those its workers on this node recorded too late for it.

    The agent reports the first worker to exit; the rank that raised first may still have been
    shutting down, but its error file (`<attempt>/<local_rank>/error.json`) is already written.
    """
    found = dict(failures)
    rank, known = next(iter(failures.items()))
    attempt = Path(known.error_file).parent.parent
    if known.error_file and attempt.is_dir():
        for error_file in attempt.glob("*/error.json"):
            local_rank = int(error_file.parent.name)
            other = rank - known.local_rank + local_rank
            if other not in found:
                found[other] = ProcessFailure(local_rank=local_rank, pid=-1, exitcode=1, error_file=str(error_file))
    return found


def first_cause(failures: dict[int, ProcessFailure]) -> tuple[int, ProcessFailure]:
    """The failure that started it: not a peer's echo, and the earliest written."""

    def order(item: tuple[int, ProcessFailure]) -> tuple[bool, float, int]:
        rank, failure = item
        echo = any(phrase in str(failure.message) for phrase in PEER_GONE)
        written = (
            Path(failure.error_file).stat().st_mtime if Path(failure.error_file).is_file() else float(failure.timestamp)
        )
        return echo, written, rank

    return min(failures.items(), key=order)


def describe_failure(failure: ProcessFailure) -> str:
    """The worker's traceback where it left one; else how it ended (a signal, an exit code)."""
    message = failure.message
    if isinstance(message, dict):
        trace = message.get("extraInfo", {}).get("py_callstack")
        return _without_agent_frames(trace) if trace else json.dumps(message)
    if failure.exitcode < 0:
        return f"killed by {failure.signal_name()} (pid {failure.pid}); no traceback"
    if failure.error_file_data:
        return str(message)
    return f"exited with code {failure.exitcode} (pid {failure.pid}) without a Python traceback"


def _without_agent_frames(trace: str) -> str:
    """Drop the agent's own wrapper frames: the user's code is what the traceback is about."""
    kept: list[str] = []
    in_agent_frame = False
    for line in trace.rstrip().splitlines():
        if line.startswith("  File "):
            in_agent_frame = "torch/distributed/elastic/" in line
        elif not line.startswith("    "):
            in_agent_frame = False
        if not in_agent_frame:
            kept.append(line)
    return "\n".join(kept)


def quiet_agent_logs() -> None:
    """The agent logs each failure at length; `launch` says it once, with the rank and host."""
    for name in ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
