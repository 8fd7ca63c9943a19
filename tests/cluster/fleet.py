"""Real ``hpo`` processes on the bed's hosts: the study, its workers, their logs and exits.

A worker is ``hpo worker STUDY --storage URL`` started inside a host's namespace with
``ip netns exec`` and ``unshare --uts`` (so that the host has its own name, ``h1``..``h3``:
hpo's ``worker`` attribute and ``application_name`` then say ``h1:<pid>``). Both exec, so the
PID the bed holds is the worker's own. The workers run this checkout's hpo (``PYTHONPATH``),
with one torch thread each.

The study is a 6 x 6 grid of two hidden widths (as ``studies/grid_smoke.toml``) on a slice of
Fashion-MNIST small enough that a trial takes about a second on a loaded 2-core machine, with
retries enough that no point is ever given up.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tests.cluster import net
from tests.cluster.bed import Bed

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = 2.0  # seconds; hpo takes a trial for dead after 4 silent beats
GRACE = 4 * HEARTBEAT

GRID_STUDY = """\
# The bed's study: a {n1} x {n2} grid of two hidden widths, short trials.
[study]
name = "{name}"
metric = "val_accuracy"

[budget]
max_retries = 20

[sampler]
name = "grid"

[pruner]
name = "none"

[data]
validation_size = 500
train_size = {train_size}

[space]
depth = 2
units_1 = {units_1}
units_2 = {units_2}
epochs = {epochs}
batch_size = 100
lr = 1e-3
optimizer = "adam"
"""
WIDTHS = (16, 32, 48, 64, 96, 128)


def write_grid_study(
    directory: Path,
    name: str = "bed",
    units_1: Sequence[int] = WIDTHS,
    units_2: Sequence[int] = WIDTHS,
    epochs: int = 2,
    train_size: int = 2000,
) -> Path:
    """A grid study file in ``directory``; its size is ``len(units_1) * len(units_2)``."""
    path = directory / f"{name}.toml"
    path.write_text(
        GRID_STUDY.format(
            name=name,
            n1=len(units_1),
            n2=len(units_2),
            units_1=list(units_1),
            units_2=list(units_2),
            epochs=epochs,
            train_size=train_size,
        )
    )
    return path


def hpo_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def hpo_env() -> dict[str, str]:
    """This checkout's hpo, whatever the virtualenv has installed; logs as they happen."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Worker:
    """One ``hpo worker`` process on a host."""

    host: str
    proc: subprocess.Popen
    log: Path
    killed: bool = False  # by the test (its host was powered off): no exit code expected

    @property
    def name(self) -> str:
        """As hpo records it in a trial's ``worker`` attribute."""
        return f"{self.host}:{self.proc.pid}"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """The study and the workers on the bed's hosts; :meth:`kill_all` in a finalizer."""

    bed: Bed
    url: str  # what the workers use (PostgreSQL directly or through PgBouncer)
    read_url: str  # PostgreSQL directly, for the test's own reads
    study_file: Path
    data_dir: Path
    logs: Path
    workers: list[Worker] = field(default_factory=list)
    _storage: optuna.storages.RDBStorage | None = field(default=None, repr=False)

    @property
    def study_name(self) -> str:
        return re.search(r'^name = "(.+)"', self.study_file.read_text(), re.M).group(1)

    def create(self, heartbeat: float = HEARTBEAT, n_trials: int | None = None) -> None:
        """``hpo create`` from the root namespace (an operator's machine)."""
        args = [
            "create",
            str(self.study_file),
            "--storage",
            self.url,
            "--heartbeat",
            f"{heartbeat:g}",
        ]
        if n_trials is not None:
            args += ["--n-trials", str(n_trials)]
        out = subprocess.run(
            hpo_argv(*args), capture_output=True, text=True, env=hpo_env(), timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"hpo create failed ({out.returncode}): {out.stdout}{out.stderr}")

    def start(self, hosts: Iterable[str] = ("h1", "h2", "h3"), per_host: int = 2) -> None:
        for host in hosts:
            for _ in range(per_host):
                self.start_one(host)

    def start_one(self, host: str) -> Worker:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{host}-w{len(self.workers)}.log"
        argv = hpo_argv(
            "worker", str(self.study_file), "--storage", self.url,
            "--data-dir", str(self.data_dir), "--threads", "1",
        )  # fmt: skip
        in_host = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                net.in_netns(net.machine(host), in_host),
                stdout=out, stderr=subprocess.STDOUT, env=hpo_env(), cwd=REPO,
            )  # fmt: skip
        worker = Worker(host, proc, log)
        self.workers.append(worker)
        return worker

    def on(self, host: str) -> list[Worker]:
        return [w for w in self.workers if w.host == host]

    def by_name(self, name: str) -> Worker | None:
        return next((w for w in self.workers if w.name == name), None)

    def power_off(self, host: str) -> None:
        """The host dies (see :func:`tests.cluster.net.power_off`); its workers are killed."""
        self.bed.power_off(host)
        for w in self.on(host):
            w.killed = w.killed or w.proc.poll() is None or w.proc.returncode == -signal.SIGKILL
            w.proc.poll()

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def wait(self, timeout: float) -> bool:
        """Wait for every worker to exit; False if some still run after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def exit_codes(self) -> dict[str, int | str | None]:
        """Each worker's exit code, or "killed by the test"."""
        return {w.name: "killed by the test" if w.killed else w.proc.poll() for w in self.workers}

    def kill_all(self) -> None:
        """SIGKILL every worker still running (a failed test must leave nothing behind)."""
        net.kill_pids([w.proc.pid for w in self.alive()])
        for w in self.workers:
            w.proc.poll()

    def text(self, host: str | None = None) -> str:
        return "".join(
            f"--- {w.log.name} ({w.name})\n{w.text()}"
            for w in self.workers
            if host is None or w.host == host
        )

    def study(self) -> optuna.Study:
        """The study as Optuna reads it, straight from PostgreSQL (a pool of two: Optuna's
        set-up holds two connections at once)."""
        if self._storage is None:
            self._storage = optuna.storages.RDBStorage(
                self.read_url,
                engine_kwargs={"pool_size": 2, "max_overflow": 0},
                skip_table_creation=True,
            )
        return optuna.load_study(study_name=self.study_name, storage=self._storage)

    def close(self) -> None:
        if self._storage is not None:
            self._storage.engine.dispose()
            self._storage = None
