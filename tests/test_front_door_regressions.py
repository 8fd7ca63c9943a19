"""Every input the front-door fuzzer (``tests/test_front_door.py``) found failing, kept as a
plain test, plus the ones found while reading the code around them. Each was a traceback, a
hang, a multi-line message, or an input accepted that then failed; each is now accepted and
works, or refused with one ``Error:`` line and exit code 2.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli import main
from hpo.config.pruners import build_pruner
from hpo.config.samplers import build_sampler
from hpo.config.spec import load_spec, parse_spec
from hpo.config.suggest import suggest
from hpo.errors import SpecError
from tests.conftest import REPO, small_study

OK_STUDY = {
    "study": {"name": "r"},
    "budget": {"n_trials": 3},
    "sampler": {"name": "random"},
    "pruner": {"name": "none"},
}


def invoke(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(
        main, list(args), env={"HPO_STORAGE": None, "HPO_DATA_DIR": None, **(env or {})}
    )


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


# --- study files the fuzzer found, as bytes ----------------------------------------------------

BAD_BYTES = {
    # UnicodeDecodeError traceback, exit 1 (the first case; the fuzzer's first find)
    "latin-1": (b'# caf\xe9 \xe9\n[study]\nname = "0"\n', "not UTF-8 text (byte 0xe9 at offset 5)"),
    "utf-16": ('[study]\nname = "x"\n'.encode("utf-16"), "not UTF-8"),
    "random binary": (bytes(range(256)), "not UTF-8"),
    # RecursionError traceback from tomllib
    "deep nesting": (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
}


@pytest.mark.parametrize("content,message", BAD_BYTES.values(), ids=list(BAD_BYTES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_study_files_that_are_not_utf8_toml(tmp_path, monkeypatch, content, message, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_bytes(content)
    assert_one_error_line(invoke(command, "s.toml"), "s.toml", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xef\xbb\xbf" + small_study().encode())
    assert load_spec(path).name == "small"


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "big"])
def test_study_files_that_never_end_are_refused_at_once(tmp_path, target):
    """/dev/zero was read until memory ran out, a FIFO blocked forever."""
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    elif target == "big":
        (tmp_path / "big").write_bytes(b"# " + b"x" * 2_000_000)
        target = str(tmp_path / "big")
    with pytest.raises(SpecError, match=r"not a regular file|larger than"):
        load_spec(target)


# --- values in a study file ------------------------------------------------------------------

BAD_VALUES = {
    # timeout_minutes = nan validated, and the study then never timed out (the case)
    "nan timeout": ({"budget": {"n_trials": 3, "timeout_minutes": math.nan}}, "finite"),
    "inf timeout": ({"budget": {"timeout_minutes": math.inf}}, "finite"),
    "1e308 minutes": ({"budget": {"timeout_minutes": 1e308}}, "budget.timeout_minutes"),
    "400-digit minutes": ({"budget": {"timeout_minutes": 10**400}}, "too large"),
    "nan min_delta": (
        {"train": {"early_stopping": {"patience": 2, "min_delta": math.nan}}},
        "finite",
    ),
    # numpy refused the seed only at trial 1 (seed + trial number >= 2**32)
    "seed 2**32-1": ({"sampler": {"name": "random", "seed": 2**32 - 1}}, "sampler.seed"),
    "huge data seed": ({"data": {"seed": 2**70}}, "data.seed"),
    "nan step": ({"space": {"lr": {"low": 0.1, "high": 0.5, "step": math.nan}}}, "step"),
    "400-digit lr": ({"space": {"lr": 10**400}}, "space.lr"),
    "empty storage": ({"study": {"name": "r", "storage": ""}}, "study.storage is empty"),
    # [sampler] options = { n_startup_trials = "five" } validated and the study ran (the issue)
    "option type": (
        {"sampler": {"name": "tpe", "options": {"n_startup_trials": "five"}}},
        "n_startup_trials must be an integer",
    ),
    # the fuzzer: consider_prior = nan validated, and the spec then held a NaN
    "nan bool option": (
        {"sampler": {"name": "tpe", "options": {"consider_prior": math.nan}}},
        "true or false",
    ),
    "callable option": (
        {"sampler": {"name": "tpe", "options": {"gamma": 3}}},
        "a study file cannot give",
    ),
    "inf option": ({"sampler": {"name": "tpe", "options": {"prior_weight": math.inf}}}, "finite"),
    # the fuzzer: hung in successive halving's reduction_factor ** min_early_stopping_rate
    "huge int option": (
        {"pruner": {"name": "successive_halving", "options": {"min_early_stopping_rate": 2**31}}},
        "at most",
    ),
    # the fuzzer: ValueError (math domain error) / ZeroDivisionError at the first report
    "hyperband max_resource 0": (
        {"pruner": {"name": "hyperband", "options": {"max_resource": 0}}},
        "at least 1",
    ),
    "hyperband min_resource 0": (
        {"pruner": {"name": "hyperband", "options": {"min_resource": 0}}},
        "at least 1",
    ),
    "hyperband reduction_factor 1": (
        {"pruner": {"name": "hyperband", "options": {"reduction_factor": 1}}},
        "at least 2",
    ),
    "hyperband bootstrap_count -1": (
        {"pruner": {"name": "hyperband", "options": {"bootstrap_count": -1}}},
        "at least 0",
    ),
    # found by trying each option at its edges: each failed at the first trial, not before
    "tpe n_ei_candidates 0": (
        {"sampler": {"name": "tpe", "options": {"n_ei_candidates": 0}}},
        "at least 1",
    ),
    "tpe n_ei_candidates 1e6": (
        {"sampler": {"name": "tpe", "options": {"n_ei_candidates": 10**6}}},
        "at most",
    ),
    "tpe prior_weight -1": (
        {"sampler": {"name": "tpe", "options": {"prior_weight": -1.0}}},
        "at least 0",
    ),
    "cmaes popsize 1": ({"sampler": {"name": "cmaes", "options": {"popsize": 1}}}, "at least 2"),
    # the fuzzer: Optuna asserted "Parameter configuration must contain all distributions"
    "cmaes x0 empty": (
        {
            "sampler": {"name": "cmaes", "options": {"x0": {}}},
            "space": {"depth": {"low": 1, "high": 2}},
        },
        "x0 needs a start for every range: depth is missing",
    ),
    "cmaes x0 a string": (
        {
            "sampler": {"name": "cmaes", "options": {"x0": {"depth": "1"}}},
            "space": {"depth": {"low": 1, "high": 2}},
        },
        "must lie in space.depth's range",
    ),
}


@pytest.mark.parametrize("change,message", BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_bad_values_are_spec_errors_naming_the_key(change, message):
    study = {**OK_STUDY, **change}
    with pytest.raises(SpecError) as err:
        parse_spec(study)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bruteforce_runs_its_whole_space_under_ask_and_tell():
    """The fuzzer: Optuna's brute force calls study.stop() after the last point, which raises
    RuntimeError outside Study.optimize; hpo's workers ask and tell."""
    spec = parse_spec(
        {**OK_STUDY, "budget": {}, "sampler": {"name": "bruteforce"}, "space": {"depth": [1, 2]}}
    )
    assert spec.budget.n_trials == 2  # the space's size
    study = optuna.create_study(sampler=build_sampler("bruteforce", {}, 0))
    seen = []
    for number in range(2):
        study.sampler = build_sampler("bruteforce", {}, 0, number)
        trial = study.ask()
        seen.append(suggest(trial, spec.space)["depth"])
        study.tell(trial, 1.0)
    assert sorted(seen) == [1, 2]


def test_patient_pruner_options_are_type_checked_too():
    spec = parse_spec({**OK_STUDY, "pruner": {"name": "patient", "options": {"patience": 2}}})
    assert build_pruner(spec.pruner) is not None
    with pytest.raises(SpecError, match="patience must be an integer"):
        parse_spec({**OK_STUDY, "pruner": {"name": "patient", "options": {"patience": "2"}}})


# --- CLI options and the environment -----------------------------------------------------------

BAD_OPTIONS = {
    # click's usage errors were four lines ("Usage: ...", "Try ...", "", "Error: ...")
    "threads 0": (["worker", "--threads", "0"], "--threads"),
    # FloatRange lets NaN through (every comparison with NaN is false)
    "heartbeat nan": (["create", "--heartbeat", "nan"], "not a finite number"),
    "heartbeat inf": (["create", "--heartbeat", "inf"], "--heartbeat"),
    "heartbeat 1e-300": (["create", "--heartbeat", "1e-300"], "--heartbeat"),
    # torch.set_num_threads(2**31 - 1), and libgomp aborted allocating 463 GB
    "threads 2**31-1": (["run", "--threads", str(2**31 - 1)], "--threads"),
    "workers 10**6": (["run", "--workers", "1000000"], "--workers"),
    "n-trials 10**30": (["create", "--n-trials", str(10**30)], "--n-trials"),
    "tolerance nan": (
        ["compare", "-o", "out", "--samplers", "random", "--tolerance", "nan"],
        "--tolerance",
    ),
    # OverflowError: int(float("9" * 400)) is int(inf)
    "budget 400 digits": (
        ["compare", "-o", "out", "--samplers", "random", "--budget", "9" * 400],
        "--budget",
    ),
    "no such option": (["run", "--wokers", "2"], "--wokers"),
}


@pytest.mark.parametrize("args,fragment", BAD_OPTIONS.values(), ids=list(BAD_OPTIONS))
def test_bad_options_are_one_line(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(small_study())
    command, *rest = args
    result = invoke(command, "s.toml", "--storage", "sqlite:///s.db", *rest)
    assert_one_error_line(result, fragment)
    assert not (tmp_path / "s.db").exists()


BAD_URLS = {
    # validate said "ok" to URLs that run refused (the issue; the fuzzer's first finds)
    "bare path": ("s.db", "sqlite:///s.db"),
    "unknown scheme": ("mongodb://h/db", "not supported"),
    "no scheme": ("://", "malformed"),
    "port not a number": ("postgresql+psycopg://u:p@h:notaport/db", "malformed"),
    # TypeError "Invalid argument(s) 'max_overflow'" from status, and no study to share
    "in-memory": ("sqlite:///:memory:", "in-memory"),
    # ModuleNotFoundError: the driver is not installed
    "mysql": ("mysql://u@h/db", "not installed"),
    "sqlite options": ("sqlite:///s.db?mode=ro", "takes no '?' options"),
    "a folder": ("sqlite:///.", "is a folder"),
    "under a file": ("sqlite:///s.toml/x.db", "is not a folder"),
    "not sqlite": ("sqlite:///s.toml", "is not a SQLite database"),
    "control character": ("sqlite:///s\x01.db", "control character"),
}


@pytest.mark.parametrize("url,fragment", BAD_URLS.values(), ids=list(BAD_URLS))
@pytest.mark.parametrize("via", ["option", "env"])
def test_validate_refuses_what_run_refuses(tmp_path, monkeypatch, url, fragment, via):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(small_study())
    if via == "option":
        results = [invoke(c, "s.toml", "--storage", url) for c in ("validate", "status")]
    else:
        results = [invoke(c, "s.toml", env={"HPO_STORAGE": url}) for c in ("validate", "status")]
    for result in results:
        assert_one_error_line(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_validate_names_the_storage_it_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(small_study())
    result = invoke("validate", "s.toml", env={"HPO_STORAGE": "postgresql://u:secret@h/db"})
    assert result.exit_code == 0
    assert "storage postgresql+psycopg://u:***@h/db" in result.output
    assert "secret" not in result.output


def test_a_data_folder_that_is_a_file(tmp_path, monkeypatch):
    """click's own check of --data-dir printed four lines; $HPO_DATA_DIR was not checked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(small_study())
    result = invoke("run", "s.toml", "--storage", "sqlite:///s.db", "--data-dir", "s.toml")
    assert_one_error_line(result, "--data-dir")
    result = invoke("run", "s.toml", "--storage", "sqlite:///s.db", env={"HPO_DATA_DIR": "s.toml"})
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines[-1].startswith("Error: the data folder s.toml is a file")
    assert not (tmp_path / "s.db").exists()


# --- real processes: nothing but the one line reaches the terminal ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "content,args,env",
    [
        (b'[study]\nname = "caf\xe9"\n', [], {}),
        (
            small_study().replace("n_trials = 4", "n_trials = 4\ntimeout_minutes = nan").encode(),
            [],
            {},
        ),
        (small_study().encode(), ["--threads", "0"], {}),
        (small_study().encode(), [], {"HPO_STORAGE": "mongodb://h/db"}),
        (small_study().encode(), [], {"HPO_DATA_DIR": "s.toml"}),
    ],
    ids=["latin-1", "nan", "threads 0", "storage scheme", "data folder a file"],
)
def test_no_traceback_reaches_stderr(tmp_path, content, args, env):
    (tmp_path / "s.toml").write_bytes(content)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    out = subprocess.run(
        [sys.executable, "-m", "hpo", "run", "s.toml", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**run_env, "PYTHONPATH": str(REPO), **env},
    )
    assert out.returncode == 2, out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: "), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_folder_given_as_the_study_file(tmp_path):
    """A directory given as the study file is refused by click, on one line."""
    result = invoke("validate", str(tmp_path))
    assert_one_error_line(result, "is a directory")
    assert Path(tmp_path).is_dir()
