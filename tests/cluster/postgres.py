"""The bed's database machine: its own PostgreSQL 15, and optionally a PgBouncer, in "db".

PostgreSQL is Debian's ``/usr/lib/postgresql/15/bin``, initialised in the bed's state
directory, listening on the db machine's address only (port 5432 of that namespace, so it never
meets the machine's own PostgreSQL), trusting the bed's subnet, with ``fsync=off`` (a test
database need not survive a power cut). Its server-side session settings are left at their
defaults, as a user's server would have them: how fast a vanished client is noticed is for hpo
to set on its own sessions, not for the bed to hide.

PgBouncer (Debian's, 1.18) listens on port 6432 of the same address in transaction pooling
mode and reaches PostgreSQL through its Unix socket. It refuses to run as root, so it runs as
``postgres``, as PostgreSQL does. Both are stopped by the PID they wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psycopg

from tests.cluster import net

PGBIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
BOUNCER_PORT = 6432
USER = "postgres"


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *argv]


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def stop_pid(pid: int | None, sig: signal.Signals, timeout: float = 20.0) -> None:
    """Send ``sig`` to ``pid`` and wait for it to exit; SIGKILL it if it will not."""
    if pid is None or not _exists(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _exists(pid):
        net.kill_pids([pid])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Postgres:
    """PostgreSQL in the db machine, its files under ``state/``."""

    def __init__(self, state: Path) -> None:
        self.data = state / "pgdata"
        self.socket_dir = state / "pgsock"
        self.log_dir = state / "pglog"  # PostgreSQL's user writes it
        self.log = self.log_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID, while it runs."""
        pid = _pid_from(self.data / "postmaster.pid")
        return pid if pid is not None and _exists(pid) else None

    def start(self) -> None:
        for path in (self.data, self.socket_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, USER, USER)
        if not (self.data / "PG_VERSION").exists():
            net.run(_as_postgres([str(PGBIN / "initdb"), "-D", str(self.data), "-U", USER,
                                  "--auth=trust", "-E", "UTF8", "--no-sync"]))  # fmt: skip
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {net.SUBNET}.0/24 trust\n")
        options = (
            f"-c listen_addresses={net.DB.addr} -p {PG_PORT} -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        net.run(net.in_netns(net.DB, _as_postgres(
            [str(PGBIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
             "-o", options, "start"])))  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, no waiting for clients)."""
        stop_pid(self.pid, signal.SIGINT)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{net.DB.addr}:{PG_PORT}/{database}"


class PgBouncer:
    """PgBouncer in the db machine, transaction pooling, in front of :class:`Postgres`."""

    def __init__(self, state: Path, postgres: Postgres) -> None:
        self.dir = state / "pgbouncer"
        self.postgres = postgres

    @property
    def pid(self) -> int | None:
        pid = _pid_from(self.dir / "pgbouncer.pid")
        return pid if pid is not None and _exists(pid) else None

    def start(self, pool_size: int = 20) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir, USER, USER)
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            # Any database name, through PostgreSQL's socket (in this namespace's filesystem).
            f"* = host={self.postgres.socket_dir} port={PG_PORT} user={USER}\n"
            "[pgbouncer]\n"
            f"listen_addr = {net.DB.addr}\n"
            f"listen_port = {BOUNCER_PORT}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 1000\n"
            f"admin_users = {USER}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        (self.dir / "userlist.txt").write_text(f'"{USER}" ""\n')
        net.run(net.in_netns(net.DB, _as_postgres(["pgbouncer", "-d", str(ini)])))
        deadline = time.monotonic() + 10
        while True:
            try:
                connect("pgbouncer", BOUNCER_PORT).close()  # its admin console answers
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGINT: PgBouncer's "safe shutdown" (waits for transactions in flight)."""
        stop_pid(self.pid, signal.SIGINT, timeout=5)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{net.DB.addr}:{BOUNCER_PORT}/{database}"


def connect(dbname: str = "postgres", port: int = PG_PORT) -> psycopg.Connection:
    """An autocommit connection from the root namespace (over the bridge) to the db machine."""
    return psycopg.connect(
        host=net.DB.addr,
        port=port,
        user=USER,
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
        prepare_threshold=None,  # also good for PgBouncer's admin console
    )
