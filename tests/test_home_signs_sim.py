"""The simulated home's extra signs of life (fridge contact, bathroom light, TV plug,
electricity meter): valid messages, and signs of life for the inactivity rule."""

from __future__ import annotations

from collections import Counter

from carewatch import topics
from carewatch.settings import get_settings
from ingest.validate import Accepted, validate
from rules_engine.detectors.inactivity import SignsOfLife
from rules_engine.engine import Engine
from rules_engine.evaluation.days import default_start_ms, make_elders
from rules_engine.evaluation.sim_engine import SimRulesEngine
from simulators.days import SimElder, simulate
from tests.detector_sim import TZ

KINDS = {"contact": "H-FRIDGE", "switch": "H-LIGHT", "plug": "H-TV", "power_meter": "H-METER"}


def test_home_kinds_publish_valid_signs_of_life_and_leave_other_streams_alone() -> None:
    base = make_elders(1)[0]
    fitted = SimElder(base.elder_id, base.home, {**base.devices, **KINDS}, base.profile)
    start = default_start_ms(TZ)
    plain = list(simulate([base], start, 2 * 86_400, seed=3, tz=TZ))
    more = list(simulate([fitted], start, 2 * 86_400, seed=3, tz=TZ))
    # the sensors the home already had send exactly the same messages
    assert [m for m in more if m.device_id not in KINDS.values()] == plain

    engine = SimRulesEngine([fitted], get_settings(), Engine([]), start_ms=start)
    signs = SignsOfLife()
    seen: Counter[str] = Counter()
    kinds = {v: k for k, v in KINDS.items()}
    for m in more:
        if m.device_id not in kinds:
            continue
        got = validate(
            topics.topic(m.device_id, m.kind),
            m.payload,
            engine.registry,
            received_ms=m.device_time_ms,
            max_payload_bytes=4096,
        )
        assert isinstance(got, Accepted), got
        if signs.classify(got.event) is not None:
            seen[kinds[m.device_id]] += 1
    assert set(seen) == set(KINDS)  # meals, television, night toilet trips
    assert seen["power_meter"] <= seen["contact"]  # the meter's quarter-hours are not signs
