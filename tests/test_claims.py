"""Claims: parsed and validated from the study file, then judged on synthetic trials whose
truth is known (a planted effect, or none)."""

from __future__ import annotations

import pytest
import tomllib

from hpo.config.claims import Group
from hpo.config.spec import parse_spec
from hpo.errors import SpecError

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


def test_claim_must_be_an_array_of_tables():
    with pytest.raises(SpecError, match=r"\[\[claim\]\]"):
        parse_spec({**tomllib.loads(STUDY), "claim": "a beats b"})


def test_a_group_describes_itself():
    group = Group((("batch_size", (32, 64)),), (("units_1", "units_2"),))
    assert group.describe() == "units_1 = units_2, batch_size in (32, 64)"
