"""Name → factory registries, with option checking that names the bad key.

Samplers, pruners and optimizers are looked up by the name a study file gives; their options
are passed through as keyword arguments. :func:`build` turns an unknown name, an unknown option
or a rejected value into a :class:`~hpo.errors.SpecError` that names the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

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
) -> Any:
    """Call the factory for ``name`` with ``options`` (plus ``reserved`` arguments hpo sets).

    Raises:
        SpecError: unknown name, unknown option, an option hpo sets itself, or a value the
            factory rejects.
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
    try:
        return factory(**options, **reserved)
    except (TypeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(
            f"{kind} {name!r} rejected its options {dict(options)!r}: {first_line}"
        ) from None
