"""Shared fixtures: tiny synthetic data, the real Fashion-MNIST, study files in tmp dirs, and
the storage every storage-backed test runs on: SQLite, PostgreSQL, and PostgreSQL through
PgBouncer in transaction pooling (``backend``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fashion-mnist"

# Fuzzing profiles (tests/test_front_door.py). "ci", the default: a few thousand inputs over
# all fuzz tests in about a minute, no example database (CI starts clean; a failure prints its
# input, which then becomes a regression test). "long": for a run by hand,
# `pytest tests/test_front_door.py --hypothesis-profile=long --hypothesis-show-statistics`,
# five times the examples, remembering failures in .hypothesis/ to replay them first next time.
# No deadline: on a loaded 2-core machine timing is noise; tests guard against hangs themselves.
settings.register_profile("ci", max_examples=400, deadline=None, database=None)
settings.register_profile("long", max_examples=2_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """The real Fashion-MNIST (torchvision layout), found where hpo finds it.

    In order: ``$HPO_TEST_DATA``; the project's shared copy beside the checkout
    (``../shared/data/fashion-mnist``); then hpo's own search (``$HPO_DATA_DIR`` or ``./data``,
    Debian's ``/usr/share/datasets/fashion-mnist``, torchvision's download). In CI it must
    exist: fail, never skip.
    """
    from hpo.errors import DataNotFoundError
    from hpo.train.data import locate

    raw = Path("FashionMNIST") / "raw" / "train-images-idx3-ubyte"
    for candidate in (os.environ.get("HPO_TEST_DATA"), SHARED_DATA):
        if candidate and (Path(candidate) / raw).is_file():
            return Path(candidate)
    try:
        return locate(REPO / "data" if not os.environ.get("HPO_DATA_DIR") else None)
    except DataNotFoundError as err:
        message = f"Fashion-MNIST not found (set HPO_TEST_DATA): {err}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_data():
    """600 separable 784-d points in 10 classes: enough for a trainer to learn in 3 epochs."""
    import torch

    from hpo.train.data import Dataset, Split

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 784, generator=g) * 0.5

    def make(n: int) -> Split:
        y = torch.randint(0, 10, (n,), generator=g)
        return Split(centers[y] + torch.randn(n, 784, generator=g), y)

    return Dataset(train=make(400), val=make(100), test=make(100))


@pytest.fixture
def write_study(tmp_path: Path):
    """write_study(toml_text, name="s.toml") -> path of a study file in tmp_path."""

    def write(text: str, name: str = "s.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


SMALL_STUDY = """
[study]
name = "{name}"
metric = "val_accuracy"

[budget]
n_trials = {n_trials}

[sampler]
name = "{sampler}"
seed = 1

[pruner]
name = "none"

[data]
validation_size = 1000
train_size = 2000

[space]
depth = 1
units = {units}
lr = {{ low = 1e-3, high = 1e-2, log = true }}
epochs = 2
batch_size = 128
"""


def small_study(
    name: str = "small", n_trials: int = 4, sampler: str = "random", units: str = "[16, 32]"
) -> str:
    """A study file that trains in about a second per trial on a real-data slice."""
    text = SMALL_STUDY.format(name=name, n_trials=n_trials, sampler=sampler, units=units)
    if sampler == "grid":
        text = text.replace("lr = { low = 1e-3, high = 1e-2, log = true }", "lr = [1e-3, 1e-2]")
        text = text.replace(f"n_trials = {n_trials}\n", "")
        text = text.replace("[budget]\n", "")
    return text


PG_SERVER = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_PREFIX = os.environ.get("HPO_TEST_DB_PREFIX", "hpo_test_")


def pg_admin():
    """An autocommit psycopg connection to the test server's ``postgres`` database."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_SERVER)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname="postgres",
        autocommit=True,
    )


@contextlib.contextmanager
def new_database() -> Iterator[str]:
    """A new database on the test server (its name), dropped afterwards."""
    name = f"{PG_PREFIX}{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url():
    """A new PostgreSQL database for this test, dropped afterwards. Never skipped: the
    coordination tests are the point of PostgreSQL support (set HPO_TEST_POSTGRES)."""
    with new_database() as name:
        yield f"{PG_SERVER}/{name}"


PGBOUNCER_INI = """\
[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
; every client is served as the server's user above: tests may give any user and password
auth_type = any
pool_mode = transaction
default_pool_size = {pool}
max_client_conn = 1000
server_idle_timeout = 30
; a client gone quiet inside a transaction loses it (and its locks) after this long
idle_transaction_timeout = 10
tcp_keepalive = 1
tcp_keepidle = 4
tcp_keepintvl = 2
tcp_keepcnt = 3
tcp_user_timeout = 10000
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""
PGBOUNCER_POOL = 20  # server connections per database


@dataclass(frozen=True)
class PgBouncer:
    """A PgBouncer in front of the test server: ``url`` is its address as a storage URL base
    (``…@127.0.0.1:PORT``), ``pid`` its process, ``log`` its log file."""

    url: str
    pid: int
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """Debian's PgBouncer in transaction pooling mode, in front of the test PostgreSQL, on a
    free port, for the whole session; stopped by its PID at the end, whatever happened.

    It refuses to run as root, so as root it runs as ``postgres``. Missing, it fails the run in
    CI and skips elsewhere (``scripts/ensure-test-tools.sh`` installs it).
    """
    from sqlalchemy.engine import make_url

    exe = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if exe is None:
        message = "pgbouncer is not installed: apt-get install pgbouncer"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = make_url(PG_SERVER)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-pgbouncer-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(workdir, "postgres", "postgres")
    port = _free_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        PGBOUNCER_INI.format(
            host=server.host or "127.0.0.1",
            port=server.port or 5432,
            user=server.username or "postgres",
            listen=port,
            pool=PGBOUNCER_POOL,
            dir=workdir,
        )
    )
    user = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_postgres else {}
    # Its log goes to the file; in the foreground it would also write it to stderr.
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen([exe, str(ini)], **quiet, **user)
    log = workdir / "pgbouncer.log"
    try:
        _wait_until_serving(port, proc, log)
        yield PgBouncer(f"postgresql+psycopg://postgres@127.0.0.1:{port}", proc.pid, log)
    finally:
        proc.terminate()  # SIGTERM: PgBouncer closes every connection and exits at once
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_serving(port: int, proc: subprocess.Popen, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                prepare_threshold=None, connect_timeout=2,
            ) as conn:  # fmt: skip
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else "(no log)"
                message = f"pgbouncer did not start (exit {proc.poll()}):\n{text}"
                raise RuntimeError(message) from None
            time.sleep(0.1)


@dataclass(frozen=True)
class Backend:
    """A storage for one test: ``url`` is what hpo is given; ``direct`` is the same database
    without a pooler in between, for the test's own reads and checks."""

    name: str  # "sqlite", "postgres" or "pgbouncer"
    url: str
    direct: str

    @property
    def database(self) -> str | None:
        """The PostgreSQL database's name (None on SQLite)."""
        return None if self.name == "sqlite" else self.url.rsplit("/", 1)[1]


BACKENDS = ("sqlite", "postgres", "pgbouncer")


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Iterator[Backend]:
    """The storage every storage-backed test runs on, once per backend: a SQLite file, a new
    PostgreSQL database, and a new database reached through PgBouncer (transaction pooling).
    PostgreSQL and PgBouncer are never skipped in CI (see ``pg_url`` and ``pgbouncer``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/study.db"
        yield Backend("sqlite", url, url)
        return
    front = request.getfixturevalue("pgbouncer").url if request.param == "pgbouncer" else None
    with new_database() as name:
        direct = f"{PG_SERVER}/{name}"
        yield Backend(request.param, f"{front}/{name}" if front else direct, direct)


@pytest.fixture(scope="session")
def compose_config() -> dict:
    """docker-compose.yml as ``docker-compose config`` validates and resolves it (with the
    variables of .env.example). Never skipped: CI installs Debian's docker-compose."""
    import shutil
    import subprocess

    import yaml

    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HPO_"))}
    out = subprocess.run(
        [exe, "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="session")
def compose_commands(compose_config) -> dict[str, list[str]]:
    """The argv of each compose service that runs hpo, with the image's ``hpo`` replaced by
    this checkout's (``python -m hpo``) and every argument exactly as the service has it."""
    import sys

    commands = {}
    for name, service in compose_config["services"].items():
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        if argv[:1] == ["hpo"]:
            commands[name] = [sys.executable, "-m", "hpo", *argv[1:]]
    return commands
