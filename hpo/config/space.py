"""The search space: which hyperparameters exist, how each is declared, and how a point is drawn.

Every hyperparameter is either fixed to a value or searched (an int/float range, or a list of
choices: ordinal for numbers, categorical for names; see :mod:`hpo.config.ordinal`). Some only
exist conditionally: ``units_k`` only when ``depth >= k`` and ``momentum`` only for optimizers
that have one. :func:`resolve` walks that structure once, asking a
``choose`` callback for each searched value, so Optuna's suggestions (in ``objective.py``) and
grid enumeration (:func:`grid_points`) follow exactly the same conditional structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hpo.config.ordinal import distribution, is_numeric
from hpo.errors import SpecError

MAX_DEPTH = 8
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
INITS = ("default", "xavier", "he")
GRID_LIMIT = 100_000


@dataclass(frozen=True)
class IntRange:
    """Integers from ``low`` to ``high`` inclusive, every ``step``, optionally on a log scale."""

    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """Floats from ``low`` to ``high``; continuous unless ``step`` is given."""

    low: float
    high: float
    step: float | None = None
    log: bool = False


KINDS = ("ordinal", "categorical")


@dataclass(frozen=True)
class Choice:
    """One of a finite list of values.

    ``kind`` is ``ordinal`` (numbers searched as numbers, see :mod:`hpo.config.ordinal`) or
    ``categorical`` (unordered labels). A list of numbers is ordinal unless the study file says
    ``kind = "categorical"``; ``given`` records whether the file said either, because a kind
    left to the default is decided when the study is created (see ``StudySpec.fingerprint``).
    """

    choices: tuple[Any, ...]
    kind: str = "categorical"
    given: bool = False

    @property
    def ordinal(self) -> bool:
        return self.kind == "ordinal"


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any


Param = IntRange | FloatRange | Choice | Fixed


@dataclass(frozen=True)
class Hyperparameter:
    """What a hyperparameter accepts: its type, a validity check and its default."""

    kind: type
    check: Callable[[Any], bool]
    accepts: str
    default: Any


def _units() -> Hyperparameter:
    return Hyperparameter(int, lambda v: 1 <= v <= 65536, "an integer from 1 to 65536", 128)


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "depth": Hyperparameter(
        int, lambda v: 1 <= v <= MAX_DEPTH, f"an integer from 1 to {MAX_DEPTH}", 2
    ),
    "units": _units(),
    **{f"units_{k}": _units() for k in range(1, MAX_DEPTH + 1)},
    "batch_size": Hyperparameter(int, lambda v: 1 <= v <= 1_000_000, "a positive integer", 64),
    "lr": Hyperparameter(float, lambda v: 0 < v <= 100, "a float in (0, 100]", 1e-3),
    "optimizer": Hyperparameter(str, lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}", "adam"),
    "momentum": Hyperparameter(float, lambda v: 0 <= v < 1, "a float in [0, 1)", 0.0),
    "epochs": Hyperparameter(int, lambda v: 1 <= v <= 10_000, "a positive integer", 5),
    "dropout": Hyperparameter(float, lambda v: 0 <= v < 1, "a float in [0, 1)", 0.0),
    "weight_decay": Hyperparameter(float, lambda v: 0 <= v <= 10, "a float in [0, 10]", 0.0),
    "l1": Hyperparameter(float, lambda v: 0 <= v <= 10, "a float in [0, 10]", 0.0),
    "activation": Hyperparameter(str, lambda v: v in ACTIVATIONS, f"one of {ACTIVATIONS}", "relu"),
    "init": Hyperparameter(str, lambda v: v in INITS, f"one of {INITS}", "default"),
}


def _check_value(name: str, value: Any, where: str) -> Any:
    hp = HYPERPARAMETERS[name]
    if hp.kind is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**53:  # float() of a 400-digit TOML integer overflows
            raise SpecError(f"{where} must be {hp.accepts}, got {value!r}")
        value = float(value)
    if not isinstance(value, hp.kind) or isinstance(value, bool):
        raise SpecError(f"{where} must be {hp.accepts}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where} must be {hp.accepts}, got {value!r}")
    if not hp.check(value):
        raise SpecError(f"{where} must be {hp.accepts}, got {value!r}")
    return value


def parse_param(name: str, raw: Any) -> Param:
    """Turn one ``[space]`` entry of a study file into a :data:`Param`, validating it.

    A scalar is fixed, a list is a choice, a table has either ``choices`` (with an optional
    ``kind``: ``ordinal``, the default for numbers, or ``categorical``) or ``low``/``high``
    (with optional ``step`` and ``log``).
    """
    key = f"space.{name}"
    if name not in HYPERPARAMETERS:
        known = ", ".join(n for n in HYPERPARAMETERS if not n.startswith("units_"))
        raise SpecError(f"unknown hyperparameter '{key}'; known: {known}, units_1..units_8")
    hp = HYPERPARAMETERS[name]
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        return Fixed(_check_value(name, raw, key))
    unknown = set(raw) - {"choices", "kind", "low", "high", "step", "log"}
    if unknown:
        raise SpecError(
            f"unknown key '{key}.{sorted(unknown)[0]}'; a parameter table takes "
            "'choices' with optional 'kind', or 'low' and 'high' with optional 'step' and 'log'"
        )
    if "choices" in raw:
        if set(raw) - {"choices", "kind"}:
            raise SpecError(f"{key}: give either 'choices' or 'low'/'high', not both")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{key}.choices must be a non-empty list, got {choices!r}")
        values = tuple(_check_value(name, v, f"{key}.choices[{i}]") for i, v in enumerate(choices))
        if len(set(values)) != len(values):
            raise SpecError(f"{key}.choices has duplicates: {list(values)!r}")
        return _checked(key, _choice(key, values, raw.get("kind")))
    if "kind" in raw:
        raise SpecError(f"{key}.kind applies to 'choices' only; a low/high range is numeric")
    if "low" not in raw or "high" not in raw:
        raise SpecError(f"{key} needs both 'low' and 'high' (or 'choices'), got {raw!r}")
    if hp.kind is str:
        raise SpecError(f"{key} takes a value or 'choices', not a range")
    low = _check_value(name, raw["low"], f"{key}.low")
    high = _check_value(name, raw["high"], f"{key}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{key}.log must be true or false, got {log!r}")
    if low >= high:
        raise SpecError(
            f"{key} is empty or inverted: low={low!r} must be below high={high!r} "
            "(for a single value write it without a table)"
        )
    if log and low <= 0:
        raise SpecError(f"{key}: a log range must be above 0, got low={low!r}")
    step = raw.get("step")
    if step is not None:
        if log:
            raise SpecError(f"{key}: 'step' and 'log' cannot be combined")
        if (
            isinstance(step, bool)
            or not isinstance(step, (int, float))
            or (isinstance(step, float) and not math.isfinite(step))  # NaN passes both tests
            or step <= 0
        ):
            raise SpecError(f"{key}.step must be a positive number, got {step!r}")
        if hp.kind is int and not isinstance(step, int):
            raise SpecError(f"{key}.step must be an integer, got {step!r}")
        if step > high - low:
            raise SpecError(f"{key}.step={step!r} is larger than the range {low!r}..{high!r}")
    if hp.kind is int:
        return IntRange(low, high, step if step is not None else 1, log)
    return FloatRange(low, high, float(step) if step is not None else None, log)


def _choice(key: str, values: tuple[Any, ...], kind: Any) -> Choice:
    numeric = is_numeric(values)
    if kind is None:
        return Choice(values, "ordinal" if numeric else "categorical")
    if kind not in KINDS:
        raise SpecError(f"{key}.kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "ordinal" and not numeric:
        raise SpecError(f"{key}.kind = 'ordinal' needs numbers, got {list(values)!r}")
    return Choice(values, kind, given=True)


def _checked(key: str, choice: Choice) -> Choice:
    """An ordinal list whose Optuna distribution cannot be built is refused here, not in a run."""
    if choice.ordinal:
        try:
            distribution(choice.choices)
        except (ValueError, OverflowError) as err:
            raise SpecError(
                f'{key}: cannot search these numbers in order ({err}); add kind = "categorical"'
            ) from None
    return choice


def parse_space(raw: Mapping[str, Any]) -> dict[str, Param]:
    """Build the full space from the ``[space]`` table: every hyperparameter, defaults filled in.

    ``units`` is the width of every hidden layer that has no ``units_k`` of its own.
    """
    given = {name: parse_param(name, value) for name, value in raw.items()}
    space: dict[str, Param] = {}
    depth = given.get("depth", Fixed(HYPERPARAMETERS["depth"].default))
    space["depth"] = depth
    max_depth = max(values_of(depth))
    per_layer = sorted(int(n.split("_")[1]) for n in given if n.startswith("units_"))
    for k in per_layer:
        if k > max_depth:
            raise SpecError(
                f"space.units_{k} can never be used: space.depth is at most {max_depth}; "
                f"remove units_{k} or raise space.depth"
            )
    layer_default = given.get("units")
    for k in range(1, max_depth + 1):
        name = f"units_{k}"
        if name in given:
            space[name] = given[name]
        elif layer_default is not None or not per_layer:
            space[name] = layer_default or Fixed(HYPERPARAMETERS["units"].default)
        else:
            raise SpecError(
                f"space.{name} is missing: space.depth can be {k}; give {name}, "
                "or 'units' for every layer without its own width"
            )
    for name, hp in HYPERPARAMETERS.items():
        if name == "units" or name.startswith("units_") or name == "depth":
            continue
        space[name] = given.get(name, Fixed(hp.default))
    optimizers = values_of(space["optimizer"])
    if "momentum" in given and not any(o in MOMENTUM_OPTIMIZERS for o in optimizers):
        raise SpecError(
            f"space.momentum is set but no optimizer in {list(optimizers)} uses momentum "
            f"(only {', '.join(MOMENTUM_OPTIMIZERS)} do); remove it or add one of those"
        )
    return space


def values_of(param: Param) -> tuple[Any, ...]:
    """Every value a parameter can take; raises ``ValueError`` for a continuous range."""
    if isinstance(param, Fixed):
        return (param.value,)
    if isinstance(param, Choice):
        return param.choices
    if isinstance(param, IntRange):
        return tuple(range(param.low, param.high + 1, param.step))
    if param.step is None:
        raise ValueError("continuous range")
    low, step = Decimal(str(param.low)), Decimal(str(param.step))
    n = int((Decimal(str(param.high)) - low) / step) + 1
    return tuple(float(low + i * step) for i in range(n))


Chooser = Callable[[str, Param], Any]


def resolve(space: Mapping[str, Param], choose: Chooser) -> dict[str, Any]:
    """Walk the space in its conditional order and return one full point.

    ``choose(name, param)`` is called for each searched parameter that exists at this point;
    fixed parameters are filled in without asking. The returned dict has every hyperparameter
    that applies (no ``units_k`` beyond the depth, no ``momentum`` for Adam).
    """

    def value(name: str) -> Any:
        param = space[name]
        return param.value if isinstance(param, Fixed) else choose(name, param)

    point: dict[str, Any] = {"depth": value("depth")}
    for k in range(1, point["depth"] + 1):
        point[f"units_{k}"] = value(f"units_{k}")
    for name in ("batch_size", "lr", "optimizer"):
        point[name] = value(name)
    if point["optimizer"] in MOMENTUM_OPTIMIZERS:
        point["momentum"] = value("momentum")
    for name in ("epochs", "dropout", "weight_decay", "l1", "activation", "init"):
        point[name] = value(name)
    return point


def searched(space: Mapping[str, Param]) -> list[str]:
    """Names of the parameters that are searched rather than fixed."""
    return [name for name, p in space.items() if not isinstance(p, Fixed)]


def grid_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every point of a finite space, each once, respecting conditional parameters.

    Returns the searched values only (what Optuna records as a trial's params). Raises
    ``SpecError`` naming the first continuous range, or when the grid is too large.
    """
    for name, param in space.items():
        try:
            values_of(param)
        except ValueError:
            raise SpecError(
                f"the grid needs a finite space, but space.{name} is a continuous range; "
                "give it 'choices' or a 'step'"
            ) from None
    points: list[dict[str, Any]] = []
    for indices in _odometer(space):
        if len(points) >= GRID_LIMIT:
            raise SpecError(f"the grid has more than {GRID_LIMIT} points; narrow the space")
        points.append(indices)
    return points


def _odometer(space: Mapping[str, Param]) -> Iterator[dict[str, Any]]:
    """Depth-first enumeration: replay ``resolve`` with a prefix of choice indices."""
    prefix: list[int] = []
    while True:
        chosen, sizes = _replay(space, prefix)
        yield chosen
        indices = prefix[: len(sizes)] + [0] * (len(sizes) - len(prefix))
        while indices and indices[-1] + 1 >= sizes[len(indices) - 1]:
            indices.pop()
        if not indices:
            return
        indices[-1] += 1
        prefix = indices


def _replay(space: Mapping[str, Param], prefix: list[int]) -> tuple[dict[str, Any], list[int]]:
    """One walk of the space taking the prefix's choice indices, then the first value."""
    chosen: dict[str, Any] = {}
    sizes: list[int] = []

    def choose(name: str, param: Param) -> Any:
        values = values_of(param)
        index = prefix[len(sizes)] if len(sizes) < len(prefix) else 0
        sizes.append(len(values))
        chosen[name] = values[index]
        return values[index]

    resolve(space, choose)
    return chosen, sizes
