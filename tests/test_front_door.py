"""The front door, fuzzed: whatever a user hands hpo is accepted and works, or is refused with
one ``Error:`` line, exit code 2, no traceback and nothing written.

Inputs are drawn by Hypothesis (``tests/strategies.py``): study files from the schema, then
mutated and re-encoded; CLI option values; ``$HPO_STORAGE`` and ``$HPO_DATA_DIR``; storage
URLs. The commands run in-process through click's ``CliRunner`` (a few milliseconds each), in a
fresh temporary folder per example, so "nothing written" is a listing of that folder. The CI
profile draws a few thousand inputs in about a minute; ``--hypothesis-profile=long`` draws far
more (see ``tests/conftest.py``). Failing inputs the fuzzer found are kept as plain tests in
``tests/test_front_door_regressions.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hpo.cli import main
from hpo.config.pruners import build_pruner
from hpo.config.samplers import build_sampler
from hpo.config.spec import parse_spec
from hpo.config.suggest import suggest
from hpo.errors import SpecError
from tests import strategies as S
from tests.conftest import small_study


def examples(share: float, *checks: HealthCheck) -> settings:
    """This test's share of the profile's examples (the "ci" profile's 400 is the unit), so
    that cheap tests draw more inputs than dear ones and "long" scales them all alike; a
    fresh folder per example is slow by Hypothesis's measure, and meant."""
    return settings(
        max_examples=max(10, round(settings.default.max_examples * share)),
        suppress_health_check=[HealthCheck.too_slow, *checks],
    )


HANG_SECONDS = 10  # no single input may take this long: that is a hang


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail (instead of waiting forever) if the block runs longer than ``seconds``."""

    def hang(signum: int, frame: object) -> None:
        raise AssertionError(f"hung for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh empty working folder for one example (the CLI's relative paths land here)."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="hpo-fuzz-") as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"HPO_STORAGE": None, "HPO_DATA_DIR": None}
    with no_hang():
        return CliRunner().invoke(main, list(args), env={**base, **(env or {})})


# Lines a command prints before it may fail: where its storage is, which study it joins.
HEADERS = ("storage: ", "worker joining ")


def assert_clean_refusal(result: Result) -> None:
    """One ``Error:`` line, exit code 2, no traceback, no other exception (after a header
    line, for the commands that print one first)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}:\n{result.output}") from (
            result.exception
        )
    lines = result.output.strip().splitlines()
    if lines and lines[0].startswith(HEADERS):
        lines = lines[1:]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output


def assert_accepted_or_refused(result: Result, folder: Path, before: set[str]) -> bool:
    """The property: exit 0, or a clean refusal that wrote nothing. True if accepted."""
    if result.exit_code == 0 and result.exception is None:
        return True
    assert_clean_refusal(result)
    assert listing(folder) == before, "a refused input wrote files"
    return False


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fashion-MNIST is nowhere: not in Debian's folder, and its download fails at once."""
    import torchvision

    from hpo.train import data

    monkeypatch.setattr(data, "DEBIAN_DIR", Path("/nonexistent/hpo-fuzz-debian"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network in the fuzz tests")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", refuse)


# --- study files -------------------------------------------------------------------------------


def assert_run_agrees(validated: Result, folder: Path, before: set[str], *args: str, **env) -> None:
    """``run`` with the same input refuses what ``validate`` refused, with the same line; what
    ``validate`` accepted, ``run`` takes as far as the data (of which there is none here)."""
    result = cli("run", *args, env=env or None)
    assert_clean_refusal(result)
    assert listing(folder) == before, "a refused run wrote files"
    refusal = result.output.strip().splitlines()[-1]
    if validated.exit_code == 0:
        assert "Fashion-MNIST not found" in refusal, refusal
    else:
        assert refusal == validated.output.strip(), (refusal, validated.output)


@examples(2, HealthCheck.function_scoped_fixture)
@given(content=S.study_files())
def test_validate_accepts_or_refuses_any_study_file(no_data: None, content: bytes) -> None:
    with scratch() as folder:
        (folder / "s.toml").write_bytes(content)
        before = listing(folder)
        result = cli("validate", "s.toml")
        if assert_accepted_or_refused(result, folder, before):
            assert result.output.startswith("s.toml: ok"), result.output
            assert listing(folder) == before, "validate wrote files"
        assert_run_agrees(result, folder, before, "s.toml")


def _storable(value: object) -> None:
    """What the study stores must be strict JSON: NaN or infinity would not round-trip."""
    json.dumps(value, allow_nan=False)


# Mutated studies are mostly (rightly) refused; two in three draws are left whole. Optuna warns
# that some CMA-ES options it still takes (x0, sigma0, restart_strategy) are deprecated.
@pytest.mark.filterwarnings("ignore::FutureWarning")
@examples(0.75, HealthCheck.filter_too_much)
@given(study=st.one_of(S.study_dicts(), S.study_dicts(), S.study_dicts().flatmap(S.mutated)))
def test_an_accepted_study_runs_its_sampler_and_pruner(study: dict) -> None:
    """What validation accepts works: the sampler and pruner, rebuilt per trial as workers do,
    draw points that the trainer's config takes, and judge reported values without error."""
    try:
        spec = parse_spec(study)
    except SpecError as err:
        assert "\n" not in str(err)
        assume(False)
        return
    _storable(spec.resolved())
    assert spec.budget.timeout_seconds is None or math.isfinite(spec.budget.timeout_seconds)
    from hpo.objective import to_config

    with no_hang():
        study_ = optuna.create_study(
            direction=spec.direction,
            sampler=build_sampler(spec.sampler.name, spec.sampler.options, spec.sampler.seed),
            pruner=build_pruner(spec.pruner),
        )
        points = spec.grid() if spec.is_grid else []
        for number in range(3):
            if points:
                study_.enqueue_trial(points[number % len(points)])
            study_.sampler = build_sampler(
                spec.sampler.name, spec.sampler.options, spec.sampler.seed, number
            )
            trial = study_.ask()
            config = to_config(suggest(trial, spec.space), spec.train)
            assert config.epochs >= 1
            for step in range(3):
                trial.report(1.0 / (step + number + 1), step)
                trial.should_prune()
            study_.tell(trial, 0.5 + number)


# --- CLI options -------------------------------------------------------------------------------

OPTION_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1", "2", "nan", "inf", "-inf", "1e309", "1e-320", "0.5", "1e3"]),
    st.sampled_from(["9" * 400, "5trials", "1.5epochs", "10s", "2 epochs", "0.0001", "65536"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=10).filter(lambda s: "\x00" not in s),
)
# Options of each command that take a number, and a study file that is otherwise fine.
NUMERIC_OPTIONS = {
    "run": ["--workers", "--n-trials", "--threads", "--heartbeat"],
    "create": ["--n-trials", "--heartbeat"],
    "worker": ["--threads"],
    "dashboard": ["--port"],
    "compare": ["--repeats", "--budget", "--workers", "--tolerance", "--threads"],
}


@examples(1.5, HealthCheck.function_scoped_fixture)
@given(
    command=st.sampled_from(sorted(NUMERIC_OPTIONS)),
    data=st.data(),
)
def test_numeric_options_are_accepted_or_refused(no_data: None, command: str, data) -> None:
    """Every number-taking option with any value: a clean refusal, or (for ``create``, which
    needs no data) a study whose stored budget is sane. ``run``, ``worker`` and ``compare``
    find no data here, so an accepted value ends at the data check, never in training."""
    names = data.draw(st.lists(st.sampled_from(NUMERIC_OPTIONS[command]), min_size=1, unique=True))
    args = [item for name in names for item in (name, data.draw(OPTION_VALUES))]
    with scratch() as folder:
        (folder / "s.toml").write_text(small_study(name="fz", n_trials=4))
        before = listing(folder)
        extra = ["-o", "out"] if command == "compare" else []
        storage = ["--storage", "sqlite:///s.db"]
        result = cli(command, "s.toml", *storage, *extra, *args)
        if command == "create" and result.exit_code == 0:
            _check_created(folder / "s.db", "fz")
            return
        assert_clean_refusal(result)
        assert listing(folder) == before


def _check_created(db: Path, name: str) -> None:
    from hpo.coord.study import read_budget

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    budget = read_budget(study)
    _storable(study.user_attrs)
    assert budget.heartbeat_seconds > 0 and math.isfinite(budget.heartbeat_seconds)
    assert budget.n_trials is None or budget.n_trials >= 1


# --- environment and storage URLs --------------------------------------------------------------


@examples(1.5, HealthCheck.function_scoped_fixture)
@given(url=S.STORAGE_URLS, via=st.sampled_from(["env", "option", "file"]))
def test_validate_checks_the_storage_url_as_run_would(no_data: None, url: str, via: str) -> None:
    """``validate`` accepts exactly the URLs ``run`` gets past its URL check, and creates
    nothing either way; every URL it refuses is one line."""
    assume("\x00" not in url or via == "file")  # a real argv or environment cannot hold NUL
    with scratch() as folder:
        text = small_study(name="fz")
        env: dict[str, str | None] = {}
        args = ["validate", "s.toml"]
        if via == "env":
            env["HPO_STORAGE"] = url
        elif via == "option":
            args += ["--storage", url]
        else:
            text = text.replace('name = "fz"', f'name = "fz"\nstorage = {json.dumps(url)}')
        (folder / "s.toml").write_text(text)
        before = listing(folder)
        result = cli(*args, env=env)
        assert_accepted_or_refused(result, folder, before)
        assert listing(folder) == before, "validate wrote files"
        assert_run_agrees(result, folder, before, *args[1:], **env)


SQLITE_URLS = st.one_of(
    st.sampled_from(["sqlite:///", "sqlite://", "sqlite:///:memory:", "sqlite:///.", "x.db"]),
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
        max_size=20,
    ).map(lambda s: f"sqlite:///nothere/{s}"),
    st.text(max_size=20).filter(lambda s: "\x00" not in s and "://" not in s),
)


@examples(0.75)
@given(url=SQLITE_URLS, command=st.sampled_from(["status", "export", "best"]))
def test_reading_commands_with_any_storage_create_nothing(url: str, command: str) -> None:
    with scratch() as folder:
        (folder / "s.toml").write_text(small_study(name="fz"))
        before = listing(folder)
        extra = ["-o", "out.csv"] if command == "export" else []
        result = cli(command, "s.toml", *extra, env={"HPO_STORAGE": url})
        assert_clean_refusal(result)
        assert listing(folder) == before


DATA_DIRS = st.one_of(
    st.sampled_from(["s.toml", "afile", "/dev/null", "/etc/hostname", "", ".", "/", "nothere"]),
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
        max_size=30,
    ),
)


@examples(0.75, HealthCheck.function_scoped_fixture)
@given(data_dir=DATA_DIRS, via=st.sampled_from(["env", "option"]))
def test_run_with_a_data_folder_that_holds_no_data_writes_nothing(
    no_data: None, data_dir: str, via: str
) -> None:
    with scratch() as folder:
        (folder / "s.toml").write_text(small_study(name="fz"))
        (folder / "afile").write_bytes(b"not a folder")
        before = listing(folder)
        args = ["run", "s.toml", "--storage", "sqlite:///s.db"]
        env: dict[str, str | None] = {}
        if via == "env":
            env["HPO_DATA_DIR"] = data_dir
        else:
            args += ["--data-dir", data_dir]
        result = cli(*args, env=env)
        assert_clean_refusal(result)
        assert listing(folder) == before
