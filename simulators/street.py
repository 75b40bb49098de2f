"""A synthetic but plausible street (街道) ledger, sized from the district's facility plan.

One street gets one street care centre (open 24 h), its share of the district's
community stations (staffed 08:00-20:00) and village mutual-aid points (daytime, some
unstaffed), elders scattered within ~1.5 km of the centre in grids of 50-100 elders
with one grid worker each, 1-3 family contacts per elder, a wristband for everyone and
home sensors for those living alone. The same seed always gives the same street.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import re
from dataclasses import dataclass
from datetime import time
from importlib import resources
from pathlib import Path

from registry.ledger_format import (
    ELDER_COLUMNS,
    OFFICER_COLUMNS,
    STATION_COLUMNS,
    ContactRecord,
    DeviceRecord,
    ElderRecord,
    OfficerRecord,
    StationKind,
    StationRecord,
    elder_row,
    officer_row,
    station_row,
    write_csv,
)
from simulators import geo
from simulators.names import PLACE_STEMS, SPOUSE, PhoneBook, Sex, person_name, relative

SHIPPED_PLAN = "chongqing_facility_plan.csv"
HOME_RADIUS_M = 1500.0
STATION_RADIUS_M = 1200.0
MAX_GRID_SIZE = 100  # grids then hold between 50 and 100 elders
# (care profile id, share of elders); ids are the ones seeded by migration 001.
CARE_PROFILE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("standard", 0.40),
    ("elderly_80plus", 0.25),
    ("alone", 0.20),
    ("disabled", 0.08),
    ("cognitive", 0.07),
)
ALL_DAY = (time(0, 0), time(23, 59))
STATION_HOURS = (time(8, 0), time(20, 0))
VILLAGE_HOURS = (time(8, 0), time(18, 0))
_PLAN_COLUMN_RE = re.compile(r"^(?P<facility>[a-z_]+)_(?P<year>\d{4})$")


@dataclass(frozen=True, slots=True)
class FacilityCounts:
    street_centres: int
    community_stations: int
    village_points: int


@dataclass(frozen=True, slots=True)
class Street:
    district: str
    name: str
    id_prefix: str
    lat: float
    lon: float
    facilities: FacilityCounts
    stations: list[StationRecord]
    officers: list[OfficerRecord]
    elders: list[ElderRecord]

    @property
    def grid_count(self) -> int:
        return len({e.grid_id for e in self.elders})


# ----------------------------------------------------------------------------------
# Facility plan
# ----------------------------------------------------------------------------------


def load_plan(plan_csv: Path | None = None) -> dict[str, dict[str, int]]:
    """District -> facility -> the latest planned count (columns `{facility}_{year}`)."""
    if plan_csv is None:
        text = (resources.files("simulators") / "data" / SHIPPED_PLAN).read_text("utf-8-sig")
    else:
        text = plan_csv.read_text("utf-8-sig")
    plan: dict[str, dict[str, int]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        latest: dict[str, tuple[int, int]] = {}
        for column, value in row.items():
            match = _PLAN_COLUMN_RE.match(column or "")
            if match and value and value.strip():
                year, facility = int(match["year"]), match["facility"]
                if year >= latest.get(facility, (0, 0))[0]:
                    latest[facility] = (year, int(value))
        plan[row["district"].strip()] = {f: count for f, (_, count) in latest.items()}
    return plan


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def street_facility_counts(district_plan: dict[str, int]) -> FacilityCounts:
    """Scale a district's planned facilities down to one street (or township).

    Every street or township has one care centre, so the district's centres count its
    streets; its community stations and village points are shared out evenly.
    """
    units = max(
        1, district_plan.get("street_centers", 0) + district_plan.get("township_centers", 0)
    )
    return FacilityCounts(
        street_centres=1,
        community_stations=max(1, _round(district_plan.get("community_stations", 0) / units)),
        village_points=_round(district_plan.get("village_points", 0) / units),
    )


# ----------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """A community or village with its station: elders' addresses refer to it."""

    name: str
    village: bool
    lat: float
    lon: float


class _StreetBuilder:
    def __init__(self, district: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.info = geo.district(district)
        self.district = district
        self.prefix = f"{self.info.code}-S{seed}"
        self.phones = PhoneBook(self.rng, geo.DEFAULT_AREA_CODE)
        stems = self.rng.sample(PLACE_STEMS, len(PLACE_STEMS))
        self._stems = iter(stems[1:])
        self.street_name = stems[0] + "街道"
        self.lat, self.lon = geo.random_point_within(self.rng, self.info.lat, self.info.lon, 2000)

    def _near_centre(self, radius_m: float) -> tuple[float, float]:
        """A point around the street centre, to the 6 decimals the ledger keeps (~0.1 m)."""
        lat, lon = geo.random_point_within(self.rng, self.lat, self.lon, radius_m)
        return round(lat, 6), round(lon, 6)

    def _wecom(self, role: str, suffix: object) -> str:
        return f"{role}-{self.prefix}-{suffix}".lower()

    def station(
        self,
        station_id: str,
        name: str,
        kind: StationKind,
        radius_m: float,
        hours: tuple[time, time],
    ) -> StationRecord:
        lat, lon = self._near_centre(radius_m)
        staffed = kind != "village_point" or self.rng.random() < 0.7
        phone = None
        if staffed:
            phone = self.phones.mobile() if kind == "village_point" else self.phones.landline()
        return StationRecord(
            station_id=station_id,
            name=name,
            kind=kind,
            district=self.district,
            street=self.street_name,
            lat=lat,
            lon=lon,
            phone=phone,
            wecom_userid=self._wecom("st", station_id.rsplit("-", 1)[-1]) if staffed else None,
            staffed=staffed,
            duty_start=hours[0],
            duty_end=hours[1],
        )

    def stations(self, counts: FacilityCounts) -> tuple[list[StationRecord], list[_Place]]:
        stations = [
            self.station(
                f"{self.prefix}-C1",
                f"{self.street_name}养老服务中心",
                "street_centre",
                300,
                ALL_DAY,
            )
        ]
        places = []
        kinds: tuple[tuple[StationKind, int, str, str, tuple[time, time]], ...] = (
            ("community_station", counts.community_stations, "CS", "社区养老服务站", STATION_HOURS),
            ("village_point", counts.village_points, "VP", "村互助养老点", VILLAGE_HOURS),
        )
        for kind, count, suffix, label, hours in kinds:
            for i in range(1, count + 1):
                stem = next(self._stems, None) or f"第{i}"
                place = stem + ("村" if kind == "village_point" else "社区")
                station = self.station(
                    f"{self.prefix}-{suffix}{i}",
                    stem + label,
                    kind,
                    STATION_RADIUS_M,
                    hours,
                )
                stations.append(station)
                places.append(_Place(place, kind == "village_point", station.lat, station.lon))
        return stations, places

    def officers(self) -> list[OfficerRecord]:
        """District duty officers: drawn from the district name, not the street seed, so
        every generated street of a district lists the same officers."""
        rng = random.Random(f"duty-officers:{self.district}")
        phones = PhoneBook(rng, geo.DEFAULT_AREA_CODE)
        return [
            OfficerRecord(
                officer_id=f"{self.info.code}-DO{n}",
                district=self.district,
                name=person_name(rng, rng.choice(("m", "f")), elder=False),
                phone=phones.mobile(),
                wecom_userid=f"duty-{self.info.code}-{n}".lower(),
            )
            for n in (1, 2)
        ]

    def _address(self, place: _Place) -> str:
        r = self.rng
        if place.village:
            return f"{place.name}{r.randint(1, 9)}组{r.randint(1, 60)}号"
        return f"{place.name}{r.randint(1, 30)}栋{r.randint(1, 4)}单元{r.randint(1, 18)}-{r.randint(1, 6)}号"

    def _contacts(self, elder_name: str, sex: Sex, lives_alone: bool) -> tuple[ContactRecord, ...]:
        count = self.rng.choice((1, 2, 2, 3, 3))
        contacts = []
        for k in range(count):
            if k == 0 and not lives_alone and self.rng.random() < 0.6:
                other: Sex = "f" if sex == "m" else "m"
                name, relation = person_name(self.rng, other, elder=True), SPOUSE
            else:
                name, relation = relative(self.rng, elder_name)
            wecom = (
                self._wecom("fam", self.rng.randrange(10**6)) if self.rng.random() < 0.2 else None
            )
            contacts.append(ContactRecord(name, relation, self.phones.mobile(), wecom))
        return tuple(contacts)

    def _sensors(self, n: int, profile: str) -> tuple[DeviceRecord, ...]:
        sensors = [
            DeviceRecord(f"{self.prefix}-PIR{n:05d}", "pir"),
            DeviceRecord(f"{self.prefix}-DOOR{n:05d}", "door"),
            DeviceRecord(f"{self.prefix}-WM{n:05d}", "water_meter"),
        ]
        radar_share = 0.6 if profile in ("disabled", "cognitive") else 0.25
        if self.rng.random() < radar_share:
            sensors.append(DeviceRecord(f"{self.prefix}-RAD{n:05d}", "radar"))
        return tuple(sensors)

    def elders(self, count: int, places: list[_Place]) -> list[ElderRecord]:
        homes = [self._near_centre(HOME_RADIUS_M) for _ in range(count)]
        # Grids are neighbourhoods: cut the street into pie slices of consecutive homes.
        by_angle = sorted(
            range(count), key=lambda i: math.atan2(homes[i][0] - self.lat, homes[i][1] - self.lon)
        )
        grids = max(1, math.ceil(count / MAX_GRID_SIZE))
        grid_of = {elder: g * grids // count + 1 for g, elder in enumerate(by_angle)}
        workers = {
            g: (
                person_name(self.rng, self.rng.choice(("m", "f")), elder=False),
                self.phones.mobile(),
            )
            for g in range(1, grids + 1)
        }
        profiles, weights = zip(*CARE_PROFILE_WEIGHTS, strict=True)
        elders = []
        for i, (lat, lon) in enumerate(homes):
            n, g = i + 1, grid_of[i]
            sex: Sex = self.rng.choice(("m", "f"))
            name = person_name(self.rng, sex, elder=True)
            profile = self.rng.choices(profiles, weights)[0]
            lives_alone = profile == "alone" or self.rng.random() < 0.15
            home_place = min(
                places, key=lambda p: geo.distance_m(lat, lon, p.lat, p.lon), default=None
            )
            elders.append(
                ElderRecord(
                    elder_id=f"{self.prefix}-E{n:05d}",
                    name=name,
                    phone=self.phones.mobile() if self.rng.random() < 0.7 else None,
                    district=self.district,
                    street=self.street_name,
                    address=self._address(home_place) if home_place else None,
                    lat=lat,
                    lon=lon,
                    grid_id=f"{self.prefix}-G{g:02d}",
                    grid_name=f"{self.street_name}第{g}网格",
                    grid_worker_id=f"{self.prefix}-GW{g:02d}",
                    grid_worker_name=workers[g][0],
                    grid_worker_phone=workers[g][1],
                    grid_worker_wecom=self._wecom("gw", g),
                    care_profile=profile,
                    lives_alone=lives_alone,
                    wristband_id=f"{self.prefix}-WB{n:05d}",
                    sensors=self._sensors(n, profile) if lives_alone else (),
                    contacts=self._contacts(name, sex, lives_alone),
                )
            )
        return elders


def generate_street(plan_csv: Path | None, district: str, elders: int, seed: int) -> Street:
    """Generate one street of `district` with `elders` elders (None = the shipped plan).

    Raises KeyError when the plan has no row for the district.
    """
    plan = load_plan(plan_csv)
    if district not in plan:
        raise KeyError(district)
    counts = street_facility_counts(plan[district])
    builder = _StreetBuilder(district, seed)
    stations, places = builder.stations(counts)
    return Street(
        district=district,
        name=builder.street_name,
        id_prefix=builder.prefix,
        lat=builder.lat,
        lon=builder.lon,
        facilities=counts,
        stations=stations,
        officers=builder.officers(),
        elders=builder.elders(elders, places),
    )


def write_ledger(street: Street, out_dir: Path) -> list[Path]:
    """Write stations.csv, duty_officers.csv and elders.csv in the ledger format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_csv(out_dir / "stations.csv", STATION_COLUMNS, map(station_row, street.stations)),
        write_csv(
            out_dir / "duty_officers.csv", OFFICER_COLUMNS, map(officer_row, street.officers)
        ),
        write_csv(out_dir / "elders.csv", ELDER_COLUMNS, map(elder_row, street.elders)),
    ]


def cli_generate(args: argparse.Namespace) -> int:
    """`carewatch registry generate --district --elders --seed [--plan] --out`."""
    if args.elders < 1:
        print("--elders must be at least 1")
        return 2
    try:
        street = generate_street(args.plan, args.district, args.elders, args.seed)
    except KeyError:
        known = ", ".join(load_plan(args.plan))
        print(f"district {args.district!r} is not in the facility plan; known: {known}")
        return 2
    paths = write_ledger(street, args.out)
    f = street.facilities
    print(
        f"{street.district} {street.name}: {f.street_centres} centre, {f.community_stations} "
        f"community station(s), {f.village_points} village point(s), {len(street.elders)} "
        f"elders in {street.grid_count} grid(s)"
    )
    for path in paths:
        print(f"  wrote {path}")
    return 0
