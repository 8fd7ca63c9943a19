"""docker-compose.yml for real: dockerd started by the test, images built here, 4 workers.

dockerd (Debian's docker.io) runs with its own data and exec roots, overlay2, no bridge and no
iptables, so containers have the host's network only. Images come from a debootstrapped base
(tests/docker_images.py; no registry is reachable here), cached under $HPO_TEST_CACHE.

docker-compose.yml itself is what runs, merged (``docker-compose config``) with
tests/docker/compose.host-network.yml, which moves every service onto the host's network (no
service-name DNS there: hpo reaches PostgreSQL on 127.0.0.1), less the ``ports:`` entries:
docker refuses published ports on the host network, and an override cannot remove them in
compose 1.29. PostgreSQL is tests/docker/postgres (POSTGRES_IMAGE), a stand-in for postgres:15.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo.coord.recovery import FAILURE_ATTR
from tests.conftest import REPO
from tests.docker_images import CACHE, POSTGRES_IMAGE, Docker, build_images
from tests.processes import alive, free_port, port_free, require, stop_pid, wait_for

pytestmark = pytest.mark.slow

GIVEN_BACK = "interrupted by SIGTERM; queued again"
OVERRIDE = REPO / "tests" / "docker" / "compose.host-network.yml"


def _log(message: str) -> None:
    print(f"[test_docker] {message}", flush=True)


@contextlib.contextmanager
def _dockerd() -> Iterator[Docker]:
    """dockerd with the cached data root and a fresh exec root; stopped by PID (with the
    containerd it starts) and its mounts undone, whatever happens."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # One dockerd per data root: a second test run waits here for the first.
    lock = open(CACHE / "docker.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    run = Path(tempfile.mkdtemp(prefix="hpo-dockerd-"))  # short: it holds unix sockets
    data_root = CACHE / "docker"
    argv = [
        "dockerd", "--storage-driver=overlay2", "--iptables=false", "--ip6tables=false",
        "--bridge=none", f"--data-root={data_root}", f"--exec-root={run}/exec",
        f"--pidfile={run}/dockerd.pid", "-H", f"unix://{run}/docker.sock",
    ]  # fmt: skip
    log = open(run / "dockerd.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    docker = Docker(f"unix://{run}/docker.sock")
    try:
        ready = lambda: docker.run("info", check=False, timeout=10).returncode == 0  # noqa: E731
        wait_for(ready, 60, "dockerd to answer")
        # Whatever a crashed earlier run left in the cached data root (never images).
        docker.run("container", "prune", "-f")
        docker.run("volume", "prune", "-f")
        yield docker
    finally:
        with contextlib.suppress(Exception):
            ids = docker.run("ps", "-aq", check=False).stdout.split()
            if ids:
                docker.run("rm", "-f", *ids, check=False, timeout=120)
        containerd = run / "exec" / "containerd" / "containerd.pid"
        containerd_pid = int(containerd.read_text()) if containerd.is_file() else None
        stop_pid(proc.pid, timeout=30, proc=proc)
        # dockerd stops the containerd it started; if dockerd had to be killed, do it here,
        # and any shim of ours (their command lines name our exec root).
        ours = [containerd_pid] if containerd_pid else []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if str(run) in (entry / "cmdline").read_text():
                        ours.append(int(entry.name))
        for pid in ours:
            stop_pid(pid, timeout=10)
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            point = mount.split()[1]
            if point.startswith((str(run), str(data_root))):
                subprocess.run(["umount", "-l", point], capture_output=True)
        leftover = [pid for pid in [proc.pid, *ours] if alive(pid)]
        shutil.rmtree(run, ignore_errors=True)
        lock.close()
        assert not leftover, f"processes of dockerd outlived the test: {leftover}"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    require("dockerd", "containerd", "docker-compose", "debootstrap")
    started = time.monotonic()
    with _dockerd() as docker:
        build_images(docker, _log)
        _log(f"dockerd up and images built in {time.monotonic() - started:.0f} s")
        yield docker


class Compose:
    """One compose project: docker-compose.yml with the host-network override."""

    def __init__(self, docker: Docker, workdir: Path) -> None:
        self.docker, self.workdir = docker, workdir
        self.project = f"hpotest{uuid.uuid4().hex[:8]}"
        self.password = f"pw-{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.url = f"postgresql+psycopg://hpo:{self.password}@127.0.0.1:{self.port}/hpo"

    def configure(self, study: str) -> Path:
        """The merged compose file for ``study`` (HPO_STUDY), ``ports:`` dropped."""
        env = self.workdir / ".env"
        env.write_text(
            f"POSTGRES_PASSWORD={self.password}\nPOSTGRES_PORT={self.port}\n"
            f"POSTGRES_IMAGE={POSTGRES_IMAGE}\nHPO_STUDY={study}\nHPO_THREADS=1\n"
        )
        clean = {
            k: v for k, v in self.docker.env.items() if not k.startswith(("POSTGRES_", "HPO_"))
        }
        out = subprocess.run(
            ["docker-compose", "--env-file", str(env), "-f", "docker-compose.yml", "-f",
             str(OVERRIDE), "config"],
            cwd=REPO, capture_output=True, text=True, env=clean, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        config = yaml.safe_load(out.stdout)
        for name in [n for n, s in config["services"].items() if s.get("profiles")]:
            del config["services"][name]  # not started here (the override's profile)
        for service in config["services"].values():
            assert service["network_mode"] == "host"
            service.pop("ports", None)
        path = self.workdir / "compose.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def __call__(self, *args: str, timeout: float = 300, check: bool = True):
        out = subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(self.workdir / "compose.yml"), *args],
            capture_output=True, text=True, env=self.docker.env, timeout=timeout,
        )  # fmt: skip
        if check:
            assert out.returncode == 0, f"docker-compose {' '.join(args)}: {out.stderr[-3000:]}"
        return out

    def up(self, study: str, workers: int) -> None:
        self.configure(study)
        self("up", "-d", "--no-build", "--scale", f"worker={workers}")

    def states(self, service: str) -> list[tuple[str, int]]:
        """(status, exit code) of each of the service's containers."""
        ids = self("ps", "-q", service).stdout.split()
        if not ids:
            return []
        out = self.docker.run("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", *ids)
        return [(s, int(c)) for s, c in (line.split() for line in out.stdout.splitlines())]

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service, check=False).stdout

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.url)


@pytest.fixture
def compose(docker, tmp_path) -> Iterator[Compose]:
    if not port_free(8080):
        pytest.fail("127.0.0.1:8080 is taken: the compose dashboard needs it")
    project = Compose(docker, tmp_path)
    try:
        yield project
    finally:
        if (tmp_path / "compose.yml").is_file():
            project("down", "-v", "--timeout", "5", check=False)


def _exited(compose: Compose, service: str, count: int) -> bool:
    states = compose.states(service)
    return len(states) == count and all(s == "exited" for s, _ in states)


def test_compose_runs_grid_smoke_with_4_workers_and_keeps_it_across_down(compose):
    started = time.monotonic()
    compose.up("studies/grid_smoke.toml", workers=4)
    wait_for(lambda: _exited(compose, "worker", 4), 300, "the 4 workers to finish", every=1)
    _log(f"compose up, 36 trials by 4 workers: {time.monotonic() - started:.0f} s")
    assert compose.states("create") == [("exited", 0)]
    assert compose.states("worker") == [("exited", 0)] * 4, compose.logs("worker")[-3000:]
    trials = compose.study("grid_smoke").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 36
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 36
    logs = compose.logs("worker")
    started_trials = sorted(int(n) for n in re.findall(r"trial #(\d+) started", logs))
    assert started_trials == list(range(36))  # each point trained once, in all
    assert len({line.split("|")[0] for line in logs.splitlines() if " started" in line}) >= 2

    # The dashboard, on the same database.
    with urllib.request.urlopen("http://127.0.0.1:8080/api/studies", timeout=30) as response:
        studies = json.load(response)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["grid_smoke"]

    # down keeps the volume; up again finds the study and trains nothing more.
    compose("down", "--timeout", "5")
    volumes = compose.docker.run("volume", "ls", "-q").stdout.split()
    assert f"{compose.project}_pgdata" in volumes
    compose.up("studies/grid_smoke.toml", workers=4)
    wait_for(lambda: _exited(compose, "worker", 4), 120, "the workers to find it done", every=1)
    assert compose.states("create") == [("exited", 0)], compose.logs("create")
    assert compose.states("worker") == [("exited", 0)] * 4
    status = compose("run", "--rm", "create", "status", "studies/grid_smoke.toml").stdout
    assert "[36/36] complete 36" in status, status
    assert len(compose.study("grid_smoke").get_trials()) == 36


def test_compose_stop_worker_gives_running_trials_back(compose):
    # quickstart: trials of many seconds on the full data, so both are caught training.
    compose.up("studies/quickstart.toml", workers=2)
    study = compose.study("quickstart")

    def training() -> list:
        running = study.get_trials(states=(TrialState.RUNNING,))
        return running if sum(bool(t.intermediate_values) for t in running) == 2 else []

    running = wait_for(training, 300, "both workers to be mid-trial", every=0.5)
    compose("stop", "worker")  # SIGTERM, then SIGKILL after stop_grace_period (30 s)
    logs = compose.logs("worker")
    assert compose.states("worker") == [("exited", 0)] * 2, logs[-3000:]
    assert logs.count("1 given back") == 2, logs[-3000:]
    trials = {t.number: t for t in study.get_trials()}
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    for trial in running:
        back = trials[trial.number]
        assert back.state == TrialState.FAIL and back.user_attrs[FAILURE_ATTR] == GIVEN_BACK
