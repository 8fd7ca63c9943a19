from __future__ import annotations

import pytest

from hpo.config import space as space_module
from hpo.config.space import (
    FloatRange,
    IntRange,
    grid_points,
    parse_space,
    resolve,
    values_of,
)
from hpo.errors import SpecError
from hpo.train.model import ACTIVATIONS
from hpo.train.optimizers import OPTIMIZERS


def test_space_names_match_the_registries():
    assert set(space_module.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(space_module.ACTIVATIONS) == set(ACTIVATIONS)


def test_values_of_ranges():
    assert values_of(IntRange(16, 64, 16)) == (16, 32, 48, 64)
    assert values_of(FloatRange(0.0, 0.3, 0.1)) == (0.0, 0.1, 0.2, 0.3)
    with pytest.raises(ValueError):
        values_of(FloatRange(0.0, 1.0))


def test_grid_respects_conditional_parameters():
    space = parse_space(
        {
            "depth": [1, 2],
            "units": [16, 32, 64],
            "optimizer": ["adam", "sgd"],
            "momentum": [0.0, 0.9],
        }
    )
    points = grid_points(space)
    # depth 1: 3 widths x (adam + 2 sgd momenta) = 9; depth 2: 9 widths x 3 = 27
    assert len(points) == 36
    assert len({tuple(sorted(p.items())) for p in points}) == 36
    assert all(("units_2" in p) == (p["depth"] == 2) for p in points)
    assert all(("momentum" in p) == (p["optimizer"] == "sgd") for p in points)
    assert {(p["units_1"], p.get("units_2")) for p in points if p["depth"] == 2} == {
        (a, b) for a in (16, 32, 64) for b in (16, 32, 64)
    }


def test_grid_rejects_continuous_range():
    with pytest.raises(SpecError, match=r"space\.lr is a continuous range"):
        grid_points(parse_space({"lr": {"low": 1e-4, "high": 1e-2}}))


def test_resolve_fills_fixed_values_and_skips_inactive():
    space = parse_space({"depth": 1, "units": [8, 16], "optimizer": "adam"})
    asked = []
    point = resolve(space, lambda name, param: (asked.append(name), param.choices[-1])[1])
    assert asked == ["units_1"]
    assert point["units_1"] == 16 and "units_2" not in point and "momentum" not in point
    assert point["lr"] == 1e-3 and point["activation"] == "relu"


def test_per_layer_widths_are_separate_parameters():
    space = parse_space({"depth": 2, "units_1": [64, 256], "units_2": [256, 64]})
    assert space["units_1"].choices == (64, 256) and space["units_2"].choices == (256, 64)
    points = grid_points(space)
    assert {(p["units_1"], p["units_2"]) for p in points} == {
        (64, 256),
        (64, 64),
        (256, 256),
        (256, 64),
    }
