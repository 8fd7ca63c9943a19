"""The images tests/test_docker.py runs, built on a machine that reaches no image registry.

- The base: ``debootstrap --variant=minbase bookworm`` with python3 and python3-venv (Debian's
  packages are reachable), imported with ``docker import`` as ``hpo-test/bookworm-python3``.
- hpo: the project's own Dockerfile, built with ``--build-arg BASE=`` that image, pip pointed
  (``TORCH_INDEX_URL``, ``PIP_INDEX_URL``) at a wheelhouse served on 127.0.0.1 during the build:
  a CPU build of torch from pip's local wheels (a container cannot use this machine's pip
  setup, and PyPI's torch is the 5.5 GB CUDA build) and everything else ``pip download``-ed.
- PostgreSQL: tests/docker/postgres, Debian's postgresql-15 with the public image's contract.

Everything slow is cached under ``$HPO_TEST_CACHE`` (default /var/cache/hpo-test, outside the
checkout): the rootfs tarball, the wheelhouse and dockerd's data root, whose build cache keeps
every layer but those after ``COPY hpo`` when only hpo's code changed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import tomllib

from tests.conftest import REPO
from tests.processes import free_port, port_free, stop_pid, wait_for

CACHE = Path(os.environ.get("HPO_TEST_CACHE", "/var/cache/hpo-test"))
BASE_IMAGE = "hpo-test/bookworm-python3"
HPO_IMAGE = "hpo:local"  # what docker-compose.yml names it
POSTGRES_IMAGE = "hpo-test/postgres:15"
WHEELHOUSE_PORT = 38471


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the one registry a build may reach)."""
    for source in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if source.is_file():
            found = re.search(r"(?:^URIs:|^deb)\s+(http\S+)", source.read_text(), re.M)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def base_tarball(log: Callable[[str], None]) -> Path:
    """A bookworm minbase rootfs with python3 and python3-venv, as a tar (about 2 min cold)."""
    tarball = CACHE / "bookworm-python3.tar"
    if tarball.is_file():
        return tarball
    rootfs = CACHE / "rootfs.tmp"
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"debootstrap bookworm into {rootfs} (cached afterwards as {tarball})")
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm",
         str(rootfs), debian_mirror()],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(rootfs)
    return tarball


def local_cpu_torch() -> Path:
    """A CPU build of torch for CPython 3.11 (Debian bookworm's) among pip's local wheels."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    dirs = [*re.findall(r"find-links='([^']*)'", config), os.environ.get("PIP_FIND_LINKS", "")]
    for entry in dirs:
        for folder in entry.split():
            wheels = sorted(Path(folder.removeprefix("file://")).glob("torch-*+cpu-cp311-*.whl"))
            if wheels:
                return wheels[-1]
    raise AssertionError(
        "no CPU build of torch for Python 3.11 among pip's find-links (PyPI's torch is the "
        "5.5 GB CUDA build): put a torch-*+cpu-cp311-*.whl there"
    )


def wheelhouse(log: Callable[[str], None]) -> Path:
    """A PEP 503 'simple' index (a folder per project) of every wheel the image installs."""
    torch = local_cpu_torch()
    version = torch.name.split("-")[1]  # 2.13.0+cpu
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = [f"torch=={version}", *(d for d in deps if not d.startswith("torch>"))]
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    index = CACHE / f"pypi-{key}"
    if (index / "simple").is_dir():
        return index
    log(f"pip download into {index}: {' '.join(wanted)}")
    wheels = CACHE / f"wheels-{key}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
         "--python-version", "3.11", "-d", str(wheels), *wanted],
        check=True, capture_output=True, timeout=1200,
    )  # fmt: skip
    partial = index.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for wheel in wheels.glob("*.whl"):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        (partial / "simple" / project).mkdir(parents=True, exist_ok=True)
        wheel.rename(partial / "simple" / project / wheel.name)
    partial.rename(index)
    shutil.rmtree(wheels)
    return index


class Docker:
    """The docker CLI against the dockerd the test started."""

    def __init__(self, host: str) -> None:
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}
        self.cli = "/usr/bin/docker"  # Debian's client, the daemon's own version

    def run(self, *argv: str, timeout: float = 120, check: bool = True, **kwargs):
        out = subprocess.run(
            [self.cli, *argv], capture_output=True, text=True, env=self.env, timeout=timeout,
            **kwargs,
        )  # fmt: skip
        if check:
            assert out.returncode == 0, f"docker {' '.join(argv)}: {out.stderr[-3000:]}"
        return out

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def build(self, context: Path, tag: str, *args: str, dockerfile: Path | None = None) -> None:
        """Build with the host's network (the only one): RUN steps reach Debian's mirror and
        the wheelhouse on 127.0.0.1."""
        extra = ["-f", str(dockerfile)] if dockerfile else []
        self.run("build", "--network", "host", "-t", tag, *extra, *args, str(context),
                 timeout=1800)  # fmt: skip


def build_images(docker: Docker, log: Callable[[str], None]) -> None:
    """The base, hpo and PostgreSQL images, each reusing what the cache holds."""
    if not docker.has_image(BASE_IMAGE):
        with base_tarball(log).open("rb") as tar:
            docker.run("import", "-", BASE_IMAGE, stdin=tar, timeout=600)
    index = wheelhouse(log)
    # The index's URL is a build argument, part of the build cache's key: keep it the same
    # from run to run, unless something else holds the port.
    port = WHEELHOUSE_PORT if port_free(WHEELHOUSE_PORT) else free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(index)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/simple"
        wait_for(lambda: _answers(url + "/torch/"), 10, "the wheelhouse's HTTP server")
        docker.build(
            REPO, HPO_IMAGE, "--build-arg", f"BASE={BASE_IMAGE}",
            "--build-arg", f"TORCH_INDEX_URL={url}", "--build-arg", f"PIP_INDEX_URL={url}",
        )  # fmt: skip
    finally:
        stop_pid(server.pid, timeout=5, proc=server)
    postgres = REPO / "tests" / "docker" / "postgres"
    docker.build(postgres, POSTGRES_IMAGE, "--build-arg", f"BASE={BASE_IMAGE}")
    # Earlier builds' images, now untagged, would fill the cache run after run.
    docker.run("image", "prune", "-f", timeout=600)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
