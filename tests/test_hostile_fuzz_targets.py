"""The fuzz targets in fuzz/ stay runnable: each accepts its seeds and survives a short,
deterministic burst of the plain mutation fuzzer (the long runs are manual, see
docs/security.md)."""

from __future__ import annotations

import pytest

from fuzz.run import plain_fuzz
from fuzz.targets import SEEDS, TARGETS


def test_every_target_has_seeds() -> None:
    assert set(SEEDS) == set(TARGETS)
    assert all(SEEDS[name] for name in TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_a_short_fixed_burst(name: str) -> None:
    crashes = plain_fuzz(name, TARGETS[name], SEEDS[name], seconds=30, max_runs=300, save=False)
    assert crashes == {}
