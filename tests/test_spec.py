from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hpo.config.space import Choice, Fixed, FloatRange, IntRange
from hpo.config.spec import categorical_numbers, explain, kinds_as_created, load_spec, parse_spec
from hpo.errors import SpecError

REPO = Path(__file__).resolve().parents[1]

BASE = """
[study]
name = "t"
[budget]
n_trials = 5
"""


def test_minimal_spec_fills_defaults(write_study):
    spec = load_spec(write_study(BASE))
    assert spec.metric == "val_loss" and spec.direction == "minimize"
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"
    assert spec.space["depth"] == Fixed(2)
    assert spec.space["units_2"] == Fixed(128)
    assert spec.data.validation_size == 10_000


def test_accuracy_metric_is_maximized(write_study):
    spec = load_spec(write_study(BASE.replace('name = "t"', 'name = "t"\nmetric = "val_accuracy"')))
    assert spec.direction == "maximize"


def test_param_forms(write_study):
    spec = load_spec(
        write_study(
            BASE
            + """
[space]
depth = { low = 1, high = 3 }
units = [32, 64]
units_2 = { low = 16, high = 256, step = 16 }
lr = { low = 1e-4, high = 1e-1, log = true }
dropout = { low = 0, high = 0.5, step = 0.1 }
optimizer = ["sgd", "adam"]
momentum = 0.9
batch_size = { choices = [32, 64], kind = "categorical" }
weight_decay = { choices = [0.0, 1e-4], kind = "ordinal" }
"""
        )
    )
    assert spec.space["depth"] == IntRange(1, 3)
    assert spec.space["units_1"] == Choice((32, 64), "ordinal") == spec.space["units_3"]
    assert spec.space["optimizer"] == Choice(("sgd", "adam"), "categorical")
    assert spec.space["batch_size"] == Choice((32, 64), "categorical", given=True)
    assert spec.space["weight_decay"] == Choice((0.0, 1e-4), "ordinal", given=True)
    assert spec.space["units_2"] == IntRange(16, 256, 16)
    assert spec.space["lr"] == FloatRange(1e-4, 1e-1, None, True)
    assert spec.space["dropout"] == FloatRange(0.0, 0.5, 0.1)
    assert spec.space["momentum"] == Fixed(0.9)


BAD = {
    "unknown top-level table": ("[studdy]\nx = 1", "unknown key 'studdy'"),
    "unknown study key": ('[study]\nname = "t"\nnmae = "x"', "study.nmae"),
    "wrong type": (BASE.replace("n_trials = 5", 'n_trials = "five"'), "budget.n_trials"),
    "empty choices": (BASE + "[space]\nunits = []", "space.units.choices"),
    "inverted range": (BASE + "[space]\nlr = { low = 1e-2, high = 1e-4 }", "space.lr is empty"),
    "log range through zero": (
        BASE + "[space]\nweight_decay = { low = 0.0, high = 0.1, log = true }",
        "space.weight_decay: a log range must be above 0",
    ),
    "grid over continuous range": (
        '[study]\nname = "t"\n[sampler]\nname = "grid"\n[space]\nlr = { low = 1e-4, high = 1e-2 }',
        "space.lr is a continuous range",
    ),
    "unknown sampler": (BASE + '[sampler]\nname = "bayes"', "unknown sampler.name 'bayes'"),
    "unknown pruner": (BASE + '[pruner]\nname = "early"', "unknown pruner.name 'early'"),
    "unknown optimizer": (BASE + '[space]\noptimizer = ["adam", "lbfgs"]', "space.optimizer"),
    "unknown sampler option": (
        BASE + '[sampler]\nname = "tpe"\noptions = { n_startup = 3 }',
        "sampler.options.n_startup",
    ),
    "rejected pruner value": (
        BASE + '[pruner]\nname = "percentile"\noptions = { percentile = 150.0 }',
        "pruner 'percentile' rejected",
    ),
    "width beyond depth": (
        BASE + "[space]\ndepth = { low = 1, high = 2 }\nunits_3 = 64",
        "space.units_3 can never be used",
    ),
    "depth without widths": (
        BASE + "[space]\ndepth = 3\nunits_1 = 64\nunits_2 = 32",
        "space.units_3 is missing",
    ),
    "not toml": ("[study\nname = 't'", "not valid TOML"),
    "unknown hyperparameter": (BASE + "[space]\nwidths = [1, 2]", "space.widths"),
    "momentum without an optimizer that uses it": (
        BASE + '[space]\noptimizer = "adam"\nmomentum = 0.9',
        "space.momentum is set",
    ),
    "direction against metric": (
        '[study]\nname = "t"\ndirection = "maximize"\n[budget]\nn_trials = 1',
        "study.direction",
    ),
    "no budget": ('[study]\nname = "t"', "budget needs n_trials"),
    "budget above grid": (
        '[study]\nname = "t"\n[budget]\nn_trials = 9\n[sampler]\nname = "grid"\n'
        "[space]\ndepth = 1\nunits = [1, 2]",
        "exceeds the grid's 2 points",
    ),
    "value out of range": (BASE + "[space]\ndropout = 1.5", "space.dropout must be"),
    "bad study name": ('[study]\nname = "a/b"\n[budget]\nn_trials = 1', "study.name"),
    "patience without patience": (BASE + "[train.early_stopping]\nmin_delta = 0.1", "patience"),
    "unknown list kind": (
        BASE + '[space]\nunits = { choices = [16, 32], kind = "ordered" }',
        "space.units.kind must be one of ['ordinal', 'categorical'], got 'ordered'",
    ),
    "list kind of the wrong type": (
        BASE + "[space]\nunits = { choices = [16, 32], ordinal = true }",
        "unknown key 'space.units.ordinal'",
    ),
    "ordinal names": (
        BASE + '[space]\noptimizer = { choices = ["sgd", "adam"], kind = "ordinal" }',
        "space.optimizer.kind = 'ordinal' needs numbers",
    ),
    "kind on a range": (
        BASE + '[space]\nunits = { low = 16, high = 32, kind = "ordinal" }',
        "space.units.kind applies to 'choices' only",
    ),
    "kind not a string": (
        BASE + "[space]\nunits = { choices = [16, 32], kind = true }",
        "space.units.kind must be one of",
    ),
}


@pytest.mark.parametrize("text,expected", list(BAD.values()), ids=list(BAD))
def test_bad_study_files_name_the_problem(write_study, text, expected):
    path = write_study(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read the study file"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem


#: Fingerprints of shipped study files as hpo computed them before lists of numbers had a kind:
#: studies created then must still fit their unchanged files.
OLD_FINGERPRINTS = {"units_grid": "26ccef130dddf036", "compare_grid_vs_tpe": "e99f499640c8ebb0"}


@pytest.mark.parametrize("name", OLD_FINGERPRINTS)
def test_fingerprints_of_unchanged_files_are_unchanged(name):
    assert load_spec(REPO / "studies" / f"{name}.toml").fingerprint() == OLD_FINGERPRINTS[name]


def test_fingerprint_ignores_storage_and_budget_only():
    raw = {"study": {"name": "f"}, "budget": {"n_trials": 3}, "space": {"lr": [0.1, 0.01]}}
    base = parse_spec(raw).fingerprint()
    assert parse_spec({**raw, "budget": {"n_trials": 9}}).fingerprint() == base
    moved = {**raw, "study": {"name": "f", "storage": "sqlite:///x.db"}}
    assert parse_spec(moved).fingerprint() == base
    assert parse_spec({**raw, "space": {"lr": [0.1, 0.02]}}).fingerprint() != base
    assert parse_spec({**raw, "sampler": {"seed": 5}}).fingerprint() != base


def test_a_lists_kind_counts_in_the_fingerprint_only_where_the_file_gives_it():
    """A default kind is decided when the study is created, so an old study (its numeric
    lists categorical) still fits its unchanged file; an explicit kind is a different file."""
    raw = {"study": {"name": "f"}, "budget": {"n_trials": 3}, "space": {"units": [16, 32, 64]}}
    spec = parse_spec(raw)
    assert (
        spec.space["units_1"].ordinal and spec.resolved()["space"]["units_1"]["kind"] == "ordinal"
    )
    # The hash of the space as hpo stored it before lists had a kind:
    old = spec.resolved()
    for key in ("storage", "budget"):
        old.pop(key)
    old["pruner"].pop("warmup")  # nor had the pruner a warm-up convention (test_pruning_steps)
    for entry in old["space"].values():
        entry.pop("kind", None)
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert spec.fingerprint() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    for kind in ("ordinal", "categorical"):
        forced = {**raw, "space": {"units": {"choices": [16, 32, 64], "kind": kind}}}
        assert parse_spec(forced).fingerprint() != spec.fingerprint()
    assert spec.with_kind("categorical").fingerprint() != spec.with_kind("ordinal").fingerprint()


def test_an_old_study_keeps_its_categorical_lists_and_says_why_its_plots_look_so():
    raw = {
        "study": {"name": "f"},
        "budget": {"n_trials": 3},
        "space": {"units": [16, 32, 64], "optimizer": ["sgd", "adam"]},
    }
    spec = parse_spec(raw)
    stored = spec.resolved()
    for entry in stored["space"].values():
        entry.pop("kind", None)  # as hpo stored it before lists had a kind
    old = kinds_as_created(spec.space, stored)
    assert old["units_1"].kind == "categorical" and old["optimizer"].kind == "categorical"
    assert kinds_as_created(spec.space, spec.resolved()) == spec.space
    assert kinds_as_created(spec.space, None) == spec.space
    assert categorical_numbers(stored) == ["units_1", "units_2"]
    assert "created before lists of numbers became ordinal" in explain(stored)
    assert explain(spec.resolved()) is None
    forced = spec.with_kind("categorical")
    assert kinds_as_created(forced.space, spec.resolved())["units_1"].kind == "categorical"
    assert 'says kind = "categorical"' in explain(forced.resolved())
