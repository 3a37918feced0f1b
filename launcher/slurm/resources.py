"""The `slurm:` section resolved (command-line flags win) and checked against what `sinfo` says the partition has, before anything waits in the queue."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from launcher.config.durations import slurm_duration_s, time_limit_minutes
from launcher.config.loading import problems_from
from launcher.config.problems import RecipeError, did_you_mean
from launcher.config.schema import Recipe, Slurm
from launcher.errors import UserError
from launcher.slurm.commands import slurm_command


def with_flags(recipe: Recipe, flags: dict[str, Any]) -> Recipe:
    """The recipe with the command line's SLURM flags (those given) over its `slurm:` section."""
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return recipe
    try:
        return Recipe.model_validate({**recipe.to_dict(), "slurm": {**recipe.slurm.model_dump(), **given}})
    except ValidationError as error:
        raise RecipeError("the command line", problems_from(error)) from None


def device_type(slurm: Slurm) -> str:
    return "cuda" if slurm.gpus else "cpu"


def tasks_per_node(slurm: Slurm) -> int:
    return slurm.gpus or slurm.nproc or 1


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


def check_resources(slurm: Slurm) -> None:
    """Fail before the queue where the request cannot fit the partition; name the values that disagree."""
    problems = []
    if slurm.gpus and slurm.nproc:
        problems.append(
            f"slurm.gpus={slurm.gpus} and slurm.nproc={slurm.nproc}: one task per GPU, or nproc CPU tasks; choose one"
        )
    partitions, default = _partitions()
    name = slurm.partition or default
    if name is None:
        problems.append("no slurm.partition given and the cluster has no default partition: set --partition")
    elif name not in partitions:
        problems.append(
            f"slurm.partition={name}: no such partition; {did_you_mean(name, partitions) or 'there are: ' + ', '.join(partitions)}"
        )
    if problems or name is None:
        raise UserError("cannot submit:\n  " + "\n  ".join(problems))
    nodes, max_time = partitions[name]
    tasks, cpus_per_task = tasks_per_node(slurm), slurm.cpus_per_task or 1
    needed = {
        "cpus": tasks * cpus_per_task,
        "gpus": slurm.gpus or 0,
        "memory_mb": _memory_mb(slurm.mem) if slurm.mem else 0,
    }
    if len(nodes) < slurm.nodes:
        problems.append(
            f"slurm.nodes={slurm.nodes}, but partition '{name}' has {len(nodes)} node(s): {', '.join(n.name for n in nodes)}"
        )
    for what, amount in needed.items():
        most = max(getattr(n, what) for n in nodes)
        if amount > most:
            problems.append(
                f"{_asked(what, slurm, tasks, cpus_per_task)}, but the nodes of '{name}' have at most {_amount(what, most)}"
            )
    fitting = [n for n in nodes if all(getattr(n, what) >= amount for what, amount in needed.items())]
    if not problems and len(fitting) < slurm.nodes:
        problems.append(
            f"slurm.nodes={slurm.nodes}, but only {len(fitting)} node(s) of '{name}' have what each node needs: {needed}"
        )
    if max_time is not None and time_limit_minutes(slurm.time) * 60 > max_time:
        problems.append(f"slurm.time={slurm.time} is above partition '{name}''s limit of {max_time // 60} minutes")
    if problems:
        raise UserError("cannot submit: the resources asked for don't fit the cluster:\n  " + "\n  ".join(problems))


def _asked(what: str, slurm: Slurm, tasks: int, cpus_per_task: int) -> str:
    if what == "cpus":
        return f"{tasks} task(s) per node (slurm.{'gpus' if slurm.gpus else 'nproc'}) x {cpus_per_task} CPU(s) per task (slurm.cpus_per_task) = {tasks * cpus_per_task} CPUs per node"
    if what == "gpus":
        return f"slurm.gpus={slurm.gpus} per node"
    return f"slurm.mem={slurm.mem} per node"


def _amount(what: str, value: int) -> str:
    return {"cpus": f"{value} CPUs", "gpus": f"{value} GPU(s)", "memory_mb": f"{value} MB"}[what]


def _partitions() -> tuple[dict[str, tuple[list[Node], int | None]], str | None]:
    """Each partition's nodes and time limit (seconds; None: unlimited), and the default partition."""
    out = slurm_command(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%l|%P"])
    partitions: dict[str, tuple[list[Node], int | None]] = {}
    default = None
    for line in out.splitlines():
        node, cpus, memory, gres, limit, partition = line.split("|")
        if partition.endswith("*"):
            partition = default = partition[:-1]
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        seconds = None if limit in ("infinite", "n/a") else slurm_duration_s(limit)
        nodes, _ = partitions.setdefault(partition, ([], seconds))
        nodes.append(Node(node, int(cpus.rstrip("+")), int(memory.rstrip("+")), gpus))
    return partitions, default


def _memory_mb(text: str) -> float:
    """Megabytes in a SLURM memory size; a fraction for sizes in K."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    if not match:
        raise UserError(f"slurm.mem={text}: give a size such as 64G or 4000M")
    return int(match.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[match.group(2)]
