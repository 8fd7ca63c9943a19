"""What a study must look like when it ends, whatever the network did to it.

Read with plain Optuna (the study as anyone else sees it), not through hpo's own accounting:

- no trial is RUNNING (nor WAITING, unless the study ended with grid points left over);
- the finished trials (COMPLETE, PRUNED, and FAIL not retried) are exactly the budget;
- each grid point is COMPLETE or PRUNED exactly once (at most once if points are left over);
- no trial is counted twice: every retried trial has exactly one retry, of the same point;
  no trial was trained by two workers (each ``trial #N started`` appears once in the logs);
- every worker exited 0, or was killed by the test.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.coord.recovery import FAILURE_ATTR, RETRIED_ATTR, RETRY_OF_ATTR, point_of
from tests.cluster.fleet import Fleet

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Outcome:
    """The study's trials by what happened to them (all counts)."""

    complete: int
    pruned: int
    failed: int  # FAIL and counted (not retried)
    retried: int  # FAIL and queued again: a dead or cut-off worker's, or given back
    reaped: int  # of those: failed by another worker for want of a heartbeat
    given_back: int  # of those: handed back by their own worker (SIGTERM)
    dropped: int  # results a worker computed but dropped (another had failed its trial)
    leftover: int  # grid points still queued (only where the study ended early on purpose)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def point_key(trial: FrozenTrial) -> str:
    return json.dumps(point_of(trial), sort_keys=True)


def outcome(study: optuna.Study, fleet: Fleet | None = None) -> Outcome:
    trials = study.get_trials(deepcopy=False)
    retried = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(RETRIED_ATTR)]
    failures = [str(t.user_attrs.get(FAILURE_ATTR, "")) for t in retried]
    return Outcome(
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials) - len(retried),
        retried=len(retried),
        reaped=sum("no heartbeat" in f for f in failures),
        given_back=sum("interrupted" in f for f in failures),
        dropped=fleet.text().count("result is dropped") if fleet is not None else 0,
        leftover=sum(t.state == TrialState.WAITING for t in trials),
    )


def check(
    study: optuna.Study,
    budget: int | None,
    fleet: Fleet,
    grid_size: int | None = None,
    leftover_ok: bool = False,
) -> Outcome:
    """Assert the study's end state (see the module's list); returns what happened.

    ``budget=None``: a study that ended on a time budget, with no count to hold it to.

    Raises:
        AssertionError: listing every invariant that does not hold, with the trials.
    """
    trials = study.get_trials(deepcopy=False)
    result = outcome(study, fleet)
    problems = []
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        problems.append(f"trials still RUNNING: {running}")
    if result.leftover and not leftover_ok:
        problems.append(f"{result.leftover} trials still WAITING")
    if budget is not None and result.finished != budget:
        problems.append(f"{result.finished} finished trials for a budget of {budget}: {result}")
    done = collections.Counter(point_key(t) for t in trials if t.state in DONE)
    twice = {p: n for p, n in done.items() if n > 1}
    if twice:
        problems.append(f"grid points finished more than once: {twice}")
    if grid_size is not None and not leftover_ok and len(done) != grid_size:
        problems.append(f"{len(done)} of the {grid_size} grid points finished")
    by_number = {t.number: t for t in trials}
    retries = collections.defaultdict(list)
    for t in trials:
        if RETRY_OF_ATTR in t.user_attrs:
            retries[t.user_attrs[RETRY_OF_ATTR]].append(t)
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(RETRIED_ATTR):
            again = retries.get(t.number, [])
            if len(again) != 1 or point_key(again[0]) != point_key(t):
                problems.append(f"trial #{t.number} was retried as {[r.number for r in again]}")
    for number, again in retries.items():
        first = by_number.get(number)
        if first is None or not first.user_attrs.get(RETRIED_ATTR):
            problems.append(f"{[r.number for r in again]} retry #{number}, which was not retried")
    started = collections.Counter(re.findall(r"trial #(\d+) started", fleet.text()))
    trained_twice = sorted(int(n) for n, count in started.items() if count > 1)
    if trained_twice:
        problems.append(f"trials trained by more than one worker: {trained_twice}")
    codes = fleet.exit_codes()
    bad_exits = {w: c for w, c in codes.items() if c not in (0, "killed by the test")}
    if bad_exits:
        problems.append(f"workers that did not exit 0: {bad_exits}")
    if problems:
        keys = ("worker", FAILURE_ATTR, RETRIED_ATTR, RETRY_OF_ATTR)
        table = "\n".join(
            f"  #{t.number} {t.state.name} {point_of(t)} "
            f"{ {k: t.user_attrs[k] for k in keys if k in t.user_attrs} }"
            for t in trials
        )
        logs = fleet.text()
        raise AssertionError(
            "\n".join(["study invariants broken:", *problems, "trials:", table])
            + f"\nworker logs (last 6000 chars):\n{logs[-6000:]}"
        )
    return result
