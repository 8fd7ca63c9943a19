"""Hosts that fail: real ``hpo worker`` processes on three hosts in network namespaces, a
PostgreSQL of their own, and the faults of a real network (see :mod:`tests.cluster`).

Each test runs a 36-point grid study with ``--heartbeat 2`` (grace 8 s) on 2 workers per host,
breaks something, and ends with the invariants (:func:`tests.cluster.invariants.check`): no
RUNNING trial, exactly the budget finished, each grid point once, nothing counted twice, every
worker exited 0 or was killed by the test.

Routes: the workers reach PostgreSQL directly or through PgBouncer (transaction pooling). Each
test runs once, on the route where its fault is hardest, so that the file stays within about
7 minutes on an idle 2-core machine (each test is about a minute: six workers starting, a
36-trial study, and the fault's own 20 to 30 s):

- through PgBouncer: the cuts of a host inside a transaction (1b in the middle of a write, 2
  inside the critical section): there the server session is PgBouncer's, alive and well, so
  neither TCP keepalives nor a dead socket end it, only a limit set inside the transaction;
  the database unreachable from every host (3) and the power-off (5), where PgBouncer's own
  client links are the ones that die;
- directly: the partition past the grace (1) and the packet loss (4), where the worker's own
  TCP connection to PostgreSQL is what is tested (on PostgreSQL directly, the server's
  keepalives also end a vanished client's session, so 1b and 2 would pass on them alone).

Root only (network namespaces, nftables); skipped elsewhere with the reason. In CI (``CI``
set, root) a missing tool fails instead. Everything the bed starts is stopped by PID and its
namespaces, links and rules removed, even when a test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo.coord.recovery import FAILURE_ATTR
from tests.cluster import Bed, missing_tools
from tests.cluster.fleet import GRACE, HEARTBEAT, Fleet, write_grid_study
from tests.cluster.invariants import DONE, check
from tests.cluster.watch import Watch, cut_at, cut_writing, wait_for

GRID = 36
STUDY_TIMEOUT = 300.0  # seconds a whole study may take on a loaded 2-core machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bed needs root (network namespaces)"),
]

DIRECT, BOUNCER = "direct", "pgbouncer"


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    if missing := missing_tools():
        message = f"the bed needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bed = Bed()
    try:
        bed.up(pgbouncer=True)
        yield bed
    finally:
        bed.down()


@pytest.fixture
def fleet(bed: Bed, fmnist_dir: Path, tmp_path: Path, request) -> Iterator[Callable[..., Fleet]]:
    """``fleet(route)``: a fresh study in a database of its own, created, no workers yet."""
    made: list[tuple[Fleet, str]] = []

    def make(route: str) -> Fleet:
        bed.reset_hosts()
        database = bed.create_database()
        home = tmp_path / f"fleet{len(made)}"  # a test may start a second fleet
        home.mkdir()
        f = Fleet(
            bed=bed,
            url=bed.url(database, via_pgbouncer=route == BOUNCER),
            read_url=bed.url(database),
            study_file=write_grid_study(home),
            data_dir=fmnist_dir,
            logs=home / "logs",
        )
        made.append((f, database))
        f.create(heartbeat=HEARTBEAT)
        return f

    yield make
    for f, database in made:
        f.kill_all()
        f.close()
        bed.heal_all()
        bed.drop_database(database)


def database(f: Fleet) -> str:
    return f.read_url.rsplit("/", 1)[1]


def done(f: Fleet) -> int:
    return sum(t.state in DONE for t in f.study().get_trials(deepcopy=False))


def reaped(f: Fleet) -> int:
    """How many trials workers took for dead (and queued again)."""
    return sum(
        "no heartbeat" in str(t.user_attrs.get(FAILURE_ATTR, ""))
        for t in f.study().get_trials(deepcopy=False)
    )


def steady(f: Fleet) -> None:
    """Past the first trials (which, with imports and warm-up, are the slow ones): from here
    on workers claim, and so look for dead workers' trials, every few seconds."""
    wait_for(lambda: done(f) >= 6, 300, "six trials done")


def mid_trial(f: Fleet, host: str) -> Callable[[], bool]:
    """Every worker on ``host`` has started a trial (its log says so)."""
    return lambda: all("started" in w.text() for w in f.on(host))


def finish(f: Fleet, timeout: float = STUDY_TIMEOUT) -> None:
    assert f.wait(timeout), f"workers still running after {timeout:g}s:\n{f.text()[-4000:]}"


def test_partition_past_grace(fleet) -> None:
    """1: h1 cut off for longer than the 8 s grace (20 s, and until the others have taken its
    trials for dead), then healed: its trials are retried by the others, its workers drop
    their late results and exit 0."""
    f = fleet(DIRECT)
    f.start()
    watch = Watch(database(f))
    try:
        steady(f)
        wait_for(mid_trial(f, "h1"), 300, "h1's workers mid-trial")
        cut_at(f.bed, watch, "h1", holding=False)
        cut = time.monotonic()
        time.sleep(20)
        wait_for(lambda: reaped(f) >= 1, 90, "h1's trials taken for dead", every=0.5)
        taken = time.monotonic() - cut
        f.bed.heal("h1")
    finally:
        watch.close()
    finish(f)
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert result.reaped >= 1, result  # h1's trials were taken for dead and run again
    print(f"partition of h1 for {taken:.0f}s: {result}")


@pytest.mark.parametrize("route", [BOUNCER])
def test_cut_in_the_middle_of_a_write(fleet, route: str) -> None:
    """1b: a host cut while one of its sessions is telling a trial's result (holding the
    trial's row, outside the critical section) stays cut: the others still take that trial
    for dead, run its point again and finish the study without it."""
    for attempt in (1, 2):  # the moment is a few milliseconds of each trial's tell
        f = fleet(route)
        f.start()
        watch = Watch(database(f))
        try:
            steady(f)
            host, _ = cut_writing(f.bed, watch, trial_row=True)
            break
        except TimeoutError:  # missed in every tell of this study (a loaded machine): again
            watch.close()
            f.kill_all()
            if attempt == 2:
                raise
    try:
        cut = time.monotonic()
        others = [w for w in f.workers if w.host != host]
        wait_for(
            lambda: all(w.proc.poll() is not None for w in others),
            STUDY_TIMEOUT,
            f"the study finished without {host}",
            every=0.5,
        )
        without = time.monotonic() - cut
        f.bed.heal(host)
    finally:
        watch.close()
    finish(f)
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert result.reaped >= 1, result
    print(f"mid-write cut of {host}: the others finished the study {without:.0f}s after it")


@pytest.mark.parametrize("route", [BOUNCER])
def test_lock_holder_cut(fleet, route: str) -> None:
    """2: the host holding the critical section is cut for 30 s; the others finish at least 4
    trials meanwhile."""
    for attempt in (1, 2):  # the moment is the few milliseconds of a claim's transaction
        f = fleet(route)
        f.start()
        watch = Watch(database(f))
        try:
            steady(f)
            host, _ = cut_at(f.bed, watch, None, holding=True)
            break
        except TimeoutError:  # missed in every claim for 90 s (a loaded machine): again
            watch.close()
            f.kill_all()
            if attempt == 2:
                raise
    try:
        before = done(f)
        time.sleep(30)
        during = done(f) - before
        f.bed.heal(host)
    finally:
        watch.close()
    finish(f)
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert during >= 4, f"only {during} trials finished while {host}, the lock holder, was cut"
    print(f"lock holder {host} cut for 30 s: {during} trials finished meanwhile; {result}")


@pytest.mark.parametrize("route", [BOUNCER])
def test_database_unreachable_hosts_back_one_by_one(fleet, route: str) -> None:
    """3: every host cut off from the database for 30 s, healed one by one 5 s apart: no live
    trial is reaped, nothing is dropped."""
    f = fleet(route)
    f.start()
    wait_for(lambda: all("started" in w.text() for w in f.workers), 300, "every worker mid-trial")
    hosts = ("h1", "h2", "h3")
    for host in hosts:
        f.bed.cut(host)
    time.sleep(30)
    before, healed, resumed = done(f), time.monotonic(), None
    for host in hosts:
        f.bed.heal(host)
        until = time.monotonic() + 5
        while time.monotonic() < until:  # the first trial finished after the first heal
            if resumed is None and done(f) > before:
                resumed = time.monotonic() - healed
            time.sleep(0.2)
    if resumed is None:
        resumed = 15 + wait_for(lambda: done(f) > before, 120, "a trial done", every=0.2)
    finish(f)
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert result.reaped == 0 and result.dropped == 0, result
    print(f"database away 30 s: a trial done {resumed:.1f}s after the first heal; {result}")


@pytest.mark.parametrize("route", [DIRECT])
def test_packet_loss_for_the_whole_study(fleet, route: str) -> None:
    """4: 20% of h1's packets dropped, both ways, from before its workers start to the end."""
    f = fleet(route)
    f.bed.set_loss("h1", 20)
    f.start()
    finish(f)
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert result.reaped == 0, result  # slow links are not dead workers
    print(f"20% loss on h1: {result}")


@pytest.mark.parametrize("route", [BOUNCER])
def test_power_off_mid_trial(fleet, route: str) -> None:
    """5: h1 powered off mid-trial, never to return: its trials are retried within the grace
    plus a few heartbeats, and the study finishes in a bounded time."""
    f = fleet(route)
    f.start()
    steady(f)
    wait_for(mid_trial(f, "h1"), 300, "h1's workers mid-trial")
    f.power_off("h1")
    off = time.monotonic()

    def requeued() -> bool:
        trials = f.study().get_trials(deepcopy=False)
        running_h1 = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and str(t.user_attrs.get("worker", "")).startswith("h1")
        ]
        return not running_h1

    retried_in = wait_for(requeued, 120, "h1's trials retried", every=0.5)
    finish(f)
    total = time.monotonic() - off
    result = check(f.study(), GRID, f, grid_size=GRID)
    assert result.reaped >= 1, result
    # The grace, then a reaping pass: once a beat, by a worker between two trials (a trial
    # takes a few seconds here, up to 30 on this machine when it is loaded by others).
    bound = GRACE + 30
    assert retried_in <= bound, f"h1's trials retried {retried_in:.0f}s after power-off > {bound}"
    print(f"power-off: trials retried after {retried_in:.1f}s, study done {total:.0f}s after")
