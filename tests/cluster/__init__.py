"""A multi-host test bed in network namespaces: hosts that fail the way a cluster's do.

One machine, several "machines": a Linux bridge with a private /24 (``10.231.7.0/24``), a
database machine ``db`` running its own PostgreSQL 15 (and PgBouncer), and three worker hosts
``h1``..``h3``, each a network namespace with its own address. Real ``hpo worker`` processes run
inside the hosts (``ip netns exec``); the test cuts links, drops packets and powers hosts off,
then checks the study with Optuna.

- ``net``: namespaces, the bridge, and the faults (cut, heal, packet loss, power off)
- ``postgres``: PostgreSQL and PgBouncer in the db machine, stopped by PID
- ``bed``: :class:`Bed`, the whole of it: ``up``, ``down`` (idempotent), ``status``, faults
- ``fleet``: ``hpo create`` and ``hpo worker`` processes on the hosts, their logs and exits
- ``invariants``: what every study must look like at the end, whatever failed
- ``watch``: who holds the study's critical section; cutting a host at the right moment

By hand (root)::

    python -m tests.cluster up        # bridge, db (PostgreSQL :5432, PgBouncer :6432), h1..h3
    python -m tests.cluster status
    python -m tests.cluster down      # stops and removes everything, leftovers included
"""

from __future__ import annotations

from tests.cluster.bed import Bed, missing_tools

__all__ = ["Bed", "missing_tools"]
