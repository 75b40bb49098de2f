"""Approximate district centres and small-distance geometry for synthetic streets.

The table is the only place the generator knows about Chongqing: the approximate
centre of each district's main urban area and a short code used in generated ids
(the administrative division code where there is one).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_000.0
METRES_PER_DEGREE_LAT = 111_320.0
DEFAULT_CENTRE = (29.56, 106.55)  # Chongqing, Jiefangbei
DEFAULT_AREA_CODE = "023"  # Chongqing's telephone area code


@dataclass(frozen=True, slots=True)
class District:
    name: str
    code: str
    lat: float
    lon: float


_DISTRICTS = (
    District("万州区", "500101", 30.8079, 108.4089),
    District("涪陵区", "500102", 29.7032, 107.3897),
    District("渝中区", "500103", 29.5564, 106.5685),
    District("大渡口区", "500104", 29.4843, 106.4822),
    District("江北区", "500105", 29.6064, 106.5744),
    District("沙坪坝区", "500106", 29.5411, 106.4566),
    District("九龙坡区", "500107", 29.5021, 106.5112),
    District("南岸区", "500108", 29.5230, 106.6448),
    District("北碚区", "500109", 29.8053, 106.3965),
    District("綦江区", "500110", 29.0285, 106.6512),
    District("大足区", "500111", 29.7075, 105.7224),
    District("渝北区", "500112", 29.7180, 106.6313),
    District("巴南区", "500113", 29.4020, 106.5403),
    District("黔江区", "500114", 29.5332, 108.7708),
    District("长寿区", "500115", 29.8575, 107.0808),
    District("江津区", "500116", 29.2903, 106.2594),
    District("合川区", "500117", 29.9720, 106.2763),
    District("永川区", "500118", 29.3560, 105.9271),
    District("南川区", "500119", 29.1571, 107.0989),
    District("璧山区", "500120", 29.5921, 106.2270),
    District("铜梁区", "500151", 29.8450, 106.0563),
    District("潼南区", "500152", 30.1906, 105.8401),
    District("荣昌区", "500153", 29.4050, 105.5942),
    District("开州区", "500154", 31.1608, 108.3933),
    District("梁平区", "500155", 30.6741, 107.8001),
    District("武隆区", "500156", 29.3253, 107.7600),
    District("城口县", "500229", 31.9480, 108.6643),
    District("丰都县", "500230", 29.8637, 107.7309),
    District("垫江县", "500231", 30.3273, 107.3485),
    District("忠县", "500233", 30.3004, 108.0375),
    District("云阳县", "500235", 30.9305, 108.6970),
    District("奉节县", "500236", 31.0184, 109.4641),
    District("巫山县", "500237", 31.0746, 109.8789),
    District("巫溪县", "500238", 31.3985, 109.6309),
    District("石柱县", "500240", 29.9990, 108.1123),
    District("秀山县", "500241", 28.4480, 108.9891),
    District("酉阳县", "500242", 28.8398, 108.7673),
    District("彭水县", "500243", 29.2939, 108.1659),
    District("两江新区", "LJXQ", 29.6700, 106.5500),
    District("万盛经开区", "WSJK", 28.9633, 106.9164),
)
DISTRICTS: dict[str, District] = {d.name: d for d in _DISTRICTS}


def district(name: str) -> District:
    """The table entry, or a deterministic made-up one near the default centre."""
    known = DISTRICTS.get(name)
    if known:
        return known
    digest = hashlib.sha256(name.encode()).digest()
    # up to ~0.25 degree (~25 km) away, the same for the same name on every run
    dlat = (int.from_bytes(digest[:4], "big") / 2**32 - 0.5) * 0.5
    dlon = (int.from_bytes(digest[4:8], "big") / 2**32 - 0.5) * 0.5
    code = "X" + digest.hex()[:5].upper()
    return District(name, code, DEFAULT_CENTRE[0] + dlat, DEFAULT_CENTRE[1] + dlon)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """A point a small distance (a few km) away; flat-earth approximation."""
    dlat = north_m / METRES_PER_DEGREE_LAT
    dlon = east_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def random_point_within(
    rng: random.Random, lat: float, lon: float, radius_m: float
) -> tuple[float, float]:
    """Uniformly distributed over the disc (sqrt keeps the density even)."""
    r = radius_m * math.sqrt(rng.random())
    theta = rng.uniform(0, 2 * math.pi)
    return offset(lat, lon, r * math.cos(theta), r * math.sin(theta))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))
