"""Time to quality: hpo against a plain Optuna script over the same space, same wall clock.

Each round runs both sides one after the other (the first side alternates by round), each with
2 worker processes of 1 thread for ``--minutes``, on SQLite, over the same space (depth 1-3,
widths 16-1024 log, sgd/adam/adamw/rmsprop, lr 1e-5-1e-1 log, batch 16-256 log, epochs 3-20),
holding out the same 10,000 validation images, with sampler seed = round. hpo runs as a user
runs it (``hpo create`` then ``hpo worker`` per process, the study file's defaults for what it
does not set: ``--pruner``); the comparator is ``benchmarks/quality_baseline.py``.

At the deadline both sides are stopped (hpo's workers by SIGTERM, which gives their running
trials back; the script's processes by SIGKILL): only trials finished within the same wall
clock count. Prints per round and side: trials finished (pruned), the best validation loss
among complete trials, its validation accuracy and the test accuracy of that chosen trial;
then the paired difference in best validation loss (hpo - script) with a 95% t interval over
rounds, and the ratio of trials. A second table shows what the pruner and the last-epoch
metric did: pruned trials by the epochs they ran, and complete trials whose best epoch was not
their last (with the best loss of any epoch). ``--read-only`` prints the tables again from the
studies in ``--out``, training nothing. Writes ``quality.html`` (best-so-far against wall-clock
time, every round) and ``quality.csv`` into ``--out``.

    flock /tmp/hpo-cpu.lock .venv/bin/python -m benchmarks.quality \
        --data-dir ../shared/data/fashion-mnist --rounds 5 --minutes 10 --out quality-out

On a 2-core machine the two sides must not share it with anything else: ``--rounds 5
--minutes 10`` takes 100 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from scipy import stats

from hpo.tables import Table

STUDY = """\
[study]
name = "{name}"
metric = "val_loss"

[budget]
timeout_minutes = {minutes}

[sampler]
name = "tpe"
seed = {seed}
{pruner}
[data]
validation_size = 10000

[space]
depth = {{ low = 1, high = 3 }}
units = {{ low = 16, high = 1024, log = true }}
optimizer = ["sgd", "adam", "adamw", "rmsprop"]
lr = {{ low = 1e-5, high = 1e-1, log = true }}
batch_size = {{ low = 16, high = 256, log = true }}
epochs = {{ low = 3, high = 20 }}
"""


@dataclass
class Side:
    """One side of one round, read back from its study."""

    name: str
    finished: int = 0
    pruned: int = 0
    best_loss: float = math.nan
    best_accuracy: float = math.nan
    test_accuracy: float = math.nan
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best so far)
    #: Pruned trials by the number of epochs they ran (what the pruner's settings decide).
    pruned_after: dict[int, int] = field(default_factory=dict)
    #: Complete trials whose best epoch was not their last, and the best validation loss of
    #: any epoch of a complete trial (what reporting the best epoch could have chosen).
    best_not_last: int = 0
    best_any_epoch: float = math.nan


def read(name: str, storage: str, study: str, started: float) -> Side:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    side = Side(name)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    side.finished = len(done)
    side.pruned = sum(t.state == TrialState.PRUNED for t in done)
    epochs = Counter(len(t.intermediate_values) for t in done if t.state == TrialState.PRUNED)
    side.pruned_after = dict(sorted(epochs.items()))
    # Both sides report the validation loss each epoch (hpo as steps 1.., the script 0..).
    curves = [
        [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        for t in done
        if t.state == TrialState.COMPLETE and t.intermediate_values
    ]
    side.best_not_last = sum(min(c) < c[-1] for c in curves)
    side.best_any_epoch = min((min(c) for c in curves), default=math.nan)
    best = math.inf
    for t in sorted(done, key=lambda t: t.datetime_complete):
        if t.state == TrialState.COMPLETE and t.value is not None and t.value < best:
            best = t.value
            side.best_loss = t.value
            side.best_accuracy = t.user_attrs.get("val_accuracy", math.nan)
            side.test_accuracy = t.user_attrs.get("test_accuracy", math.nan)
            side.curve.append((t.datetime_complete.timestamp() - started, best))
    return side


def until(deadline: float, procs: list[subprocess.Popen], stop: Callable[[], None]) -> None:
    """Wait for ``procs`` until ``deadline``; then ``stop`` them and wait: a trial still
    training at the deadline does not count for either side."""
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            break
    stop()
    for proc in procs:
        proc.wait()


def run_hpo(out: Path, round_: int, minutes: float, workers: int, data_dir: str, pruner: str):
    name = f"hpo-r{round_}"
    study_file = out / f"{name}.toml"
    study_file.write_text(STUDY.format(name=name, minutes=minutes, seed=round_, pruner=pruner))
    storage = f"sqlite:///{out / name}.db"
    hpo = [sys.executable, "-m", "hpo"]
    started = time.time()
    subprocess.run([*hpo, "create", str(study_file), "--storage", storage], check=True)
    worker = [*hpo, "worker", str(study_file), "--storage", storage, "--threads", "1"]
    worker += ["--data-dir", data_dir]
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(out / f"{name}-w{k}.log", "w")) for k in range(workers)]
        procs = [subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        # SIGTERM: hpo's workers give their running trial back and exit.
        until(started + minutes * 60, procs, lambda: [p.terminate() for p in procs])
    return read("hpo", storage, name, started), time.time() - started


def run_script(out: Path, round_: int, minutes: float, workers: int, data_dir: str):
    name = f"script-r{round_}"
    storage = f"sqlite:///{out / name}.db"
    started = time.time()
    command = [
        sys.executable, "-m", "benchmarks.quality_baseline", "--storage", storage,
        "--study", name, "--minutes", str(minutes), "--workers", str(workers),
        "--seed", str(round_ * 100), "--data-dir", data_dir,
    ]  # fmt: skip
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # The script's processes are killed at the deadline, as a user's job would be.
        until(started + minutes * 60, [proc], lambda: os.killpg(proc.pid, signal.SIGKILL))
    return read("script", storage, name, started), time.time() - started


def interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of the paired differences and its 95% t interval (NaN bounds for one round)."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, math.nan, math.nan
    low, high = stats.t.interval(0.95, len(differences) - 1, loc=mean, scale=stats.sem(differences))
    return mean, float(low), float(high)


def plot(rounds: list[tuple[Side, Side]], path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, pair in enumerate(rounds):
        for side, colour in zip(pair, ("#1f77b4", "#d62728"), strict=True):
            if side.curve:
                xs = [s / 60 for s, _ in side.curve]
                ys = [v for _, v in side.curve]
                fig.add_scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=f"{side.name} r{k}",
                                line={"color": colour}, opacity=0.7)  # fmt: skip
    fig.update_layout(
        title="Best validation loss so far against wall-clock time (blue: hpo, red: script)",
        xaxis_title="minutes",
        yaxis_title="best validation loss",
    )
    fig.write_html(path, include_plotlyjs=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="quality-out")
    parser.add_argument(
        "--pruner", default="", help="a [pruner] table for hpo's study file (default: hpo's)"
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="train nothing: read the rounds' studies in --out again and print their tables "
        "(best-so-far times then count from each side's first trial)",
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pruner = args.pruner.replace("\\n", "\n")
    rounds: list[tuple[Side, Side]] = []
    for r in range(args.rounds):
        if args.read_only:
            rounds.append((reread(out, "hpo", r), reread(out, "script", r)))
            continue
        order = ["hpo", "script"] if r % 2 == 0 else ["script", "hpo"]
        result = {}
        for side in order:
            if side == "hpo":
                result[side] = run_hpo(out, r, args.minutes, args.workers, args.data_dir, pruner)
            else:
                result[side] = run_script(out, r, args.minutes, args.workers, args.data_dir)
            s, wall = result[side]
            print(f"round {r} {side}: {s.finished} trials ({s.pruned} pruned), best val loss "
                  f"{s.best_loss:.4f}, wall {wall:.0f}s", flush=True)  # fmt: skip
        rounds.append((result["hpo"][0], result["script"][0]))
    summarise(rounds, out)


def reread(out: Path, side: str, round_: int) -> Side:
    name = f"{side}-r{round_}"
    storage = f"sqlite:///{out / name}.db"
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    started = min(t.datetime_start.timestamp() for t in trials if t.datetime_start)
    return read(side, storage, name, started)


def summarise(rounds: list[tuple[Side, Side]], out: Path) -> None:
    rows = []
    for r, pair in enumerate(rounds):
        for s in pair:
            rows.append((r, s.name, s.finished, s.pruned, f"{s.best_loss:.4f}",
                         f"{s.best_accuracy:.4f}", f"{s.test_accuracy:.4f}"))  # fmt: skip
    header = ("round", "side", "trials", "pruned", "best val loss", "its val acc", "its test acc")
    print(Table(header, rows).render("text"))
    # What the pruner's settings and the last-epoch metric did (issue 19's questions).
    rows = [
        (r, s.name, s.pruned, s.pruned_after.get(1, 0),
         " ".join(f"{k}:{n}" for k, n in s.pruned_after.items()),
         f"{s.best_not_last}/{s.finished - s.pruned}", f"{s.best_any_epoch:.4f}")
        for r, pair in enumerate(rounds) for s in pair
    ]  # fmt: skip
    header = ("round", "side", "pruned", "after epoch 1", "epochs run: pruned",
              "complete: best epoch not last", "best val loss, any epoch")  # fmt: skip
    print(Table(header, rows).render("text"))
    diffs = [h.best_loss - s.best_loss for h, s in rounds]
    test_diffs = [h.test_accuracy - s.test_accuracy for h, s in rounds]
    mean, low, high = interval(diffs)
    tmean, tlow, thigh = interval(test_diffs)
    ratio = sum(h.finished for h, _ in rounds) / max(1, sum(s.finished for _, s in rounds))
    print(f"best val loss, hpo - script: {mean:+.4f} (95% CI {low:+.4f} to {high:+.4f}), "
          f"{len(diffs)} paired rounds")  # fmt: skip
    print(f"test accuracy of the chosen trial, hpo - script: {tmean:+.4f} "
          f"(95% CI {tlow:+.4f} to {thigh:+.4f})")  # fmt: skip
    print(f"trials finished, hpo / script: {ratio:.2f}x")
    with open(out / "quality.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("round", "side", "seconds", "best_val_loss"))
        for r, pair in enumerate(rounds):
            for s in pair:
                writer.writerows((r, s.name, f"{t:.1f}", f"{v:.5f}") for t, v in s.curve)
    plot(rounds, out / "quality.html")
    print(f"wrote {out / 'quality.csv'} and {out / 'quality.html'}")


if __name__ == "__main__":
    main()
