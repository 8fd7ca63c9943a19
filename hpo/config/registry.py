"""Name → factory registries, with option checking that names the bad key.

Samplers, pruners and optimizers are looked up by the name a study file gives; their options
are passed through as keyword arguments. :func:`build` turns an unknown name, an unknown option
or a rejected value into a :class:`~hpo.errors.SpecError` that names the key.
"""

from __future__ import annotations

import builtins
import inspect
import math
import sys
import types
from collections import abc
from collections.abc import Callable, Mapping
from typing import Any, Literal, Optional, Union, get_args, get_origin

from hpo.errors import SpecError


def option_names(factory: Callable[..., Any]) -> list[str]:
    """Keyword arguments a factory accepts."""
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def lookup(kind: str, registry: Mapping[str, Callable[..., Any]], name: str) -> Callable[..., Any]:
    """The factory registered under ``name``, or a SpecError listing the known names."""
    if name not in registry:
        raise SpecError(f"unknown {kind}.name {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def build(
    kind: str,
    registry: Mapping[str, Callable[..., Any]],
    name: str,
    options: Mapping[str, Any],
    reserved: Mapping[str, Any] | None = None,
    bounds: Mapping[str, Bounds] | None = None,
) -> Any:
    """Call the factory for ``name`` with ``options`` (plus ``reserved`` arguments hpo sets).

    ``bounds`` are the ranges of numeric options the factory does not check itself (Optuna
    accepts some values its constructors take, then fails on them at the first trial).

    Raises:
        SpecError: unknown name, unknown option, an option hpo sets itself, a value of the wrong
            type or out of bounds, or a value the factory rejects.
    """
    factory = lookup(kind, registry, name)
    reserved = dict(reserved or {})
    accepted = option_names(factory)
    for key in options:
        if key in reserved:
            raise SpecError(f"{kind}.options.{key} is set by hpo; remove it")
        if key not in accepted:
            allowed = ", ".join(a for a in accepted if a not in reserved) or "none"
            raise SpecError(f"unknown option {kind}.options.{key} for {name!r}; allowed: {allowed}")
    check_types(kind, factory, options)
    check_bounds(kind, options, bounds or {})
    try:
        return factory(**options, **reserved)
    except (TypeError, ValueError, ArithmeticError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(
            f"{kind} {name!r} rejected its options {dict(options)!r}: {first_line}"
        ) from None


Bounds = tuple[float | None, float | None]  # inclusive low and high; None: unbounded


def check_bounds(kind: str, options: Mapping[str, Any], bounds: Mapping[str, Bounds]) -> None:
    """Numeric options within their bounds (other values, like ``"auto"``, pass)."""
    for key, (low, high) in bounds.items():
        value = options.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            limits = " and ".join(
                f"{word} {limit:g}"
                for word, limit in (("at least", low), ("at most", high))
                if limit is not None
            )
            raise SpecError(f"{kind}.options.{key} must be {limits}, got {value!r}")


#: Every integer option of Optuna's samplers and pruners counts trials, steps, candidates or
#: resources; none needs more. Far larger ones hang (successive halving raises its reduction
#: factor to ``min_early_stopping_rate``) or allocate without end (TPE's ``n_ei_candidates``).
MAX_INT_OPTION = 10**6


def check_types(kind: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Check each option's value against the type the factory declares for it.

    The declared type is the parameter's annotation (Optuna annotates every constructor; its
    annotations are strings, resolved here without importing what Optuna imports only for type
    checkers), else the type of its default. Numbers must be finite. An option whose type no
    study file can write (a callable, a sampler object) is refused by name.

    Raises:
        SpecError: naming the option, the type it takes and the value given.
    """
    params = inspect.signature(factory).parameters
    for key, value in options.items():
        param = params[key]
        hint = _declared_type(factory, param)
        where = f"{kind}.options.{key}"
        if hint is inspect.Parameter.empty:
            continue  # nothing declared: the factory's own checks are all there is
        if not _expressible(hint):
            raise SpecError(
                f"{where} takes {param.annotation}, which a study file cannot give; remove it"
            )
        if not _matches(value, hint):
            raise SpecError(f"{where} must be {_describe(hint)}, got {value!r}")
        bad = _non_finite(value)
        if bad is not None:
            raise SpecError(f"{where} must be finite, got {bad!r}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_OPTION:
            raise SpecError(f"{where} must be at most {MAX_INT_OPTION:,} in size, got {value!r}")


class _Opaque(type):
    """Stands for a name an annotation uses but the module imports only for type checkers
    (``Callable``, ``FrozenTrial``, ``np.ndarray``): subscriptable, with any attribute."""

    def __getitem__(cls, item: Any) -> type:
        return cls

    def __getattr__(cls, name: str) -> type:
        return cls


class _Names(dict):
    """Names for evaluating an annotation: the factory's module, then builtins, else opaque."""

    def __missing__(self, key: str) -> Any:
        if hasattr(builtins, key):
            return getattr(builtins, key)
        return _Opaque(key, (), {})


_TYPING = {
    "Any": Any,
    "Literal": Literal,
    "Optional": Optional,
    "Union": Union,
    "Sequence": abc.Sequence,
    "Mapping": abc.Mapping,
}


def _declared_type(factory: Callable[..., Any], param: inspect.Parameter) -> Any:
    annotation = param.annotation
    if isinstance(annotation, str):
        owner = _defining_function(factory, param.name)
        module = sys.modules.get(getattr(owner, "__module__", "") or "")
        names = _Names({**vars(module), **_TYPING} if module else _TYPING)
        try:
            annotation = eval(annotation, {"__builtins__": {}}, names)
        except Exception:  # an annotation this cannot read: fall back to the default's type
            annotation = inspect.Parameter.empty
    if annotation is inspect.Parameter.empty and param.default not in (param.empty, None):
        annotation = type(param.default)
    return annotation


def _defining_function(factory: Callable[..., Any], name: str) -> Any:
    """Where the parameter ``name`` is declared: a class's ``__init__`` (maybe a base's)."""
    if inspect.isclass(factory):
        for cls in factory.__mro__:
            init = cls.__dict__.get("__init__")
            if init is not None and name in inspect.signature(init).parameters:
                return init
    return factory


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, types.UnionType):
        return get_args(hint)
    return (hint,)


def _expressible(hint: Any) -> bool:
    """Whether some TOML value has this type (TOML has no null, callables or objects)."""
    for option in _alternatives(hint):
        origin = get_origin(option) or option
        if option is Any or origin is Literal or option in (bool, int, float, str):
            return True
        if origin in (list, tuple, abc.Sequence, dict, abc.Mapping):
            args = [a for a in get_args(option) if a is not Ellipsis]
            if all(_expressible(a) for a in args[-1:]):
                return True
    return False


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value has the type ``hint`` (bool is no int; an int is a float)."""
    return any(_matches_one(value, option) for option in _alternatives(hint))


def _matches_one(value: Any, option: Any) -> bool:
    origin = get_origin(option) or option
    args = [a for a in get_args(option) if a is not Ellipsis]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if option is Any:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if option in (bool, str):
        return isinstance(value, option)
    if option is int:
        return number and isinstance(value, int)
    if option is float:
        return number
    if origin in (list, tuple, abc.Sequence):
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin in (dict, abc.Mapping):
        return isinstance(value, dict) and (
            len(args) < 2 or all(_matches(v, args[1]) for v in value.values())
        )
    return False


def _non_finite(value: Any) -> float | None:
    """The first NaN or infinity in a value (nested lists and tables included), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in inner:
        bad = _non_finite(item)
        if bad is not None:
            return bad
    return None


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(hint: Any) -> str:
    """The type in a study file's words: 'an integer or a string', 'a table', 'a list'."""
    words = []
    for option in _alternatives(hint):
        origin = get_origin(option) or option
        if option in _WORDS:
            words.append(_WORDS[option])
        elif origin is Literal:
            words.append("one of " + ", ".join(repr(a) for a in get_args(option)))
        elif origin in (list, tuple, abc.Sequence):
            words.append("a list")
        elif origin in (dict, abc.Mapping):
            words.append("a table")
        elif option is not type(None):
            words.append(str(option).replace("typing.", ""))
    return " or ".join(words)
