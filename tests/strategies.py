"""Hypothesis strategies for what a user hands hpo: study files, options, URLs, folders.

Study files are drawn from the schema (every table and key hpo reads, every sampler and pruner
with options from its constructor's signature, every hyperparameter as a fixed value, a list of
choices or a range) and then, usually, mutated: a value replaced by one of another type or an
awkward number (NaN, ±inf, huge, negative), a key deleted or invented, a table emptied, a table
header duplicated, the bytes re-encoded (Latin-1, UTF-16, a BOM) or replaced by random bytes.
"""

from __future__ import annotations

import datetime
import inspect
import math
from typing import Any

import tomli_w
from hypothesis import strategies as st

from hpo.config.pruners import PRUNERS
from hpo.config.samplers import SAMPLERS
from hpo.config.space import HYPERPARAMETERS

# Numbers that break naive checks: NaN, infinities, huge, tiny, negative, zero, big ints.
AWKWARD_FLOATS = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0, -1.0, 1e19, 0.5]
)
AWKWARD_INTS = st.sampled_from([0, -1, -(2**63), 2**63 - 1, 2**64, 10**30, 2**31, 2**32, 1])
NUMBERS = st.one_of(
    AWKWARD_FLOATS,
    AWKWARD_INTS,
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(
    NUMBERS,
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "five", "auto", "nan", "inf", "sobol", "halton", "-1"]),
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 1, 1)),
    st.dates(),
)
#: Any TOML value, nested a little.
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "name", "low", "high", "x"]), inner, max_size=3),
    ),
    max_leaves=6,
)


def _option_value(param: inspect.Parameter) -> st.SearchStrategy[Any]:
    """A value for one constructor option, from its annotation: mostly well-typed, not always
    sensible (negative counts, huge sizes, NaN)."""
    text = str(param.annotation)
    candidates: list[st.SearchStrategy[Any]] = []
    if "bool" in text:
        candidates.append(st.booleans())
    if "int" in text:
        candidates.append(st.one_of(st.integers(0, 50), AWKWARD_INTS))
    if "float" in text:
        candidates.append(st.one_of(st.floats(0, 100), AWKWARD_FLOATS))
    if "str" in text:
        candidates.append(st.sampled_from(["auto", "sobol", "halton", "ipop", "x", ""]))
    if "dict" in text:
        candidates.append(
            st.dictionaries(st.sampled_from(list(HYPERPARAMETERS)), NUMBERS, max_size=2)
        )
    if not candidates:  # a callable or an object: no file can express it
        return TOML_VALUES
    # One draw in five is of any type: the rest are of the declared type.
    return st.one_of(*candidates, *candidates, *candidates, *candidates, TOML_VALUES)


def _options(factory: Any) -> st.SearchStrategy[dict[str, Any]]:
    params = [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("seed", "wrapped")
    ]
    if not params:
        return st.just({})
    return st.lists(st.sampled_from(params), max_size=3, unique_by=lambda p: p.name).flatmap(
        lambda chosen: st.fixed_dictionaries({p.name: _option_value(p) for p in chosen})
    )


@st.composite
def _sampler(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(list(SAMPLERS)))
    table: dict[str, Any] = {"name": name}
    if draw(st.booleans()):
        table["seed"] = draw(st.one_of(st.integers(0, 1000), AWKWARD_INTS))
    if name != "grid" and draw(st.booleans()):
        table["options"] = draw(_options(SAMPLERS[name]))
    return table


@st.composite
def _pruner(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    name = draw(st.sampled_from(list(PRUNERS)))
    table: dict[str, Any] = {"name": name}
    options = draw(_options(PRUNERS[name]))
    if name == "patient":
        options.setdefault("patience", draw(st.integers(0, 5)))
        if depth == 0 and draw(st.booleans()):
            table["wrapped"] = draw(_pruner(depth=1))
    if name == "percentile":
        options.setdefault("percentile", draw(st.floats(0, 100)))
    if options:
        table["options"] = options
    return table


def _hp_value(name: str) -> st.SearchStrategy[Any]:
    """A valid value of one hyperparameter (from its declared type and bounds)."""
    hp = HYPERPARAMETERS[name]
    if hp.kind is str:
        values = {
            "optimizer": ["sgd", "adam", "adamw", "rmsprop"],
            "activation": ["relu", "tanh", "sigmoid", "gelu"],
            "init": ["default", "xavier", "he"],
        }[name]
        return st.sampled_from(values)
    if hp.kind is int:
        top = {"depth": 3, "epochs": 3, "batch_size": 512}.get(name, 256)
        return st.integers(1, top)
    top = {"lr": 1.0, "momentum": 0.99, "dropout": 0.9}.get(name, 1.0)
    return st.floats(0.0 if name != "lr" else 1e-5, top)


@st.composite
def _param(draw: st.DrawFn, name: str) -> Any:
    form = draw(st.sampled_from(["fixed", "choices", "range"]))
    if form == "fixed" or (form == "range" and HYPERPARAMETERS[name].kind is str):
        return draw(_hp_value(name))
    if form == "choices":
        return draw(st.lists(_hp_value(name), min_size=1, max_size=3, unique=True))
    low, high = sorted(draw(st.lists(_hp_value(name), min_size=2, max_size=2, unique=True)))
    table: dict[str, Any] = {"low": low, "high": high}
    if draw(st.booleans()):
        table["log"] = low > 0 and draw(st.booleans())
    elif draw(st.booleans()):
        table["step"] = 1 if isinstance(low, int) else (high - low) / 2
    return table


@st.composite
def study_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A study as the schema allows it (most draws validate; some ranges do not fit)."""
    study: dict[str, Any] = {
        "study": {"name": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))}
    }
    if draw(st.booleans()):
        study["study"]["metric"] = draw(st.sampled_from(["val_loss", "val_accuracy"]))
    study["budget"] = {"n_trials": draw(st.integers(1, 50))}
    if draw(st.booleans()):
        study["budget"]["timeout_minutes"] = draw(st.floats(0.01, 1e4))
    if draw(st.booleans()):
        study["budget"]["max_retries"] = draw(st.integers(0, 5))
    study["sampler"] = draw(_sampler())
    if study["sampler"]["name"] in ("grid", "bruteforce"):
        del study["budget"]["n_trials"]
    study["pruner"] = draw(_pruner())
    if draw(st.booleans()):
        study["data"] = {"validation_size": draw(st.integers(1, 20_000))}
        if draw(st.booleans()):
            study["data"]["train_size"] = draw(st.integers(1, 40_000))
    if draw(st.booleans()):
        study["train"] = {"seed": draw(st.integers(0, 100))}
        if draw(st.booleans()):
            study["train"]["early_stopping"] = {"patience": draw(st.integers(1, 5))}
    names = draw(
        st.lists(
            st.sampled_from([n for n in HYPERPARAMETERS if not n.startswith("units_")]),
            max_size=5,
            unique=True,
        )
    )
    study["space"] = {name: draw(_param(name)) for name in names}
    if "momentum" in names:  # only these optimizers have it
        study["space"]["optimizer"] = draw(st.sampled_from(["sgd", "rmsprop"]))
    if study["sampler"]["name"] in ("grid", "bruteforce"):  # they need a finite searched space
        study["space"]["units"] = draw(st.lists(st.integers(1, 64), min_size=2, unique=True))
    return study


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in a nested dict (tables and the keys in them)."""
    out = []
    if isinstance(value, dict):
        for key, inner in value.items():
            out.append((*prefix, key))
            out.extend(_paths(inner, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn, study: dict[str, Any]) -> dict[str, Any]:
    """The study with one to three mutations: a value of another type or an awkward number, a
    key deleted, an unknown key added, or a table emptied."""
    import copy

    study = copy.deepcopy(study)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(study)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = study
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "number", "delete", "unknown", "empty"]))
        if op == "replace":
            parent[path[-1]] = draw(TOML_VALUES)
        elif op == "number":
            parent[path[-1]] = draw(NUMBERS)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "unknown":
            target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
            target[draw(st.sampled_from(["colour", "n_trial", "Name", "lr ", "é"]))] = draw(SCALARS)
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]] = {}
    return study


def to_toml(study: dict[str, Any]) -> str:
    return tomli_w.dumps(study)


@st.composite
def study_files(draw: st.DrawFn) -> bytes:
    """The bytes of a study file: valid, mutated, re-encoded, damaged, or random."""
    study = draw(study_dicts())
    if draw(st.integers(0, 3)) > 0:
        study = draw(mutated(study))
    text = to_toml(study)
    kind = draw(
        st.sampled_from(
            ["utf8"] * 6 + ["latin1", "utf16", "bom", "dup_table", "junk", "cut", "random"]
        )
    )
    if kind == "latin1":  # a non-ASCII name or comment saved by an editor in Latin-1
        return ("# café é\n" + text).encode("latin-1", errors="replace")
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if kind == "dup_table":
        tables = [line for line in text.splitlines() if line.startswith("[")]
        if tables:
            return (text + "\n" + draw(st.sampled_from(tables)) + "\n").encode()
    if kind == "junk":
        data = bytearray(text.encode())
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at]) + draw(st.binary(min_size=1, max_size=8)) + bytes(data[at:])
    if kind == "cut":
        data = text.encode()
        return data[: draw(st.integers(0, len(data)))]
    if kind == "random":
        return draw(st.binary(max_size=200))
    return text.encode()


#: Storage URLs: good ones, near misses and garbage.
STORAGE_URLS = st.one_of(
    st.sampled_from(
        [
            "sqlite:///s.db",
            "sqlite:///sub/dir/s.db",
            "sqlite://",
            "sqlite:///",
            "sqlite:///:memory:",
            "sqlite:////",
            "sqlite:///.",
            "sqlite:///s.db/",
            "sqlite:///s.db?mode=ro",
            "s.db",
            "storage/x.db",
            "/abs/x.db",
            "mongodb://h/db",
            "http://example.com/db",
            "postgresql://",
            "postgresql+psycopg://u:p@h:notaport/db",
            "postgresql+psycopg://u:p@h:99999/db",
            "postgresql+psycopg://u@[::1/db",
            "postgresql+psycopg2://u@h/db",
            "mysql://u@h/db",
            "://",
            "sqlite:///a\x00b.db",
            "sqlite:///" + "x" * 300 + "/s.db",
            "sqlite:///" + "x" * 5000,
            "sqlite:///s\nb.db",
            " sqlite:///s.db",
            "SQLITE:///s.db",
            "sqlite+pysqlite:///s.db",
            "postgresql+psycopg://u@h/db?connect_timeout=abc",
        ]
    ),
    st.text(max_size=40),
    st.builds(
        lambda scheme, rest: f"{scheme}://{rest}", st.text(max_size=12), st.text(max_size=30)
    ),
)
