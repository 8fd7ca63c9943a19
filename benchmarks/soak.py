"""The soak: 2 workers on each of 3 hosts for N minutes while the network fails at random.

Not a test: a long run on the multi-host bed (:mod:`tests.cluster`, root only). A grid study of
short trials (a few seconds each on a loaded machine) with a time budget of ``--minutes`` and
``--heartbeat 2`` runs on 2 ``hpo worker`` processes per host; every ``--every`` seconds or so
(uniformly 0.5 to 1.5 times it) one fault of the issue's list hits the bed:

- ``partition``: one host cut off for 20 s (past the 8 s grace), then healed;
- ``lock-holder``: the host holding the study's critical section cut off for 30 s;
- ``mid-write``: a host cut for 30 s while one of its sessions is inside a write transaction;
- ``db-unreachable``: every host cut off for 30 s, healed one by one 5 s apart;
- ``loss``: 20% packet loss on one host for 120 s;
- ``power-off``: a host's processes SIGKILLed and its namespace removed; 60 s later a new host
  boots under the same name and starts 2 new workers.

No fault starts in the last 3 minutes (a quarter of a shorter run), so that every host is
back and every dead worker's trial retried before the time budget ends the study. Then it
checks the invariants (:func:`tests.cluster.invariants.check`, with the grid points left over
allowed) and prints the trials finished, retried (taken for dead, or given back) and dropped,
the faults injected, and the time lost to them: for each fault, its window (from the fault to
20 s after its end) less the trials finished in it divided by the rate of the fault-free time,
summed.

Run it as root, beside the tests if need be under other names::

    HPO_CLUSTER_PREFIX=hpos HPO_CLUSTER_SUBNET=10.231.8 HPO_CLUSTER_DIR=/tmp/hpo-soak \\
        .venv/bin/python -m benchmarks.soak --data-dir ../shared/data/fashion-mnist

About ``--minutes`` plus a minute. It exits 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import Bed
from tests.cluster.fleet import HEARTBEAT, Fleet, write_grid_study
from tests.cluster.invariants import check
from tests.cluster.postgres import connect
from tests.cluster.watch import Watch, cut_at, cut_writing

HOSTS = ("h1", "h2", "h3")
RECOVERY = 20.0  # seconds after a fault's end still counted as its window
QUIET_END = 180.0  # no fault starts this close to the end
FAULTS = ("partition", "lock-holder", "mid-write", "db-unreachable", "loss", "power-off")
WIDTHS = tuple(range(16, 16 + 4 * 90, 4))  # a 90 x 90 grid: more points than 30 minutes take


@dataclass
class Fault:
    kind: str
    host: str
    start: float  # monotonic
    end: float = 0.0


class Counter:
    """Finished trials over time, read from PostgreSQL once a second (a thread)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Counter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with connect(self.database) as conn:
            while not self._stop.wait(1.0):
                n = conn.execute(
                    "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
                ).fetchone()[0]
                self.samples.append((time.monotonic(), n))

    def at(self, t: float) -> int:
        before = [n for when, n in self.samples if when <= t]
        return before[-1] if before else 0


def inject(kind: str, fleet: Fleet, watch: Watch, rng: random.Random) -> Fault:
    """Break the bed in one way and mend it (or, for a power-off, boot a new host)."""
    bed = fleet.bed
    host = rng.choice(HOSTS)
    start = time.monotonic()
    if kind == "partition":
        host, _ = cut_at(bed, watch, host, holding=False)
        time.sleep(20)
        bed.heal(host)
    elif kind == "lock-holder":
        host, _ = cut_at(bed, watch, None, holding=True)
        time.sleep(30)
        bed.heal(host)
    elif kind == "mid-write":
        host, _ = cut_writing(bed, watch)
        time.sleep(30)
        bed.heal(host)
    elif kind == "db-unreachable":
        host = "all"
        for h in HOSTS:
            bed.cut(h)
        time.sleep(30)
        for h in HOSTS:
            bed.heal(h)
            time.sleep(5)
    elif kind == "loss":
        bed.set_loss(host, 20)
        time.sleep(120)
        bed.set_loss(host, 0)
    elif kind == "power-off":
        fleet.power_off(host)
        time.sleep(60)
        bed.boot(host)
        fleet.start([host])
    return Fault(kind, host, start, time.monotonic())


def lost_seconds(faults: Sequence[Fault], counter: Counter, begin: float, end: float) -> float:
    """Time lost to the faults: each window less its trials at the fault-free rate."""
    windows = [(f.start, min(f.end + RECOVERY, end)) for f in faults]
    in_windows = sum(b - a for a, b in windows)
    trials_in = sum(counter.at(b) - counter.at(a) for a, b in windows)
    free_time = (end - begin) - in_windows
    free_rate = (counter.at(end) - counter.at(begin) - trials_in) / max(free_time, 1.0)
    if free_rate <= 0:
        return float("nan")
    return sum((b - a) - (counter.at(b) - counter.at(a)) / free_rate for a, b in windows)


def soak(
    minutes: float,
    every: float,
    seed: int,
    data_dir: Path,
    via_pgbouncer: bool,
    say: Callable[[str], None] = print,
) -> int:
    rng = random.Random(seed)
    bed = Bed()
    work = Path(tempfile.mkdtemp(prefix="hpo-soak-"))
    bed.up(pgbouncer=via_pgbouncer)
    fleet: Fleet | None = None
    try:
        database = bed.create_database()
        study_file = write_grid_study(work, name="soak", units_1=WIDTHS, units_2=WIDTHS)
        study_file.write_text(
            study_file.read_text().replace(
                "[budget]\n", f"[budget]\ntimeout_minutes = {minutes:g}\n"
            )
        )
        fleet = Fleet(
            bed=bed,
            url=bed.url(database, via_pgbouncer=via_pgbouncer),
            read_url=bed.url(database),
            study_file=study_file,
            data_dir=data_dir,
            logs=work / "logs",
        )
        start = time.monotonic()  # the time budget runs from the study's creation
        fleet.create(heartbeat=HEARTBEAT)
        stop_faults = start + minutes * 60 - min(QUIET_END, minutes * 15)
        fleet.start(HOSTS, per_host=2)
        route = "PgBouncer" if via_pgbouncer else "PostgreSQL directly"
        say(f"soak: {minutes:g} min, 6 workers on {', '.join(HOSTS)} via {route}, logs in {work}")
        faults: list[Fault] = []
        watch = Watch(database)
        with Counter(database) as counter:
            while counter.at(time.monotonic()) == 0:  # workers start (imports, data) first
                time.sleep(1)
            begin = time.monotonic()  # the rates and the losses count from the first trial
            say(f"  {(begin - start) / 60:5.1f} min  first trial finished; faults from now on")
            while True:
                wait = rng.uniform(0.5, 1.5) * every
                if time.monotonic() + wait >= stop_faults:
                    break
                time.sleep(wait)
                kind = rng.choice(FAULTS)
                elapsed = time.monotonic() - start
                try:
                    fault = inject(kind, fleet, watch, rng)
                except TimeoutError as err:  # no moment to cut came: that fault is skipped
                    say(f"  {elapsed / 60:5.1f} min  {kind:<15} skipped: {err}")
                    continue
                faults.append(fault)
                say(
                    f"  {elapsed / 60:5.1f} min  {kind:<15} {fault.host:<4} "
                    f"{fault.end - fault.start:5.1f}s  finished so far: {counter.at(fault.end)}"
                )
            watch.close()
            ended = fleet.wait(minutes * 60 - (time.monotonic() - start) + 300)
            end = time.monotonic()
            if not ended:
                say("workers still running 5 minutes past the time budget")
            lost = lost_seconds(faults, counter, begin, min(end, start + minutes * 60))
        result = check(fleet.study(), budget=None, fleet=fleet, leftover_ok=True)
    except AssertionError as err:
        say(str(err)[:8000])
        return 1
    finally:
        if fleet is not None:
            fleet.kill_all()
            fleet.close()
        bed.down()
    say(
        f"trials finished: {result.finished} ({result.complete} complete, {result.pruned} "
        f"pruned, {result.failed} failed)\n"
        f"trials retried: {result.retried} ({result.reaped} taken for dead, "
        f"{result.given_back} given back); results dropped: {result.dropped}\n"
        f"faults injected: {len(faults)} ({', '.join(f.kind for f in faults)})\n"
        f"time lost to them: {lost:.0f}s of {end - begin:.0f}s from the first trial to the end "
        f"(at the fault-free rate of the same run)\n"
        "invariants: no RUNNING trial, each grid point finished at most once, no trial counted "
        "twice or trained twice, every worker exited 0 or was killed by the soak: all hold"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=120.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True, help="Fashion-MNIST's folder")
    parser.add_argument("--pgbouncer", action="store_true", help="workers go through PgBouncer")
    args = parser.parse_args(argv)
    say = functools.partial(print, flush=True)
    return soak(args.minutes, args.every, args.seed, args.data_dir, args.pgbouncer, say)


if __name__ == "__main__":
    sys.exit(main())
