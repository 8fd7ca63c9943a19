"""The whole bed: the network, the db machine's servers, the worker hosts, and its faults.

:class:`Bed` is what the tests, the soak and ``python -m tests.cluster`` use. ``up`` builds it
from nothing (removing any leftovers of a crashed run first); ``down`` stops what it started by
PID and removes every namespace, link and nftables rule by name, whatever state it finds, so
it is safe to call twice or after a crash.

The state directory (default ``/tmp/hpo-cluster``, or ``$HPO_CLUSTER_DIR``) holds PostgreSQL's
data, PgBouncer's configuration and the servers' logs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg

from tests.cluster import net
from tests.cluster.postgres import BOUNCER_PORT, PG_PORT, PGBIN, PgBouncer, Postgres, connect

STATE_DIR = Path(os.environ.get("HPO_CLUSTER_DIR", "/tmp/hpo-cluster"))
TOOLS = {"ip": "iproute2", "nft": "nftables", "pgbouncer": "pgbouncer", "runuser": "util-linux"}


def missing_tools(pgbouncer: bool = True) -> list[str]:
    """What the bed needs and this machine lacks, as Debian package names."""
    missing = [pkg for exe, pkg in TOOLS.items() if shutil.which(exe) is None]
    if not pgbouncer and "pgbouncer" in missing:
        missing.remove("pgbouncer")
    if not (PGBIN / "postgres").exists():
        missing.append(f"postgresql-15 ({PGBIN})")
    return missing


class Bed:
    """Three worker hosts and a database machine on one bridge (see :mod:`tests.cluster`)."""

    def __init__(self, state: Path = STATE_DIR) -> None:
        self.state = state
        self.postgres = Postgres(state)
        self.bouncer = PgBouncer(state, self.postgres)

    # -- life cycle ---------------------------------------------------------------------------

    def up(self, pgbouncer: bool = True) -> None:
        """Build the bed from nothing: bridge, db (PostgreSQL, PgBouncer), hosts h1..h3."""
        if os.geteuid() != 0:
            raise PermissionError("the bed needs root (network namespaces, nftables)")
        if missing := missing_tools(pgbouncer):
            raise RuntimeError(f"the bed needs {', '.join(missing)}: apt-get install them")
        self.down()
        self.state.mkdir(parents=True)
        self.state.chmod(0o755)  # PostgreSQL's user must reach its data below it
        net.bridge_up()
        net.add_machine(net.DB)
        self.postgres.start()
        if pgbouncer:
            self.bouncer.start()
        for host in net.HOSTS:
            net.add_machine(host)

    def down(self) -> None:
        """Stop the servers by PID, remove every machine and the bridge, delete the state."""
        self.bouncer.stop()
        self.postgres.stop()
        net.remove_all()  # also kills anything left running inside the namespaces
        shutil.rmtree(self.state, ignore_errors=True)

    def status(self) -> dict[str, object]:
        """What is up: machines (cut, loss, processes), the servers' PIDs."""
        machines = {}
        for m in net.MACHINES:
            if not net.netns_exists(m):
                machines[m.name] = "absent"
                continue
            loss, dropped = net.loss_of(m)
            machines[m.name] = {
                "addr": m.addr,
                "cut": net.is_cut(m),
                "loss_percent": loss,
                "packets_dropped": dropped,
                "processes": len(net.netns_pids(m)),
            }
        return {
            "bridge": net.link_exists(net.BRIDGE),
            "postgres_pid": self.postgres.pid,
            "pgbouncer_pid": self.bouncer.pid,
            "machines": machines,
        }

    # -- hosts ---------------------------------------------------------------------------------

    def reset_hosts(self) -> None:
        """Fresh worker hosts: whatever ran on them is killed, their links up, no loss."""
        for host in net.HOSTS:
            net.remove_machine(host)
            net.add_machine(host)

    def boot(self, name: str) -> None:
        """A new machine ``name`` where one was powered off (the same address)."""
        m = net.machine(name)
        net.remove_machine(m)
        net.add_machine(m)

    # -- faults (by machine name) ----------------------------------------------------------------

    def cut(self, name: str) -> None:
        net.cut(net.machine(name))

    def heal(self, name: str) -> None:
        net.heal(net.machine(name))

    def cut_db(self) -> None:
        """The database unreachable from everyone (the root namespace's view of it too)."""
        net.cut(net.DB)

    def heal_db(self) -> None:
        net.heal(net.DB)

    def set_loss(self, name: str, percent: int) -> None:
        net.set_loss(net.machine(name), percent)

    def power_off(self, name: str) -> list[int]:
        """The host dies now and never returns (until :meth:`boot`); the PIDs it ran."""
        return net.power_off(net.machine(name))

    def heal_all(self) -> None:
        """Every link up and no packet loss anywhere (power-offs stay off)."""
        for m in net.MACHINES:
            if net.netns_exists(m):
                net.heal(m)
                net.clear_loss(m)

    # -- databases -------------------------------------------------------------------------------

    def url(self, database: str, via_pgbouncer: bool = False) -> str:
        """The storage URL the worker hosts use: PostgreSQL directly, or through PgBouncer."""
        server = self.bouncer if via_pgbouncer else self.postgres
        return server.url(database)

    def create_database(self) -> str:
        name = f"hpoc_{uuid.uuid4().hex[:10]}"
        with connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, whoever is still connected (lingering sessions of dead hosts included)."""
        if self.bouncer.pid is not None:  # PgBouncer keeps server connections to it open
            try:
                with connect("pgbouncer", BOUNCER_PORT) as admin:
                    admin.execute(f"KILL {name}")
                    admin.execute(f"RESUME {name}")
            except psycopg.Error:
                pass  # no pool for it: PgBouncer never connected to it
        with connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


__all__ = ["PG_PORT", "Bed", "missing_tools"]
