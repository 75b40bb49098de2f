"""observe_many must leave a histogram exactly as observe() one by one would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from carewatch.metrics import LATENCY_BUCKETS, observe_many

amounts = st.lists(
    st.one_of(
        st.sampled_from(LATENCY_BUCKETS),  # exactly on a bound: le is inclusive
        st.floats(min_value=-1, max_value=100, allow_nan=False),
    ),
    max_size=50,
)


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(amounts)
def test_observe_many_matches_observe_one_by_one(values: list[float]) -> None:
    one_by_one = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    at_once = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for value in values:
        one_by_one.observe(value)
    observe_many(at_once, values)
    expected, got = _samples(one_by_one), _samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
