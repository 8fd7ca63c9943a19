"""Study files: TOML in, a frozen, validated :class:`StudySpec` out.

Everything is checked here, before anything touches storage: a file that is not a regular
UTF-8 text file of TOML, unknown keys, wrong types, NaN, infinities and numbers out of bounds,
empty or inverted ranges, log ranges through 0, unknown sampler/pruner/optimizer names, options
of the wrong type or that the sampler or pruner rejects, a grid over a continuous range, and
depth/width combinations that do not fit. Each problem is one :class:`~hpo.errors.SpecError`
naming the key and the value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from hpo.config.claims import Claim, parse_claims
from hpo.config.ordinal import exact, is_numeric
from hpo.config.pruners import PrunerSpec, build_pruner
from hpo.config.samplers import FINITE_SAMPLERS, build_sampler
from hpo.config.space import (
    KINDS,
    MOMENTUM_OPTIMIZERS,
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    Param,
    grid_points,
    parse_space,
    searched,
    values_of,
)
from hpo.errors import SpecError

METRICS = {"val_loss": "minimize", "val_accuracy": "maximize"}
FULL_TRAIN = 60_000
MAX_FILE_BYTES = 1024 * 1024  # a study file is a few hundred bytes; this is not one
MAX_SEED = 2**31 - 1  # NumPy seeds stop at 2**32 - 1; compare adds up to 1.4e9 per arm and repeat
# Upper bounds far above any real study, so that a typo (or 1e308) is an error naming the key
# rather than an overflow, a timeout that never comes, or an allocation that never ends.
MAX_TRIALS = 10**9
MAX_MINUTES = 10**7  # about 19 years
MAX_RETRIES = 1000
MAX_BATCH = 10**7  # examples per evaluation batch; Fashion-MNIST has 70,000
MAX_EPOCHS = 10_000  # as space.epochs
MAX_DELTA = 1e6
MAX_REPEATS = 1000  # training seeds per grid point


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetSpec:
    """The study's budget: finished trials and/or wall time, shared by all workers."""

    n_trials: int | None = None
    timeout_seconds: float | None = None
    max_retries: int = 2


@dataclass(frozen=True)
class DataSpec:
    validation_size: int = 10_000
    train_size: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class TrainSpec:
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 10_000
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    repeats: int = 1  # training seeds per grid point (hpo.config.repeats)


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. ``source`` is the file it came from, if any."""

    name: str
    metric: str
    direction: str
    storage: str | None
    budget: BudgetSpec
    sampler: SamplerSpec
    pruner: PrunerSpec
    data: DataSpec
    train: TrainSpec
    space: dict[str, Param]
    source: str | None = None
    claims: tuple[Claim, ...] = ()  # hypotheses to judge (hpo.config.claims); no effect on trials
    # A grid given point by point rather than as the space's product: a confirm study's top
    # configurations (hpo.config.confirm). Never from a study file.
    points: tuple[dict[str, Any], ...] = ()

    def resolved(self) -> dict[str, Any]:
        """The study as plain JSON-able data, every default filled in (claims only if any)."""
        out = asdict(self)
        out.pop("source")
        if not self.claims:
            out.pop("claims")
        if self.points:
            out["points"] = [dict(p) for p in self.points]
        else:  # study files (never given points) keep their fingerprint
            out.pop("points")
        if self.train.repeats == 1:  # study files from before repeats keep their fingerprint
            out["train"].pop("repeats")
        out["space"] = {name: _param_dict(p) for name, p in self.space.items()}
        if out["pruner"]["wrapped"] is not None:  # the outer pruner's warm-up holds for both
            out["pruner"]["wrapped"].pop("warmup")
        return out

    def fingerprint(self) -> str:
        """Hash of what decides the trials: everything but the storage, budget and claims.

        A list's ``kind`` counts only where the file gives it. Left to the default, the kind is
        the one the study was created with (stored in its resolved spec, read back by
        :func:`kinds_as_created`): a study created before numeric lists became ordinal keeps
        its categorical lists, and its unchanged file still fits it. The pruner's ``warmup``
        never counts, for the same reason (:func:`hpo.config.pruners.as_created`).
        """
        data = self.resolved()
        for key in ("storage", "budget", "claims"):
            data.pop(key, None)
        data["pruner"].pop("warmup")
        for name, param in self.space.items():
            if isinstance(param, Choice) and not param.given:
                data["space"][name].pop("kind")
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_kind(self, kind: str) -> StudySpec:
        """The study with every list of numbers searched as ``kind``, as if the file said so."""
        space = {
            name: replace(p, kind=kind, given=True)
            if isinstance(p, Choice) and is_numeric(p.choices)
            else p
            for name, p in self.space.items()
        }
        return replace(self, space=space)

    @property
    def is_grid(self) -> bool:
        return self.sampler.name == "grid"

    def grid(self) -> list[dict[str, Any]]:
        """The grid points (searched values only), each once: the given ``points`` if any,
        else every combination of the space's values."""
        if self.points:
            return [dict(p) for p in self.points]
        return grid_points(self.space)


def _param_dict(param: Param) -> dict[str, Any]:
    data = asdict(param)
    if "choices" in data:
        data["choices"] = list(data["choices"])
        data.pop("given")
    return {"type": type(param).__name__, **data}


#: The study attribute holding the resolved study file (``hpo.coord.study.SPEC_ATTR``).
SPEC_ATTR = "hpo:spec"


def kinds_as_created(space: Mapping[str, Param], stored: Mapping[str, Any] | None) -> dict:
    """``space`` with each list's kind as its study was created, where the file left it open.

    ``stored`` is the study's resolved spec (``None`` for a study hpo did not create: then the
    file decides). A list stored without a kind predates ordinal lists: it is categorical.
    """
    out = dict(space)
    stored_space = (stored or {}).get("space", {})
    for name, param in space.items():
        entry = stored_space.get(name)
        if isinstance(param, Choice) and not param.given and isinstance(entry, dict):
            kind = entry.get("kind", "categorical") if entry.get("type") == "Choice" else None
            if kind in KINDS and kind != param.kind:
                out[name] = replace(param, kind=kind)
    return out


def categorical_numbers(stored: Mapping[str, Any] | None) -> list[str]:
    """Names of lists of numbers that a study searches as categorical (see :func:`explain`)."""
    return [
        name
        for name, entry in (stored or {}).get("space", {}).items()
        if isinstance(entry, dict)
        and entry.get("type") == "Choice"
        and entry.get("kind", "categorical") == "categorical"
        and len(entry.get("choices", ())) > 1
        and is_numeric(entry["choices"])
    ]


def explain(stored: Mapping[str, Any] | None) -> str | None:
    """Why a study's plots order some numbers as text, or ``None`` when none do."""
    names = categorical_numbers(stored)
    if not names:
        return None
    legacy = any("kind" not in stored["space"][n] for n in names)
    why = (
        "the study was created before lists of numbers became ordinal"
        if legacy
        else 'the study file says kind = "categorical"'
    )
    return (
        f"{', '.join(names)}: lists of numbers searched as categorical ({why}); "
        "optuna-dashboard's contour and rank plots order their axes as text (128 before 16) "
        "and the samplers ignore their order. A new study.name with the same file makes them "
        "ordinal."
    )


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Raises:
        SpecError: the file is missing, is not TOML, or fails validation; the message starts
            with the file's path and names the key.
    """
    path = Path(path)
    raw = parse_toml(read_text(path), str(path))
    try:
        return parse_spec(raw, source=str(path))
    except SpecError as err:
        raise SpecError(str(err), str(path)) from None


def read_text(path: Path) -> str:
    """The study file's text: a regular file of at most :data:`MAX_FILE_BYTES`, in UTF-8.

    A FIFO or a device (``/dev/zero``) would block or never end, so only regular files are
    read, and only so far. A UTF-8 byte-order mark (as some Windows editors write) is dropped.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise SpecError("not a regular file; give the path of a .toml study file", str(path))
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise SpecError(f"cannot read the study file: {err.strerror or err}", str(path)) from None
    except ValueError as err:  # a path with a NUL byte (only from Python; argv cannot hold one)
        raise SpecError(f"cannot read the study file: {err}", str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(
            f"is larger than {MAX_FILE_BYTES // 1024} KiB; is it really a study file?", str(path)
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8",
            str(path),
        ) from None


def parse_toml(text: str, source: str | None = None) -> dict[str, Any]:
    """Parse TOML text; every way it can fail is one :class:`SpecError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"not valid TOML: {err}", source) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise SpecError("not valid TOML: arrays or tables nested too deeply", source) from None


def parse_spec(raw: dict[str, Any], source: str | None = None) -> StudySpec:
    """Validate a study given as a dict (the parsed TOML)."""
    _only(raw, "", {"study", "budget", "sampler", "pruner", "data", "train", "space", "claim"})
    study = _table(raw, "study", required=True)
    _only(study, "study", {"name", "metric", "direction", "storage"})
    name = _get(study, "study.name", str, required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise SpecError(
            f"study.name must be letters, digits, '_', '.' or '-' (it names files), got {name!r}"
        )
    metric = _get(study, "study.metric", str, "val_loss")
    if metric not in METRICS:
        raise SpecError(f"study.metric must be one of {list(METRICS)}, got {metric!r}")
    direction = _get(study, "study.direction", str, METRICS[metric])
    if direction != METRICS[metric]:
        raise SpecError(
            f"study.direction {direction!r} does not fit study.metric {metric!r}, which must "
            f"be {METRICS[metric]}d; remove study.direction"
        )
    storage = _get(study, "study.storage", str, None)
    if storage is not None and not storage.strip():
        raise SpecError("study.storage is empty; remove it to use the default SQLite file")

    budget = _budget(_table(raw, "budget"))
    sampler = _sampler(_table(raw, "sampler"))
    pruner = _pruner(_table(raw, "pruner"), "pruner")
    data = _data(_table(raw, "data"))
    train = _train(_table(raw, "train"))
    space_raw = _table(raw, "space")
    space = parse_space(space_raw)
    if sampler.name == "bruteforce":
        space = _enumerable(space)
    claims = parse_claims(raw.get("claim"), space)

    if train.repeats > 1 and sampler.name != "grid":
        raise SpecError(
            f"train.repeats needs sampler 'grid' (each grid point trained under {train.repeats} "
            f"seeds); sampler {sampler.name!r} proposes its own points: remove train.repeats"
        )
    build_sampler(sampler.name, sampler.options, sampler.seed)
    if sampler.name == "cmaes" and "x0" in sampler.options:
        _check_x0(sampler.options["x0"], space)
    build_pruner(pruner)
    if sampler.name in FINITE_SAMPLERS:
        try:
            points = grid_points(space)
        except SpecError as err:
            raise SpecError(f"sampler {sampler.name!r}: {err}") from None
        if not searched(space):
            raise SpecError(f"sampler {sampler.name!r} needs at least one searched parameter")
        if budget.n_trials is not None and budget.n_trials > len(points) * train.repeats:
            times = f" × {train.repeats} repeats" if train.repeats > 1 else ""
            raise SpecError(
                f"budget.n_trials={budget.n_trials} exceeds the grid's {len(points)} points"
                f"{times}; remove budget.n_trials to run the whole grid"
            )
        if sampler.name == "bruteforce" and budget.n_trials is None:
            # The grid's budget is set where its points are enqueued; brute force draws its own
            # points, and past the space's size it would only repeat them.
            budget = replace(budget, n_trials=len(points))
    elif budget.n_trials is None and budget.timeout_seconds is None:
        raise SpecError("budget needs n_trials, timeout_minutes, or both")
    return StudySpec(
        name,
        metric,
        direction,
        storage,
        budget,
        sampler,
        pruner,
        data,
        train,
        space,
        source,
        claims,
    )


def _enumerable(space: dict[str, Param]) -> dict[str, Param]:
    """Brute force enumerates each distribution's values: a list it cannot enumerate exactly
    (not evenly spaced, so searched with snapping) is categorical unless the file says otherwise.
    """
    out = dict(space)
    for name, p in space.items():
        if isinstance(p, Choice) and p.ordinal and not exact(p.choices):
            if p.given:
                raise SpecError(
                    f"sampler 'bruteforce' enumerates every value of a range, and space.{name}'s "
                    'numbers are not evenly spaced; remove kind = "ordinal"'
                )
            out[name] = replace(p, kind="categorical")
    return out


def _check_x0(x0: dict[str, Any], space: dict[str, Param]) -> None:
    """CMA-ES's start point: a value in range for each range every trial has, and no other.

    CMA-ES searches the numeric parameters common to all trials (ranges and ordinal lists, not
    categorical lists, not parameters that only some depths or optimizers have), and Optuna
    asserts at the first trial that ``x0`` gives exactly those.
    """
    depth = min(values_of(space["depth"]))
    optimizers = values_of(space["optimizer"])

    def in_every_trial(name: str) -> bool:
        if name.startswith("units_"):
            return int(name.split("_")[1]) <= depth
        return name != "momentum" or all(o in MOMENTUM_OPTIMIZERS for o in optimizers)

    ranges = {
        name: (p.low, p.high) if isinstance(p, (IntRange, FloatRange)) else _span(p)
        for name, p in space.items()
        if (isinstance(p, (IntRange, FloatRange)) or (isinstance(p, Choice) and p.ordinal))
        and len(_span(p)) == 2
        and in_every_trial(name)
    }
    for name in sorted(set(x0) - set(ranges)):
        raise SpecError(
            f"sampler.options.x0.{name}: CMA-ES searches only the ranges and ordinal lists "
            "every trial has "
            f"({', '.join(ranges) or 'none here'}); remove it"
        )
    for name in sorted(set(ranges) - set(x0)):
        raise SpecError(f"sampler.options.x0 needs a start for every range: {name} is missing")
    for name, value in x0.items():
        low, high = ranges[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            raise SpecError(
                f"sampler.options.x0.{name} must lie in space.{name}'s range "
                f"{low}..{high}, got {value!r}"
            )


def _span(param: Param) -> tuple[Any, ...]:
    """(low, high) of a range or a list with more than one value; () for anything else."""
    if isinstance(param, (IntRange, FloatRange)):
        return (param.low, param.high)
    if isinstance(param, Choice) and len(param.choices) > 1:
        return (min(param.choices), max(param.choices))
    return ()


def _budget(raw: dict[str, Any]) -> BudgetSpec:
    _only(raw, "budget", {"n_trials", "timeout_minutes", "max_retries"})
    n_trials = _get(raw, "budget.n_trials", int, None, low=1, high=MAX_TRIALS)
    minutes = _get(
        raw, "budget.timeout_minutes", float, None, low=0, strict_low=True, high=MAX_MINUTES
    )
    retries = _get(raw, "budget.max_retries", int, 2, low=0, high=MAX_RETRIES)
    return BudgetSpec(n_trials, minutes * 60 if minutes is not None else None, retries)


def _sampler(raw: dict[str, Any]) -> SamplerSpec:
    _only(raw, "sampler", {"name", "seed", "options"})
    return SamplerSpec(
        name=_get(raw, "sampler.name", str, "tpe"),
        seed=_get(raw, "sampler.seed", int, 0, low=0, high=MAX_SEED),
        options=_table(raw, "options", prefix="sampler"),
    )


def _pruner(raw: dict[str, Any], key: str) -> PrunerSpec:
    _only(raw, key, {"name", "options", "wrapped"})
    wrapped = _table(raw, "wrapped", prefix=key) if "wrapped" in raw else None
    return PrunerSpec(
        name=_get(raw, f"{key}.name", str, "median"),
        options=_table(raw, "options", prefix=key),
        wrapped=_pruner(wrapped, f"{key}.wrapped") if wrapped is not None else None,
    )


def _data(raw: dict[str, Any]) -> DataSpec:
    _only(raw, "data", {"validation_size", "train_size", "seed"})
    val = _get(raw, "data.validation_size", int, 10_000, low=1, high=FULL_TRAIN - 1)
    train = _get(raw, "data.train_size", int, None, low=1, high=FULL_TRAIN - val)
    return DataSpec(val, train, _get(raw, "data.seed", int, 0, low=0, high=MAX_SEED))


def _train(raw: dict[str, Any]) -> TrainSpec:
    _only(raw, "train", {"seed", "device", "eval_batch_size", "early_stopping", "repeats"})
    device = _get(raw, "train.device", str, "cpu")
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", device):
        raise SpecError(f"train.device must be cpu, cuda, cuda:N, mps or auto, got {device!r}")
    early = _table(raw, "early_stopping", prefix="train")
    _only(early, "train.early_stopping", {"patience", "min_delta"})
    if early and "patience" not in early:
        raise SpecError("train.early_stopping needs 'patience' (epochs without improvement)")
    repeats = _get(raw, "train.repeats", int, 1, low=1, high=MAX_REPEATS)
    return TrainSpec(
        seed=_get(raw, "train.seed", int, 0, low=0, high=MAX_SEED - repeats + 1),
        device=device,
        eval_batch_size=_get(raw, "train.eval_batch_size", int, 10_000, low=1, high=MAX_BATCH),
        early_stopping_patience=_get(
            early, "train.early_stopping.patience", int, None, low=1, high=MAX_EPOCHS
        ),
        early_stopping_min_delta=_get(
            early, "train.early_stopping.min_delta", float, 0.0, low=0, high=MAX_DELTA
        ),
        repeats=repeats,
    )


def _only(raw: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            full = f"{where}.{key}" if where else key
            raise SpecError(f"unknown key '{full}'; allowed here: {', '.join(sorted(allowed))}")


def _table(
    raw: dict[str, Any], key: str, required: bool = False, prefix: str = ""
) -> dict[str, Any]:
    full = f"{prefix}.{key}" if prefix else key
    if key not in raw:
        if required:
            raise SpecError(f"missing table [{full}]")
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise SpecError(f"'{full}' must be a table, got {value!r}")
    return dict(value)


_MISSING = object()


def _get(
    raw: dict[str, Any],
    key: str,
    kind: type,
    default: Any = _MISSING,
    *,
    required: bool = False,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in raw:
        if required or default is _MISSING:
            raise SpecError(f"missing key '{key}'")
        return default
    value = raw[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = _as_float(key, value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SpecError(
            f"'{key}' must be {'a' if kind is not int else 'an'} {kind.__name__}, got {value!r}"
        )
    if kind is float and not math.isfinite(value):  # NaN passes every comparison below
        raise SpecError(f"'{key}' must be a finite number, got {value!r}")
    if low is not None and (value < low or (strict_low and value == low)):
        raise SpecError(f"'{key}' must be {'>' if strict_low else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise SpecError(f"'{key}' must be <= {high}, got {value!r}")
    return value


def _as_float(key: str, value: int) -> float:
    try:
        return float(value)
    except OverflowError:  # TOML integers have no size limit in tomllib
        raise SpecError(
            f"'{key}' is too large, got an integer of {len(str(value))} digits"
        ) from None


__all__ = [
    "BudgetSpec",
    "DataSpec",
    "Fixed",
    "PrunerSpec",
    "SamplerSpec",
    "StudySpec",
    "TrainSpec",
    "load_spec",
    "parse_spec",
]
