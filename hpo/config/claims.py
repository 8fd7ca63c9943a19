"""Claims: hypotheses about the study, declared as data in ``[[claim]]`` tables.

A claim compares groups of trials. A group is a table of conditions, all of which must hold:

- ``param = value`` — the trial's ``param`` is ``value``; ``param = [v1, v2]`` — one of them;
- ``equal = ["units_1", "units_2"]`` — those parameters have one value (a balanced network);
- ``differ = ["units_1", "units_2"]`` — they do not all have one value.

A trial that lacks a parameter a condition names (``units_2`` of a one-layer network) is in no
group that names it. Four kinds of claim, each a linear contrast of group means whose sign is
the claim (so one statistic serves all; see :mod:`hpo.insight.claims`):

- ``beats``: group ``a`` has higher accuracy than group ``b``;
- ``order``: ``param``'s values in ``order`` are best first (``[128, 64, 32]``);
- ``interaction``: changing ``change.from`` to ``change.to`` gains more in group ``a`` than in
  group ``b`` (a difference of differences);
- ``fraction``: group ``a`` reaches at least ``at_least`` (e.g. 0.996) of group ``b``'s accuracy.

Any claim may add ``where`` (conditions every side shares, e.g. ``{ depth = 2 }``), ``name``
and ``metric`` (``val_accuracy``, the default, or ``test_accuracy``). Nothing is evaluated as
code. Validation checks that every named parameter exists in the space with a finite set of
values (trials almost never share a value of a continuous range) and every value is one it can
take, and that each group can occur and the groups compared are disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo.config.space import (
    MOMENTUM_OPTIMIZERS,
    FloatRange,
    Param,
    values_of,
)
from hpo.errors import SpecError

KINDS = ("beats", "order", "interaction", "fraction")
CLAIM_METRICS = ("val_accuracy", "test_accuracy")
_COMMON = {"kind", "name", "where", "metric"}
_KEYS = {
    "beats": {"a", "b"},
    "order": {"param", "order"},
    "interaction": {"a", "b", "change"},
    "fraction": {"a", "b", "at_least"},
}


@dataclass(frozen=True)
class Group:
    """Conditions on a trial's configuration; all must hold. Hashable and JSON-able data."""

    values: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    equal: tuple[tuple[str, ...], ...] = ()
    differ: tuple[tuple[str, ...], ...] = ()

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether a trial's resolved configuration meets every condition."""
        names = {n for n, _ in self.values}
        names |= {n for ns in (*self.equal, *self.differ) for n in ns}
        if any(n not in config for n in names):
            return False
        return (
            all(config[n] in allowed for n, allowed in self.values)
            and all(len({config[n] for n in ns}) == 1 for ns in self.equal)
            and all(len({config[n] for n in ns}) > 1 for ns in self.differ)
        )

    def and_(self, other: Group) -> Group:
        """Both groups' conditions at once."""
        merged: dict[str, tuple[Any, ...]] = dict(self.values)
        for name, allowed in other.values:
            mine = merged.get(name)
            merged[name] = allowed if mine is None else tuple(v for v in mine if v in allowed)
        return Group(
            tuple(sorted(merged.items())), self.equal + other.equal, self.differ + other.differ
        )

    def describe(self) -> str:
        """``units_1 = units_2, batch_size in (32, 64)``: the conditions in a few words."""
        parts = [" = ".join(ns) for ns in self.equal]
        parts += [" ≠ ".join(ns) for ns in self.differ]
        for name, allowed in self.values:
            shown = allowed[0] if len(allowed) == 1 else "(" + ", ".join(map(str, allowed)) + ")"
            parts.append(f"{name} {'=' if len(allowed) == 1 else 'in'} {shown}")
        return ", ".join(parts) or "all trials"


@dataclass(frozen=True)
class Claim:
    """One validated ``[[claim]]``: its kind and the groups (``sides``) it compares.

    ``sides`` are the groups whose mean accuracies enter the contrast, with ``weights``:
    ``beats`` and ``fraction`` have (a, b); ``interaction`` has (a∧to, a∧from, b∧to, b∧from);
    ``order`` has one group per value, best first, and is judged pair by pair. ``labels``
    describe the sides, one each.
    """

    index: int
    kind: str
    name: str
    metric: str
    statement: str  # the claim in words
    sides: tuple[Group, ...]
    labels: tuple[str, ...]
    at_least: float | None = None


def parse_claims(raw: Any, space: Mapping[str, Param]) -> tuple[Claim, ...]:
    """Validate the study file's ``claim`` array of tables against the space.

    Raises:
        SpecError: one line naming the claim (``claim[0]``) and the key.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise SpecError("'claim' must be an array of tables: write each as [[claim]]")
    return tuple(_claim(i, c, space) for i, c in enumerate(raw))


def _claim(i: int, raw: dict[str, Any], space: Mapping[str, Param]) -> Claim:
    where = f"claim[{i}]"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise SpecError(f"{where}.kind must be one of {list(KINDS)}, got {kind!r}")
    allowed = _COMMON | _KEYS[kind]
    for key in raw:
        if key not in allowed:
            raise SpecError(
                f"unknown key '{where}.{key}'; a {kind!r} claim takes: {', '.join(sorted(allowed))}"
            )
    for key in sorted(_KEYS[kind]):
        if key not in raw:
            raise SpecError(f"{where} ({kind}) needs '{key}'")
    name = raw.get("name", f"claim {i}")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{where}.name must be a non-empty string, got {name!r}")
    metric = raw.get("metric", "val_accuracy")
    if metric not in CLAIM_METRICS:
        raise SpecError(f"{where}.metric must be one of {list(CLAIM_METRICS)}, got {metric!r}")
    shared = _group(raw.get("where", {}), f"{where}.where", space)
    _possible(shared, f"{where}.where", space)

    def side(key: str) -> Group:
        group = _group(raw[key], f"{where}.{key}", space).and_(shared)
        _possible(group, f"{where}.{key}", space)
        return group

    at_least = None
    if kind == "order":
        sides, labels = _order(raw, where, space, shared)
        statement = " > ".join(labels)
    elif kind == "interaction":
        a, b = side("a"), side("b")
        _disjoint(a, b, f"{where}: groups a and b", space)
        change = raw["change"]
        if not isinstance(change, dict) or set(change) != {"param", "from", "to"}:
            raise SpecError(
                f"{where}.change must be a table {{ param = NAME, from = VALUE, to = VALUE }}, "
                f"got {change!r}"
            )
        param = _param_name(change["param"], f"{where}.change.param", space)
        start = _group({param: change["from"]}, f"{where}.change.from", space)
        end = _group({param: change["to"]}, f"{where}.change.to", space)
        _disjoint(start, end, f"{where}.change: from and to", space)
        sides = (a.and_(end), a.and_(start), b.and_(end), b.and_(start))
        for cell, label in zip(sides, ("a∧to", "a∧from", "b∧to", "b∧from"), strict=True):
            _possible(cell, f"{where} ({label})", space)
        labels = tuple(c.describe() for c in sides)
        statement = (
            f"the gain from [{start.describe()}] to [{end.describe()}] is larger in "
            f"[{a.describe()}] than in [{b.describe()}]"
        )
    else:
        a, b = side("a"), side("b")
        _disjoint(a, b, f"{where}: groups a and b", space)
        sides, labels = (a, b), (a.describe(), b.describe())
        statement = f"[{labels[0]}] beats [{labels[1]}]"
        if kind == "fraction":
            at_least = raw["at_least"]
            if (
                isinstance(at_least, bool)
                or not isinstance(at_least, (int, float))
                or not 0 < at_least <= 1.5
                or not math.isfinite(at_least)
            ):
                raise SpecError(
                    f"{where}.at_least must be a fraction such as 0.996 (of b's accuracy), "
                    f"got {at_least!r}"
                )
            at_least = float(at_least)
            statement = f"[{labels[0]}] reaches at least {100 * at_least:g}% of [{labels[1]}]"
    return Claim(i, kind, name, metric, statement, tuple(sides), tuple(labels), at_least)


def _order(
    raw: dict[str, Any], where: str, space: Mapping[str, Param], shared: Group
) -> tuple[tuple[Group, ...], tuple[str, ...]]:
    param = _param_name(raw["param"], f"{where}.param", space)
    order = raw["order"]
    if not isinstance(order, list) or len(order) < 2:
        raise SpecError(f"{where}.order must list at least two values, best first, got {order!r}")
    if len({repr(v) for v in order}) != len(order):
        raise SpecError(f"{where}.order has duplicates: {order!r}")
    sides = []
    for j, value in enumerate(order):
        group = _group({param: value}, f"{where}.order[{j}]", space).and_(shared)
        _possible(group, f"{where}.order[{j}]", space)
        sides.append(group)
    return tuple(sides), tuple(f"{param}={v}" for v in order)


def _param_name(name: Any, where: str, space: Mapping[str, Param]) -> str:
    if not isinstance(name, str) or name not in space:
        raise SpecError(
            f"{where} names no parameter of the space, got {name!r}; known: {', '.join(space)}"
        )
    return name


def _group(raw: Any, where: str, space: Mapping[str, Param]) -> Group:
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a table of conditions, got {raw!r}")
    values: list[tuple[str, tuple[Any, ...]]] = []
    equal: list[tuple[str, ...]] = []
    differ: list[tuple[str, ...]] = []
    for key, value in raw.items():
        if key in ("equal", "differ"):
            if (
                not isinstance(value, list)
                or len(value) < 2
                or len(set(map(str, value))) != len(value)
            ):
                raise SpecError(
                    f"{where}.{key} must list two or more distinct parameter names, got {value!r}"
                )
            names = tuple(_param_name(n, f"{where}.{key}", space) for n in value)
            for n in names:
                _finite(n, f"{where}.{key}", space[n])
            (equal if key == "equal" else differ).append(names)
            continue
        name = _param_name(key, f"{where}.{key}", space)
        allowed = value if isinstance(value, list) else [value]
        if not allowed:
            raise SpecError(f"{where}.{key} is an empty list; give a value or a list of values")
        for v in allowed:
            _check_value(name, v, f"{where}.{key}", space[name])
        values.append((name, tuple(allowed)))
    return Group(tuple(sorted(values)), tuple(equal), tuple(differ))


def _check_value(name: str, value: Any, where: str, param: Param) -> None:
    _finite(name, where, param)
    if not _takes(param, value):
        shown = ", ".join(map(str, values_of(param)[:12]))
        raise SpecError(f"{where}: space.{name} never takes {value!r} (it takes {shown})")


def _finite(name: str, where: str, param: Param) -> None:
    """Refuse a continuous range: trials almost never share a value of it, so a group on one
    value (or on equal values) would hold no trials."""
    if isinstance(param, FloatRange) and param.step is None:
        raise SpecError(
            f"{where}: space.{name} is a continuous range; a claim can only name a parameter "
            "with a finite set of values (give it 'choices' or a 'step')"
        )


def _takes(param: Param, value: Any) -> bool:
    """Whether ``value`` is one of the parameter's values (1 counts as 1.0, True as nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    return any(
        value == v and isinstance(v, str) == isinstance(value, str) for v in values_of(param)
    )


def _domain(name: str, space: Mapping[str, Param]) -> tuple[Any, ...] | None:
    """Every value ``name`` can take, or None for a continuous range."""
    param = space[name]
    try:
        return values_of(param)
    except ValueError:
        return None


def _possible(group: Group, where: str, space: Mapping[str, Param]) -> None:
    """Refuse a group no trial of the space can be in (it would compare nothing)."""
    reason = _why_impossible(group, space)
    if reason:
        raise SpecError(f"{where} can never occur: {reason}")


def _disjoint(a: Group, b: Group, where: str, space: Mapping[str, Param]) -> None:
    """Refuse two groups a trial can be in at once: a comparison needs separate trials."""
    if _why_impossible(a.and_(b), space) is None:
        raise SpecError(
            f"{where} overlap (a trial can be in both: [{a.describe()}] and [{b.describe()}]); "
            "make them exclusive"
        )


def _why_impossible(group: Group, space: Mapping[str, Param]) -> str | None:
    """Why no point of the space meets the group's conditions, or None if one can.

    Exact for the conditions this module has: each parameter's allowed values, the
    conditional parameters (``units_k`` needs depth >= k, ``momentum`` a momentum optimizer),
    and ``equal``/``differ`` among parameters.
    """
    allowed: dict[str, tuple[Any, ...] | None] = {n: _domain(n, space) for n in space}
    for name, values in group.values:
        domain = allowed[name]
        allowed[name] = values if domain is None else tuple(v for v in domain if v in values)
        if not allowed[name]:
            return f"{name} cannot be {' or '.join(map(str, values))} here"
    named = {n for n, _ in group.values} | {n for ns in (*group.equal, *group.differ) for n in ns}
    deepest = max((int(n.split("_")[1]) for n in named if n.startswith("units_")), default=0)
    depths = tuple(d for d in allowed["depth"] or () if d >= deepest)
    if not depths:
        return f"units_{deepest} needs depth >= {deepest}"
    if "momentum" in named and not any(o in MOMENTUM_OPTIMIZERS for o in allowed["optimizer"]):
        return f"momentum needs an optimizer with momentum ({', '.join(MOMENTUM_OPTIMIZERS)})"
    # equal: merge parameters into classes whose values must agree
    classes: list[set[str]] = []
    for names in group.equal:
        merged = set(names)
        for c in [c for c in classes if c & merged]:
            merged |= c
            classes.remove(c)
        classes.append(merged)
    for c in classes:
        common = _common([allowed[n] for n in c], [space[n] for n in c])
        if common is not None and not common:
            return f"{' = '.join(sorted(c))} share no value"
    for names in group.differ:
        if any(set(names) <= c for c in classes):
            return f"{' ≠ '.join(names)} contradicts an 'equal' condition"
        domains = [allowed[n] for n in names]
        if (
            all(d is not None and len(d) == 1 for d in domains)
            and len({d[0] for d in domains}) == 1
        ):
            return f"{' ≠ '.join(names)}: all can only be {domains[0][0]}"
    return None


def _common(domains: list[tuple[Any, ...] | None], params: list[Param]) -> tuple[Any, ...] | None:
    """Values every domain shares (None when all are continuous: assume they can meet)."""
    finite = [d for d in domains if d is not None]
    if not finite:
        return None
    common = tuple(v for v in finite[0] if all(v in d for d in finite[1:]))
    ranges = [p for d, p in zip(domains, params, strict=True) if d is None]
    return tuple(v for v in common if all(r.low <= v <= r.high for r in ranges))


__all__ = ["CLAIM_METRICS", "KINDS", "Claim", "Group", "parse_claims"]
