"""The bed's network: a Linux bridge, one namespace per machine, and the faults a cluster sees.

Every machine (the database "db" and the worker hosts "h1".."h3") is a network namespace
joined to the bridge ``hpoc-br`` by a veth pair: the bridge end (``hpoc-v-<name>``) stays in
the root namespace, the other end is the machine's ``eth0``. Addresses come from a private
/24 of the bed's own (:data:`SUBNET`, chosen to be unlikely to clash with anything else on the
machine); the root namespace gets ``.1`` on the bridge, so the test process can reach the
database to watch it. Nothing here sends traffic anywhere but to the bed's addresses.

Faults, as a real network shows them:

- :func:`cut` takes the bridge end of a machine's veth down: its packets are dropped silently
  in both directions (a cable pulled, a switch port dead), not refused, so TCP on either side
  learns nothing until its own timers fire. :func:`heal` puts it back.
- :func:`set_loss` drops a share of the packets entering and leaving a machine, at random,
  with nftables (``numgen random mod 100 < N drop``). This kernel has no ``netem``.
- :func:`power_off` is a host that dies at once and never returns: its link is cut *first*
  (a machine losing power sends no FIN or RST, so its server-side sessions linger as they
  would), then every process in its namespace is SIGKILLed and the namespace deleted.

Every name is fixed and prefixed ``hpoc-`` (or ``$HPO_CLUSTER_PREFIX``), so :func:`remove_all`
can find and remove what a crashed run left behind. Needs root (``CAP_NET_ADMIN``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

# A second bed can run beside the first (the soak beside the tests) under other names:
# HPO_CLUSTER_PREFIX=hpos HPO_CLUSTER_SUBNET=10.231.8 (and its own HPO_CLUSTER_DIR).
SUBNET = os.environ.get("HPO_CLUSTER_SUBNET", "10.231.7")  # the bed's private /24
PREFIX = os.environ.get("HPO_CLUSTER_PREFIX", "hpoc")
BRIDGE = f"{PREFIX}-br"
BRIDGE_ADDR = f"{SUBNET}.1"
CHAOS_TABLE = "hpoc_chaos"  # the nftables table that holds a machine's packet loss


@dataclass(frozen=True)
class Machine:
    """One simulated machine: a network namespace with one address on the bed's bridge."""

    name: str
    addr: str

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def veth(self) -> str:
        """The bridge end of its link (in the root namespace): down = the cable is cut."""
        return f"{PREFIX}-v-{self.name}"


DB = Machine("db", f"{SUBNET}.2")
HOSTS = tuple(Machine(f"h{i}", f"{SUBNET}.{2 + i}") for i in (1, 2, 3))
MACHINES = (DB, *HOSTS)


def machine(name: str) -> Machine:
    """The machine called ``name`` ("db", "h1", "h2", "h3")."""
    for m in MACHINES:
        if m.name == name:
            return m
    raise ValueError(f"no machine {name!r} in the bed; there are {[m.name for m in MACHINES]}")


def run(argv: Sequence[str], check: bool = True, input: str | None = None) -> str:
    """Run a command to completion; its stdout. Errors carry the command's stderr."""
    out = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=60)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def in_netns(m: Machine, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``m``'s namespace (``ip netns exec`` execs it: same PID)."""
    return ["ip", "netns", "exec", m.netns, *argv]


def netns_exists(m: Machine) -> bool:
    return os.path.exists(f"/run/netns/{m.netns}")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def bridge_up() -> None:
    """The bridge, with the root namespace's address on it (idempotent)."""
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def add_machine(m: Machine) -> None:
    """Create ``m``'s namespace and link it to the bridge (it must not exist yet)."""
    run(["ip", "netns", "add", m.netns])
    run(["ip", "link", "add", m.veth, "type", "veth", "peer", "name", "eth0", "netns", m.netns])
    run(["ip", "link", "set", m.veth, "master", BRIDGE, "up"])
    run(["ip", "-n", m.netns, "addr", "add", f"{m.addr}/24", "dev", "eth0"])
    run(["ip", "-n", m.netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", m.netns, "link", "set", "lo", "up"])


def netns_pids(m: Machine) -> list[int]:
    """Every process running in ``m``'s namespace (none if it does not exist)."""
    if not netns_exists(m):
        return []
    out = run(["ip", "netns", "pids", m.netns], check=False)
    return [int(p) for p in out.split()]


def kill_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGKILL these processes and wait until they are gone (zombies of ours are reaped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # our child: a zombie until waited for
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def remove_machine(m: Machine) -> None:
    """Kill whatever still runs in ``m``, delete its namespace and link (idempotent)."""
    kill_pids(netns_pids(m))
    if netns_exists(m):
        run(["ip", "netns", "del", m.netns], check=False)  # takes its veth end, and the pair
    if link_exists(m.veth):
        run(["ip", "link", "del", m.veth], check=False)


def remove_all() -> None:
    """Remove every machine and the bridge, including leftovers of a crashed run."""
    for m in MACHINES:
        remove_machine(m)
    if link_exists(BRIDGE):
        run(["ip", "link", "del", BRIDGE], check=False)


def cut(m: Machine) -> None:
    """Drop every packet to and from ``m``, silently, until :func:`heal`."""
    run(["ip", "link", "set", m.veth, "down"])


def heal(m: Machine) -> None:
    run(["ip", "link", "set", m.veth, "up"])


def is_cut(m: Machine) -> bool:
    """Whether ``m``'s link is down (a machine that is gone is not "cut")."""
    try:
        with open(f"/sys/class/net/{m.veth}/flags") as f:
            return not int(f.read(), 16) & 1  # IFF_UP
    except FileNotFoundError:
        return False


LOSS_RULES = """
table inet {table} {{
  chain in {{
    type filter hook input priority 0; policy accept;
    numgen random mod 100 < {p} counter drop;
  }}
  chain out {{
    type filter hook output priority 0; policy accept;
    numgen random mod 100 < {p} counter drop;
  }}
}}
"""


def set_loss(m: Machine, percent: int) -> None:
    """Drop ``percent`` % of the packets entering and leaving ``m``, at random (0: none)."""
    if not 0 <= percent < 100:
        raise ValueError(f"packet loss must be a percentage in [0, 100), got {percent=}")
    clear_loss(m)
    if percent:
        run(in_netns(m, ["nft", "-f", "-"]), input=LOSS_RULES.format(table=CHAOS_TABLE, p=percent))


def clear_loss(m: Machine) -> None:
    if netns_exists(m):
        run(in_netns(m, ["nft", "delete", "table", "inet", CHAOS_TABLE]), check=False)


def loss_of(m: Machine) -> tuple[int, int]:
    """The packet loss set on ``m`` in percent, and how many packets it dropped so far."""
    if not netns_exists(m):
        return 0, 0
    out = run(in_netns(m, ["nft", "list", "table", "inet", CHAOS_TABLE]), check=False)
    percents = [int(p) for p in re.findall(r"mod 100 < (\d+)", out)]
    dropped = sum(int(n) for n in re.findall(r"counter packets (\d+)", out))
    return (percents[0] if percents else 0), dropped


def power_off(m: Machine) -> list[int]:
    """``m`` dies at once, never to return; the PIDs it ran (now killed)."""
    if link_exists(m.veth):
        cut(m)  # no FIN or RST may leave: a machine without power says nothing
    pids = netns_pids(m)
    remove_machine(m)
    return pids
