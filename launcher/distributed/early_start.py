"""Workers that start with torch and the launcher imported already.

A worker the elastic agent spawns starts a fresh interpreter and imports torch, the launcher and
torch._dynamo (which DDP and FSDP import): about 2.5 s on a CPU, after `launch` itself has spent
about as long importing torch and reading the recipe. Here `launch` starts a multiprocessing
forkserver first thing, which imports them while `launch` does its own start; the agent then
forks each worker from it (start method "forkserver"), ready to run the user's code. The server
is one process that has only imported modules: no threads, no CUDA, so forking it is safe, as it
is not from `launch` itself, whose agent runs threads.

Only `launch` run as a command starts it (main(), before it imports torch), and only for CPU
workers on this machine (--nproc): a GPU run keeps "spawn" (nothing that may have touched the
CUDA driver is ever forked), and `launch` called as a function in another program (the tests)
leaves that program's multiprocessing alone: a forkserver lives as long as its parent, with the
environment and open files of the moment it started.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os

from launcher.distributed import forkserver_preload

# What every CPU worker imports before the user's code: torch, the agent's wrapper around the
# entry point, the entry point (the launcher's training), and torch._dynamo (DDP's constructor
# imports it: about 1 s).
PRELOAD = (
    "launcher.distributed.forkserver_preload",  # first: the server's signals (see there)
    "torch",
    "torch._dynamo",
    "torch.distributed.elastic.multiprocessing.api",
    "launcher.distributed.worker",
)


class _Server:
    started = False  # by start_importing(), in this process


def start_importing() -> None:
    """Start the forkserver, importing PRELOAD beside this process's own start; the workers of
    this process's run are then forked from it (`start_method()`). Where the platform has no
    forkserver, nothing: they are spawned."""
    if _Server.started or "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    os.environ[forkserver_preload.SERVER_VARIABLE] = "1"  # for the server alone: it takes it out
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[forkserver_preload.SERVER_VARIABLE]
    _Server.started = True


def start_method() -> str:
    """How the elastic agent starts this process's workers: "forkserver" once start_importing()
    has run here, "spawn" otherwise."""
    return "forkserver" if _Server.started else "spawn"
