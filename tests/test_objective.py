from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.spec import parse_spec
from hpo.coord.signals import Interrupted
from hpo.coord.worker import run_trial
from hpo.objective import make_objective


def _spec(space: dict, pruner: dict | None = None, metric: str = "val_accuracy"):
    return parse_spec(
        {
            "study": {"name": "o", "metric": metric},
            "budget": {"n_trials": 10},
            "pruner": pruner or {"name": "none"},
            "space": {"depth": 1, "units": 16, "epochs": 3, "batch_size": 50, **space},
        }
    )


def _study(spec):
    from hpo.config.pruners import build_pruner

    return optuna.create_study(direction=spec.direction, pruner=build_pruner(spec.pruner))


def test_completed_trial_records_metrics(tiny_data):
    spec = _spec({"lr": [0.01]})
    study = _study(spec)
    frozen = run_trial(study, study.ask(), make_objective(spec, tiny_data))
    assert frozen.state == TrialState.COMPLETE
    attrs = frozen.user_attrs
    assert frozen.value == attrs["val_accuracy"]
    assert len(attrs["val_loss_curve"]) == len(attrs["val_accuracy_curve"]) == 3
    assert attrs["epochs_run"] == 3 and attrs["n_params"] == 784 * 16 + 16 + 170
    assert 0 <= attrs["test_accuracy"] <= 1 and attrs["train_seconds"] > 0
    assert list(frozen.intermediate_values) == [1, 2, 3]
    assert frozen.params == {"lr": 0.01}
    assert attrs["config"]["units_1"] == 16


def test_pruner_stops_bad_trials_through_a_real_study(tiny_data):
    spec = _spec(
        {"lr": [0.01, 1e-6]},
        pruner={"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 0}},
    )
    study = _study(spec)
    objective = make_objective(spec, tiny_data)
    for _ in range(2):
        study.enqueue_trial({"lr": 0.01})
        run_trial(study, study.ask(), objective)
    study.enqueue_trial({"lr": 1e-6})  # barely moves: worse than the median at epoch 1
    bad = run_trial(study, study.ask(), objective)
    assert bad.state == TrialState.PRUNED
    assert bad.user_attrs["epochs_run"] == 1
    assert "test_accuracy" not in bad.user_attrs


def test_threshold_pruner_on_loss(tiny_data):
    spec = _spec(
        {"lr": [0.01]}, pruner={"name": "threshold", "options": {"upper": 1e-3}}, metric="val_loss"
    )
    study = _study(spec)
    frozen = run_trial(study, study.ask(), make_objective(spec, tiny_data))
    assert frozen.state == TrialState.PRUNED


def test_divergence_fails_the_trial_and_the_study_goes_on(tiny_data):
    spec = _spec({"lr": [100.0, 0.01], "optimizer": "sgd"})
    study = _study(spec)
    objective = make_objective(spec, tiny_data)
    study.enqueue_trial({"lr": 100.0})
    study.enqueue_trial({"lr": 0.01})
    first = run_trial(study, study.ask(), objective)
    second = run_trial(study, study.ask(), objective)
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"].startswith("diverged: loss became")
    assert second.state == TrialState.COMPLETE


def test_a_crashing_objective_fails_only_its_trial():
    study = optuna.create_study()

    def broken(trial):
        raise ValueError("boom")

    frozen = run_trial(study, study.ask(), broken)
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["failure"] == "ValueError: boom"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: Interrupted("SIGTERM")])
def test_a_stop_propagates_and_leaves_the_trial_to_the_worker(stop):
    study = optuna.create_study()

    def interrupted(trial):
        raise stop()

    with pytest.raises((KeyboardInterrupt, Interrupted)):
        run_trial(study, study.ask(), interrupted)
    assert study.trials[0].state == TrialState.RUNNING  # the worker gives it back


def unraisable(err: BaseException):
    """What Python hands ``sys.unraisablehook`` for an exception it drops."""
    return type("Args", (), dict(exc_type=type(err), exc_value=err, exc_traceback=None,
                                 err_msg=None, object=None))()  # fmt: skip


def test_a_stop_dropped_by_python_is_delivered_again(monkeypatch):
    """A signal landing in a weakref callback or ``__del__`` has its exception dropped by
    Python ("Exception ignored in ..."); the stop must still end the trial, within a moment."""
    import os
    import signal
    import sys
    import threading
    import time

    from hpo.coord.signals import INSIST_SECONDS, Shutdown

    printed = []  # what would be printed as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda args: printed.append(args.exc_type))
    shutdown = Shutdown()
    dropped = 0
    with shutdown.handling():
        sys.unraisablehook(unraisable(ValueError()))  # other dropped errors are still printed
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        start = time.monotonic()
        with pytest.raises(Interrupted), shutdown.interruptible():
            while time.monotonic() - start < 10:
                try:
                    time.sleep(0.01)
                except Interrupted as stop:
                    if dropped:
                        raise
                    dropped += 1  # as Python does in a weakref callback: the trial goes on
                    sys.unraisablehook(unraisable(stop))  # ... after printing it, unless quiet
        stopped_after = time.monotonic() - start
    assert dropped == 1
    assert printed == [ValueError]  # the dropped stop was not: it is no error
    assert shutdown.signal_name == "SIGTERM"
    assert stopped_after < 0.2 + 10 * INSIST_SECONDS  # not the 10 s the trial would run
