"""Bad and hostile input: refused before anything runs, with what was wrong and where; a single-node
run listens on loopback only."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import (
    RECIPES,
    launch,
    run_launch,
    session_members,
    start_launch,
    wait_for_file_text,
)


def test_a_recipe_with_a_python_tag_is_refused_with_its_line_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f'model: {{name: mlp}}\ndata: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert launch("check", recipe) == 2
    assert "line 2: the tag python/object/apply:os.system is refused" in capsys.readouterr().err
    assert not marker.exists()


def test_components_that_point_into_system_modules_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("data: {dataset: {name: 'os:system', command: 'true'}}\nmodel: {name: 'subprocess:Popen', args: ['true']}\n"
                      "loss: {name: 'builtins:eval', source: '1'}\n")  # fmt: skip
    assert launch("check", recipe) == 2
    err = capsys.readouterr().err
    for path, reference in (
        ("data.dataset.name", "os:system"),
        ("model.name", "subprocess:Popen"),
        ("loss.name", "builtins:eval"),
    ):
        assert f"{path}: '{reference}' points into {reference.split(':')[0]}, which holds no" in err


def test_three_kinds_of_problem_are_reported_together_and_no_worker_starts(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        "data: {dataset: {name: csv, path: missing.csv}}\nmodel: {name: mlp}\ntrain: {epochs: many, batchsize: 8}\n"
    )
    result = run_launch(recipe, "--nproc", "2", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "3 problems in the recipe; nothing was run" in result.stderr
    assert f"data.dataset.path: no such file or folder: {tmp_path / 'missing.csv'}" in result.stderr
    assert (
        "train.epochs:" in result.stderr
        and "train.batchsize: unknown key (did you mean 'batch_size'?)" in result.stderr
    )
    assert "worker" not in result.stderr and not (tmp_path / "runs").exists()


def listening_addresses(pids: list[int]) -> set[str]:
    """The addresses the processes `pids` listen on (TCP, from /proc), as 'ip:port'."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                ip = (
                    ".".join(str(b) for b in raw[::-1])
                    if width == 8
                    else ":".join(raw[i : i + 4][::-1].hex() for i in range(0, 16, 4))
                )
                found.add(f"{ip}:{int(port, 16)}")
    return found


@pytest.mark.faults
@pytest.mark.slow
def test_a_single_node_run_listens_on_loopback_only(tmp_path: Path) -> None:
    process = start_launch(
        RECIPES / "digits.yaml", "--nproc", "2", "train.epochs=100", f"run.output={tmp_path}", cwd=tmp_path
    )
    wait_for_file_text("digits/*/log.rank1.txt", "epoch 1/100", tmp_path)
    addresses = listening_addresses(session_members(process.pid))
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert addresses  # the workers' store and gloo's own listeners
    assert all(a.startswith("127.") for a in addresses), addresses
