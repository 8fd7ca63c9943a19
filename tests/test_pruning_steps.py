"""The pruning step convention: hpo reports epoch e as step e, and a pruner's ``n_warmup_steps``
means what Optuna's documentation says (never pruned during the first k epochs), except in
studies created before that rule, which keep pruning as they did."""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from hpo.cli import main
from hpo.compare.replay import Entry, GridRecord, point_key, replay_study
from hpo.config.pruners import (
    PRUNERS,
    PrunerSpec,
    as_created,
    build_pruner,
    legacy_note,
    optuna_options,
)
from hpo.config.spec import load_spec, parse_spec
from hpo.coord.storage import open_storage
from hpo.coord.study import FINGERPRINT_ATTR, SPEC_ATTR, create_or_load, join
from hpo.errors import StudyMismatchError
from hpo.objective import make_objective

REPO = Path(__file__).resolve().parents[1]
GOOD, BAD = [0.5, 0.4, 0.3], [0.9, 0.8, 0.7]  # validation losses at epochs 1, 2, 3


def _spec(pruner: dict, name: str = "p", space: dict | None = None):
    return parse_spec(
        {
            "study": {"name": name},
            "budget": {"n_trials": 10},
            "pruner": pruner,
            "space": space or {"depth": 1, "units": 16, "epochs": 3},
        }
    )


MEDIAN_1 = {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 1}}


def pruned_at(study: optuna.Study, curve: list[float], first_step: int = 1) -> int | None:
    """Report ``curve`` as hpo's objective does (epoch e as step e, or from ``first_step``);
    the epoch after which the trial was pruned, or None if it completed."""
    trial = study.ask()
    for epoch, value in enumerate(curve, start=1):
        trial.report(value, epoch - 1 + first_step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return epoch
    study.tell(trial, curve[-1])
    return None


def test_one_warmup_step_keeps_the_first_epoch_and_prunes_after_the_second():
    study = optuna.create_study(pruner=build_pruner(_spec(MEDIAN_1).pruner))
    assert [pruned_at(study, GOOD), pruned_at(study, GOOD)] == [None, None]
    assert pruned_at(study, BAD) == 2  # worse than the median after epoch 1, yet kept for it


def test_the_objective_reports_epochs_from_1_and_keeps_the_first_epoch(tiny_data):
    """Through hpo's objective and real (tiny) training: lr 1e-6 barely moves, so it is worse
    than the median from epoch 1 on; with one warm-up step it is pruned after epoch 2."""
    spec = _spec(
        MEDIAN_1, space={"depth": 1, "units": 16, "epochs": 3, "batch_size": 50, "lr": [0.01, 1e-6]}
    )
    study = optuna.create_study(direction=spec.direction, pruner=build_pruner(spec.pruner))
    objective = make_objective(spec, tiny_data)
    for lr in (0.01, 0.01, 1e-6):
        study.enqueue_trial({"lr": lr})
        study.optimize(objective, n_trials=1)
    bad = study.trials[-1]
    assert bad.state == TrialState.PRUNED and bad.user_attrs["epochs_run"] == 2
    assert list(bad.intermediate_values) == [1, 2]


OPTIONS = [
    {"n_warmup_steps": 0},
    {"n_warmup_steps": 1},
    {"n_warmup_steps": 2, "interval_steps": 2},
    {"interval_steps": 3},
    {"n_warmup_steps": 1, "interval_steps": 2, "n_startup_trials": 3},
]


def _same_as_optuna_from_zero(name: str, options: dict, extra: dict, wrapped: bool = False):
    """hpo's pruner over steps 1..E prunes each trial after the same epoch as Optuna's own,
    with the same options, over steps 0..E-1 (as in Optuna's examples)."""
    rng = random.Random(zlib.crc32(f"{name}{sorted(options.items())}".encode()))
    curves = [[rng.uniform(0.2, 1.0) for _ in range(8)] for _ in range(25)]
    given = {**extra, **options}
    if wrapped:
        spec = PrunerSpec("patient", {"patience": 2}, PrunerSpec(name, given))
        theirs = optuna.pruners.PatientPruner(PRUNERS[name](**given), patience=2)
    else:
        spec, theirs = PrunerSpec(name, given), PRUNERS[name](**given)
    ours_study = optuna.create_study(pruner=build_pruner(spec))
    their_study = optuna.create_study(pruner=theirs)
    ours = [pruned_at(ours_study, c, first_step=1) for c in curves]
    assert ours == [pruned_at(their_study, c, first_step=0) for c in curves]
    return ours


@pytest.mark.parametrize("options", OPTIONS, ids=json.dumps)
@pytest.mark.parametrize("name", ["median", "percentile", "threshold"])
def test_warmup_and_interval_mean_what_optunas_documentation_says(name, options):
    extra = {"percentile": {"percentile": 40.0}, "threshold": {"upper": 0.8}}.get(name, {})
    if name == "threshold":
        options = {k: v for k, v in options.items() if k != "n_startup_trials"}
    pruned = _same_as_optuna_from_zero(name, options, extra)
    k = options.get("n_warmup_steps", 0)
    assert all(e is None or e > k for e in pruned) and any(e is not None for e in pruned)


def test_a_wrapped_pruner_counts_its_warmup_the_same_way():
    pruned = _same_as_optuna_from_zero("median", {"n_warmup_steps": 2}, {}, wrapped=True)
    assert all(e is None or e > 2 for e in pruned)


def test_resource_counts_and_other_options_pass_unchanged():
    """Successive halving and Hyperband count epochs trained (their documentation's
    resource), which hpo's steps already are; nothing else is translated."""
    for spec in (
        PrunerSpec("successive_halving", {"min_resource": 2, "reduction_factor": 2}),
        PrunerSpec("hyperband", {"min_resource": 1, "max_resource": 8}),
        PrunerSpec("patient", {"patience": 2}),
        PrunerSpec("median", {"n_warmup_steps": 3}, warmup="legacy"),
    ):
        assert optuna_options(spec) == spec.options
    assert optuna_options(PrunerSpec("median", {"n_startup_trials": 2})) == {
        "n_startup_trials": 2,
        "n_warmup_steps": 1,
    }


def test_a_bad_warmup_is_rejected_with_the_files_value():
    from hpo.errors import SpecError

    with pytest.raises(SpecError, match="n_warmup_steps=-1"):
        _spec({"name": "median", "options": {"n_warmup_steps": -1}})


def _old_resolved(spec) -> dict:
    """The resolved spec as hpo stored it before the pruner had a ``warmup``."""
    stored = spec.resolved()
    stored["pruner"].pop("warmup")
    return stored


def test_the_fingerprint_is_the_one_stored_before_the_rule():
    spec = _spec(MEDIAN_1)
    old = _old_resolved(spec)
    for key in ("storage", "budget"):
        old.pop(key)
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert spec.fingerprint() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert spec.resolved()["pruner"]["warmup"] == "optuna"


#: Fingerprints of shipped study files with a pruner, as hpo computed them before this rule.
OLD_FINGERPRINTS = {
    "quickstart": "b48cb54915f3f89a",
    "flagship": "c3dcb4b94d41e22c",
    "compare_short": "558762848b2d5065",
    "units_batch_grid": "eaadf2d1295084b1",
}


@pytest.mark.parametrize("name", OLD_FINGERPRINTS)
def test_shipped_files_keep_their_fingerprints(name):
    assert load_spec(REPO / "studies" / f"{name}.toml").fingerprint() == OLD_FINGERPRINTS[name]


def test_as_created_reads_the_stored_spec():
    spec = _spec(MEDIAN_1)
    assert as_created(spec.pruner, None) == spec.pruner  # not created by hpo: the file decides
    assert as_created(spec.pruner, spec.resolved()) == spec.pruner
    assert as_created(spec.pruner, _old_resolved(spec)).warmup == "legacy"


def test_an_old_study_prunes_as_before_and_a_new_one_as_documented(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    old_spec, new_spec = _spec(MEDIAN_1, name="old"), _spec(MEDIAN_1, name="new")
    old = create_or_load(old_spec, storage, url)
    # As hpo stored the study file before this change: no warm-up marker, same fingerprint.
    old.set_user_attr(SPEC_ATTR, _old_resolved(old_spec))
    assert old.user_attrs[FINGERPRINT_ATTR] == old_spec.fingerprint()
    create_or_load(new_spec, storage, url)

    def bad_trial_pruned_at(study: optuna.Study) -> int | None:
        return pruned_at(study, BAD)

    for opened in (join, create_or_load):  # a new worker joins; 'hpo run' resumes
        old_study = opened(old_spec, storage, url)
        new_study = opened(new_spec, storage, url)
        if opened is join:
            for study in (old_study, new_study):
                assert [pruned_at(study, GOOD), pruned_at(study, GOOD)] == [None, None]
        assert bad_trial_pruned_at(old_study) == 1  # as before: pruned after epoch 1
        assert bad_trial_pruned_at(new_study) == 2
    changed = _spec(MEDIAN_1, name="old", space={"depth": 1, "units": 32, "epochs": 3})
    with pytest.raises(StudyMismatchError, match="differing sections: space\\)"):
        join(changed, storage, url)  # the pruner's warm-up is not named as a difference


def test_hpo_status_says_when_a_study_keeps_the_old_warmup(tmp_path, write_study):
    path = write_study(
        '[study]\nname = "old"\n[budget]\nn_trials = 3\n[pruner]\nname = "median"\n'
        "options = { n_warmup_steps = 1 }\n[space]\nepochs = 2\n"
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = load_spec(path)
    study = create_or_load(spec, open_storage(url), url)

    def status() -> str:
        result = CliRunner().invoke(main, ["status", str(path), "--storage", url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "note:" not in status()
    study.set_user_attr(SPEC_ATTR, _old_resolved(spec))
    assert "keeps the old count (n_warmup_steps = k allows pruning after epoch k" in status()
    none = _old_resolved(_spec({"name": "none"}))
    patient = _old_resolved(_spec({"name": "patient", "options": {"patience": 2}}))
    wrapped = _old_resolved(
        _spec({"name": "patient", "options": {"patience": 2}, "wrapped": MEDIAN_1})
    )
    assert legacy_note(none) is None and legacy_note(patient) is None
    assert legacy_note(wrapped) is not None


def test_replay_counts_warmup_as_live_studies_do():
    """'hpo compare --replay' reports a recorded curve epoch by epoch through the same pruner;
    the grid replays its points in order, the bad one last."""
    spec = parse_spec(
        {
            "study": {"name": "r"},
            "sampler": {"name": "grid"},
            "pruner": MEDIAN_1,
            "space": {"depth": 1, "units": 16, "epochs": 3, "lr": [0.01, 0.02, 0.03]},
        }
    )
    entries = {}
    for point in spec.grid():
        curve = tuple(BAD if point["lr"] == 0.03 else GOOD)
        entries[point_key(point)] = Entry(dict(point), curve, "COMPLETE", curve[-1], 3, 3.0, None)
    study = replay_study(
        spec,
        GridRecord(entries, "made up"),
        sampler="grid",
        pruned=True,
        sampler_seed=None,
        budget=3,
        unit="trials",
    )
    states = [(t.params["lr"], t.state, t.user_attrs["replay:epochs"]) for t in study.trials]
    assert states == [
        (0.01, TrialState.COMPLETE, 3),
        (0.02, TrialState.COMPLETE, 3),
        (0.03, TrialState.PRUNED, 2),
    ]


def test_the_readme_states_the_convention():
    text = " ".join((REPO / "README.md").read_text().split())
    assert "hpo reports epoch e as step e" in text
    assert "`n_warmup_steps = k`: a trial is never pruned during its first k epochs" in text
    assert "Studies created before this rule keep pruning as they did" in text
