"""Claims: parsed and validated from the study file, then judged on synthetic trials whose
truth is known (a planted effect, or none)."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import replace

import numpy as np
import optuna
import pytest
import tomllib
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial

from hpo.cli import main
from hpo.config.claims import Group
from hpo.config.repeats import grid_trials, suggest_repeat, training_seed
from hpo.config.spec import load_spec, parse_spec
from hpo.config.suggest import suggest
from hpo.coord.lock import StudyLock
from hpo.coord.recovery import RETRY_OF_ATTR
from hpo.coord.storage import open_storage
from hpo.coord.study import claim, create_or_load, give_back
from hpo.errors import SpecError
from hpo.insight import analysis, report
from hpo.insight.claims import CONTRADICTED, NO_DATA, SUPPORTED, UNCLEAR, judge, more_seeds
from hpo.insight.rows import Row
from tests.conftest import REPO, small_study

STUDY = """
[study]
name = "c"
metric = "val_accuracy"
[sampler]
name = "grid"
[space]
depth = [1, 2]
units_1 = [64, 128, 256]
units_2 = [64, 128, 256]
batch_size = [32, 64, 128]
optimizer = "adam"
"""

CLAIMS = """
[[claim]]
name = "balanced beats unbalanced"
kind = "beats"
where = { depth = 2 }
a = { equal = ["units_1", "units_2"] }
b = { differ = ["units_1", "units_2"] }

[[claim]]
kind = "order"
param = "batch_size"
order = [128, 64, 32]

[[claim]]
kind = "interaction"
a = { depth = 2, units_1 = 256, units_2 = 256 }
b = { depth = 2, units_1 = 64, units_2 = 64 }
change = { param = "batch_size", from = 128, to = 32 }

[[claim]]
kind = "fraction"
a = { depth = 2, units_1 = 128, units_2 = 128 }
b = { depth = 2, units_1 = 256, units_2 = 256 }
at_least = 0.996
"""


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def spec_with(claims: str):
    return parse_spec(tomllib.loads(STUDY + claims))


def test_every_kind_parses_into_groups():
    spec = spec_with(CLAIMS)
    beats, order, inter, frac = spec.claims
    assert beats.name == "balanced beats unbalanced" and beats.metric == "val_accuracy"
    balanced = {"depth": 2, "units_1": 128, "units_2": 128}
    assert beats.sides[0].matches(balanced) and not beats.sides[1].matches(balanced)
    assert beats.sides[1].matches({**balanced, "units_2": 64})
    assert not beats.sides[0].matches({"depth": 1, "units_1": 128})  # no units_2: in no group
    assert [s.matches({"batch_size": 64}) for s in order.sides] == [False, True, False]
    assert order.statement == "batch_size=128 > batch_size=64 > batch_size=32"
    big_small_batch = {"depth": 2, "units_1": 256, "units_2": 256, "batch_size": 32}
    assert [s.matches(big_small_batch) for s in inter.sides] == [True, False, False, False]
    assert frac.at_least == 0.996 and "99.6%" in frac.statement


def test_claims_do_not_change_the_fingerprint():
    plain = parse_spec(tomllib.loads(STUDY))
    assert plain.claims == () and "claims" not in plain.resolved()
    with_claims = spec_with(CLAIMS)
    assert with_claims.fingerprint() == plain.fingerprint()
    assert len(with_claims.resolved()["claims"]) == 4


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ('kind = "guess"', "claim[0].kind must be one of"),
        ('kind = "beats"\na = { depth = 1 }', "claim[0] (beats) needs 'b'"),
        (
            'kind = "beats"\na = { depth = 1 }\nb = { depth = 2 }\nc = 1',
            "unknown key 'claim[0].c'",
        ),
        ('kind = "beats"\na = { width = 1 }\nb = { depth = 2 }', "claim[0].a.width names no"),
        ('kind = "beats"\na = { depth = 3 }\nb = { depth = 2 }', "space.depth never takes 3"),
        ('kind = "beats"\na = { depth = "1" }\nb = { depth = 2 }', "never takes '1'"),
        ('kind = "beats"\na = { depth = 1, units_2 = 64 }\nb = { depth = 2 }', "can never occur"),
        (
            'kind = "beats"\na = { equal = ["units_1", "units_2"], differ = ["units_1", '
            '"units_2"] }\nb = { depth = 1 }',
            "claim[0].a can never occur",
        ),
        ('kind = "beats"\na = { depth = [1, 2] }\nb = { depth = 2 }', "overlap"),
        ('kind = "order"\nparam = "batch_size"\norder = [128]', "at least two values"),
        ('kind = "order"\nparam = "batch_size"\norder = [128, 256]', "order[1]"),
        (
            'kind = "fraction"\na = { depth = 1 }\nb = { depth = 2 }\nat_least = 99.6',
            "at_least must be a fraction",
        ),
        (
            'kind = "interaction"\na = { depth = 1 }\nb = { depth = 2 }\n'
            'change = { param = "units_2", from = 64, to = 128 }',
            "(a∧to) can never occur",
        ),
        ('kind = "beats"\nmetric = "val_loss"\na = { depth = 1 }\nb = { depth = 2 }', "metric"),
    ],
)
def test_bad_claims_are_one_line_errors(claim, message):
    with pytest.raises(SpecError) as err:
        spec_with("[[claim]]\n" + claim + "\n")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("group", ["{ lr = 0.001 }", '{ equal = ["lr", "dropout"] }'])
def test_a_claim_cannot_name_a_continuous_range(group):
    raw = tomllib.loads(STUDY.replace('name = "grid"', 'name = "tpe"'))
    raw["budget"] = {"n_trials": 5}
    raw["space"].update(lr={"low": 1e-4, "high": 1e-1}, dropout={"low": 0.0, "high": 0.5})
    raw["claim"] = [{"kind": "beats", "a": tomllib.loads(f"a = {group}")["a"], "b": {"depth": 1}}]
    with pytest.raises(SpecError, match="is a continuous range; a claim can only name"):
        parse_spec(raw)


def test_claim_must_be_an_array_of_tables():
    with pytest.raises(SpecError, match=r"\[\[claim\]\]"):
        parse_spec({**tomllib.loads(STUDY), "claim": "a beats b"})


def test_a_group_describes_itself():
    group = Group((("batch_size", (32, 64)),), (("units_1", "units_2"),))
    assert group.describe() == "units_1 = units_2, batch_size in (32, 64)"


def rows_from(accuracy, seeds: int, rng: np.random.Generator, config_sd=0.002, seed_sd=0.003):
    """Complete trials of every depth-2 configuration of STUDY, ``seeds`` each, with accuracy
    ``accuracy(config)`` plus a configuration's own offset and seed noise."""
    out, n = [], 0
    for u1, u2, bs in itertools.product((64, 128, 256), (64, 128, 256), (32, 64, 128)):
        config = {"depth": 2, "units_1": u1, "units_2": u2, "batch_size": bs, "optimizer": "adam"}
        base = accuracy(config) + rng.normal(0, config_sd)
        for s in range(seeds):
            value = float(base + rng.normal(0, seed_sd))
            out.append(Row(n, "COMPLETE", value, {**config, "seed": s}, value, None, None, None))
            n += 1
    return out


def balanced(gain):
    return lambda c: 0.88 + gain * (c["units_1"] == c["units_2"])


BEATS, ORDER, INTERACTION, FRACTION = spec_with(CLAIMS).claims


def test_a_planted_effect_is_supported_and_its_reverse_contradicted():
    rng = np.random.default_rng(0)
    found = judge(BEATS, rows_from(balanced(0.01), 2, rng))
    assert found.verdict == SUPPORTED
    assert 0.005 < found.comparisons[0].low < found.comparisons[0].effect
    assert [(s.configs, s.trials) for s in found.sides] == [(9, 18), (18, 36)]
    assert judge(BEATS, rows_from(balanced(-0.01), 2, rng)).verdict == CONTRADICTED


@pytest.mark.parametrize("seeds", [1, 3])
def test_no_effect_gives_a_wrong_verdict_at_about_the_stated_rate(seeds):
    """200 studies without an effect: supported or contradicted in about 5% (binomial sd 1.5%);
    with the same design, a planted 0.6 pp effect is found in most."""
    rng = np.random.default_rng(seeds)
    null = [judge(BEATS, rows_from(balanced(0.0), seeds, rng), seed=i) for i in range(200)]
    wrong = sum(v.verdict != UNCLEAR for v in null) / len(null)
    assert 0.01 <= wrong <= 0.09
    planted = [judge(BEATS, rows_from(balanced(0.006), seeds, rng), seed=i) for i in range(50)]
    assert sum(v.verdict == SUPPORTED for v in planted) >= 40


def test_order_is_judged_pair_by_pair():
    rng = np.random.default_rng(1)
    gain = {128: 0.02, 64: 0.01, 32: 0.0}
    found = judge(ORDER, rows_from(lambda c: 0.88 + gain[c["batch_size"]], 1, rng))
    assert found.verdict == SUPPORTED and len(found.comparisons) == 2
    assert found.comparisons[0].level == pytest.approx(0.975)  # Bonferroni over two pairs
    gain[32] = 0.03
    found = judge(ORDER, rows_from(lambda c: 0.88 + gain[c["batch_size"]], 1, rng))
    assert found.verdict == CONTRADICTED
    assert [c.verdict for c in found.comparisons] == [SUPPORTED, CONTRADICTED]


def test_an_interaction_is_a_difference_of_differences():
    def acc(c):  # small batches help 256-256 by 2 pp and nothing else
        return 0.88 + 0.02 * (c["units_1"] == c["units_2"] == 256 and c["batch_size"] == 32)

    rng = np.random.default_rng(2)
    found = judge(INTERACTION, rows_from(acc, 4, rng, seed_sd=0.002))
    assert found.verdict == SUPPORTED
    assert found.comparisons[0].effect == pytest.approx(0.02, abs=0.006)
    flat = judge(INTERACTION, rows_from(lambda c: 0.88, 4, rng, seed_sd=0.002))
    assert flat.verdict in (UNCLEAR, CONTRADICTED)


def test_a_fraction_is_a_ratio_against_its_threshold():
    def acc(c):  # 128-128 at 99.5% of 256-256
        return 0.9 * (0.995 if c["units_1"] == c["units_2"] == 128 else 1.0)

    rng = np.random.default_rng(3)
    rows = rows_from(acc, 6, rng, seed_sd=0.0005)
    found = judge(FRACTION, rows)  # claims 99.6%
    assert found.comparisons[0].ratio and found.comparisons[0].effect == pytest.approx(
        0.995, abs=2e-3
    )
    lenient = replace(FRACTION, at_least=0.99)
    assert judge(lenient, rows).verdict == SUPPORTED
    assert judge(replace(FRACTION, at_least=0.999), rows).verdict == CONTRADICTED


def test_too_few_trials_is_said_and_unclear_says_how_many_more_seeds():
    rng = np.random.default_rng(4)
    one = [r for r in rows_from(balanced(0.0), 1, rng) if r.config["batch_size"] == 64]
    one = [r for r in one if (r.config["units_1"], r.config["units_2"]) in ((128, 256), (256, 256))]
    found = judge(FRACTION, one)
    assert found.verdict == NO_DATA and "at least 3 configurations" in found.sentence()
    unclear = judge(BEATS, rows_from(balanced(0.001), 2, rng, config_sd=0.0))
    assert unclear.verdict == UNCLEAR
    assert unclear.comparisons[0].more_seeds >= 1
    assert "more seeds per configuration" in unclear.sentence()


def test_more_seeds_follows_the_power_calculation():
    """One configuration per side, seed sd 0.3 pp, effect 0.3 pp: n = 2 * (1.96 + 0.84)^2."""
    a = [np.array([0.900, 0.903, 0.897])]
    b = [np.array([0.897, 0.900, 0.894])]
    more, advice = more_seeds([a, b], [1.0, -1.0], 0.003, 0.95)
    assert more == math.ceil(2 * (1.959964 + 0.841621) ** 2) - 3
    assert f"about {more} more seeds" in advice


def add_trials(study_file: str, db: str, accuracy, seeds: int) -> None:
    """Finished trials as a real worker records them, with accuracy from a formula."""
    spec = load_spec(study_file)
    study = optuna.load_study(study_name=spec.name, storage=db)
    rng = np.random.default_rng(0)
    for point in spec.grid():
        config = {"depth": 2, "epochs": 3, "batch_size": 64, **point}
        for _ in range(seeds):
            value = float(accuracy(config) + rng.normal(0, 0.001))
            attrs = {"config": config, "val_accuracy": value, "n_params": 1, "train_seconds": 1.0}
            study.add_trial(
                create_trial(
                    value=value,
                    user_attrs=attrs,
                    state=TrialState.COMPLETE,
                )
            )


def test_hpo_claims_prints_each_verdict(tmp_path):
    study, db = str(REPO / "studies/claims/balance.toml"), f"sqlite:///{tmp_path}/c.db"
    assert invoke("validate", study, "--storage", db).exit_code == 0
    assert invoke("create", study, "--storage", db).exit_code == 0
    add_trials(study, db, lambda c: 0.88 + 0.01 * (c["units_1"] == c["units_2"]), seeds=2)
    result = invoke("claims", study, "--storage", db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        lines[0].startswith("balanced beats unbalanced (") and ": supported, +0.97 pp" in lines[0]
    )
    assert "3 configurations, 6 trials" in lines[1] and "6 configurations, 12 trials" in lines[2]
    as_json = json.loads(invoke("claims", study, "--storage", db, "--json").output)
    assert [v["verdict"] for v in as_json] == [SUPPORTED, NO_DATA]  # 2 seeds of one each
    assert as_json[1]["sides"][0] == {
        "label": "units_1 = 128, units_2 = 128",
        "configs": 1,
        "trials": 2,
        "mean": pytest.approx(0.89, abs=0.002),
    }
    assert as_json[0]["comparisons"][0]["low"] > 0.005


def test_hpo_claims_fails_cleanly(tmp_path, write_study):
    db = f"sqlite:///{tmp_path}/c.db"
    plain = str(write_study(STUDY, "plain.toml"))
    result = invoke("claims", plain, "--storage", db)
    assert result.exit_code == 2 and "declares no claims" in result.output
    missing = invoke("claims", str(REPO / "studies/claims/balance.toml"), "--storage", db)
    assert missing.exit_code == 2 and missing.output.startswith("Error: no study database")
    bad = str(write_study(STUDY + '[[claim]]\nkind = "beats"\na = { depth = 3 }\nb = {}\n'))
    result = invoke("claims", bad, "--storage", db)
    assert result.exit_code == 2
    assert (
        result.output
        == f"Error: {bad}: claim[0].a.depth: space.depth never takes 3 (it takes 1, 2)\n"
    )


def test_hpo_claims_has_help_with_an_example():
    result = invoke("claims", "--help")
    assert result.exit_code == 0 and "Example:" in result.output and "hpo claims" in result.output


def test_the_note_and_the_report_have_a_claims_section(tmp_path):
    study_file, db = str(REPO / "studies/claims/balance.toml"), f"sqlite:///{tmp_path}/c.db"
    assert invoke("create", study_file, "--storage", db).exit_code == 0
    add_trials(study_file, db, lambda c: 0.88 + 0.01 * (c["units_1"] == c["units_2"]), seeds=2)
    spec = load_spec(study_file)
    found = analysis.analyze(found_study(spec, db), spec)
    assert [v.verdict for v in found.verdicts] == [SUPPORTED, NO_DATA]
    text = found.markdown()
    assert "### Claims" in text
    assert "- balanced beats unbalanced (" in text and "3 configurations, 6 trials" in text
    assert "<h2>Claims</h2>" in report.build(found, db)
    plain = replace(spec, claims=())
    assert "### Claims" not in analysis.analyze(found_study(spec, db), plain).markdown()


def found_study(spec, db):
    return optuna.load_study(study_name=spec.name, storage=db)


def test_repeats_enqueue_each_point_once_per_seed_and_keep_the_fingerprint():
    grid = tomllib.loads(STUDY)
    plain = parse_spec(grid)
    once = parse_spec({**grid, "train": {"repeats": 1}})
    assert once.fingerprint() == plain.fingerprint() and "repeats" not in once.resolved()["train"]
    thrice = parse_spec({**grid, "train": {"repeats": 3, "seed": 7}})
    assert thrice.fingerprint() != plain.fingerprint()
    trials = grid_trials(thrice)
    n = len(plain.grid())
    assert len(trials) == 3 * n and [t["repeat"] for t in trials[::n]] == [0, 1, 2]
    assert len({json.dumps(t, sort_keys=True) for t in trials}) == 3 * n
    assert [training_seed(thrice.train, r) for r in range(3)] == [7, 8, 9]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampler": {"name": "tpe"}, "budget": {"n_trials": 5}}, "train.repeats needs sampler"),
        ({"budget": {"n_trials": 100}}, "exceeds the grid's 36 points × 2 repeats"),
        ({"train": {"repeats": 0}}, "'train.repeats' must be >= 1"),
        ({"train": {"repeats": 2, "seed": 2**31 - 1}}, "'train.seed' must be <="),
    ],
)
def test_bad_repeats_are_errors(change, message):
    raw = {**tomllib.loads(STUDY), "train": {"repeats": 2}, **change}
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(raw)


@pytest.mark.slow  # trains on real Fashion-MNIST in two worker processes
def test_a_grid_with_repeats_runs_each_point_and_seed_once_under_two_workers(
    tmp_path, write_study, fmnist_dir
):
    study = str(write_study(small_study(name="rep", sampler="grid") + "\n[train]\nrepeats = 2\n"))
    db = f"sqlite:///{tmp_path}/r.db"
    assert "4 grid points × 2 training seeds" in invoke("validate", study, "--storage", db).output
    ran = invoke("run", study, "--storage", db, "--data-dir", str(fmnist_dir), "--workers", "2")
    assert ran.exit_code == 0, ran.output
    trials = optuna.load_study(study_name="rep", storage=db).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    pairs = {
        (json.dumps(t.user_attrs["config"], sort_keys=True), t.params["repeat"]) for t in trials
    }
    assert len(pairs) == 8 and {r for _, r in pairs} == {0, 1}
    assert all(t.user_attrs["train_seed"] == t.params["repeat"] for t in trials)
    assert all("repeat" not in t.user_attrs["config"] for t in trials)
    by_config = {}
    for t in trials:
        by_config.setdefault(json.dumps(t.user_attrs["config"]), set()).add(t.value)
    assert len(by_config) == 4 and any(len(values) == 2 for values in by_config.values())


def test_a_repeat_given_back_comes_back_with_its_seed(tmp_path):
    """A trial requeued (its worker stopped) keeps its repeat: its (point, seed) still runs."""
    spec = parse_spec({**tomllib.loads(STUDY), "train": {"repeats": 2}})
    url = f"sqlite:///{tmp_path}/g.db"
    storage = open_storage(url)
    study = create_or_load(spec, storage, url)
    lock = StudyLock(storage, study._study_id)
    first = claim(study, spec, storage, lock)
    repeat = suggest_repeat(first, spec.train)
    point = suggest(first, spec.space)
    assert give_back(study, storage, lock, first._trial_id, "interrupted by SIGTERM")
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 2 * len(spec.grid())  # the requeued one and all not yet run
    again = next(t for t in waiting if t.user_attrs.get(RETRY_OF_ATTR) == first.number)
    assert (
        first.params == {**again.system_attrs["fixed_params"]} and first.params["repeat"] == repeat
    )
    assert {k: v for k, v in first.params.items() if k != "repeat"}.items() <= point.items()
