"""Who is calling and what they may see.

Every caller but an admin is scoped to a node of the region tree (migration 070:
市 -> 区县 -> 街道/乡镇 -> 社区/村 -> 网格) and sees the elders, and their alerts, whose
grid lies in that node's subtree: a city operator everything, a district operator
their district, a street operator their street, a grid worker their grid.

This module owns that rule. `SUBTREE_GRIDS` is the one SQL test of it (an indexed
prefix match on the materialised path); `scope_predicate` applies it to a query, and
the set of visible grids a principal carries for single-row checks (`sees_grid`) is read
with the same SQL when its token is resolved (operator_api.tokens). Nothing else
decides scope: callers add `scope_predicate` (through operator_api.db.scope_conditions)
or ask `sees_grid`. Building SQL here is no I/O: this module stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, LiteralString

Role = Literal["operator", "grid_worker", "admin"]
ROLES: tuple[Role, ...] = ("operator", "grid_worker", "admin")
ALL_DISTRICTS = "*"
Level = Literal["city", "district", "street", "community", "grid"]

# The grids in the subtree of a node, given `<node path>%` as the one parameter.
SUBTREE_GRIDS: LiteralString = (
    "SELECT sg.id FROM grids sg JOIN regions sr ON sr.id = sg.region_id WHERE sr.path LIKE %s"
)


class OutOfScope(Exception):
    """The caller asked for something outside what their token allows (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Region:
    """A node of the region tree."""

    id: int
    level: Level
    name: str
    path: str  # '/1/4/9/': ids from the root

    @property
    def subtree_pattern(self) -> str:
        """LIKE pattern of this node and everything below it (paths are digits and '/',
        nothing to escape)."""
        return self.path + "%"

    @property
    def is_root(self) -> bool:
        return self.level == "city"


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    subject_id: str
    district: str | None = None  # the district the scope lies in (None: all districts)
    grid_id: str | None = None  # the grid worker's grid (None: not a grid worker)
    region: Region | None = None  # the scope's node (None: no restriction)
    # grids of the region's subtree, read with SUBTREE_GRIDS when the token was resolved
    visible_grids: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """How this caller is named in alert_events.actor."""
        return f"{self.role}:{self.subject_id}"

    @property
    def sees_phone_numbers(self) -> bool:
        return self.role == "admin"

    @property
    def dials_contacts(self) -> bool:
        """May this caller see, in the console's alert card, the full numbers of the
        elder, their contacts and their grid workers, to call them? Dispatchers
        (operators) and admins: calling is their job. Everything else stays masked."""
        return self.role in ("operator", "admin")

    @property
    def restricted(self) -> bool:
        """Does the scope leave anything out? The city's node: no. Without a node (an
        admin): no, unless built with a district or grid but no node, which fails
        closed (sees nothing) rather than open."""
        if self.region is not None:
            return not self.region.is_root
        return self.district is not None or self.grid_id is not None

    @property
    def scope_label(self) -> str:
        """The scope in words, for page titles: '全部辖区' or the node's name."""
        if not self.restricted:
            return "全部辖区"
        if self.region is None:
            return self.grid_id or self.district or ""
        return self.region.name

    def sees_grid(self, grid_id: str) -> bool:
        """Does grid `grid_id` lie in the caller's subtree?"""
        if not self.restricted:
            return True
        return self.visible_grids is not None and grid_id in self.visible_grids

    def check_filters(self, district: str | None, grid_id: str | None) -> None:
        """Refuse explicit filters that contradict the caller's scope: another district
        than the one the scope lies in, another grid than a grid worker's own. (Any
        other filter outside the scope simply finds nothing.)"""
        if district is not None and self.district is not None and district != self.district:
            raise OutOfScope(f"district {district!r} is outside this token's scope")
        if grid_id is not None and self.grid_id is not None and grid_id != self.grid_id:
            raise OutOfScope(f"grid {grid_id!r} is outside this token's scope")


def scope_predicate(
    principal: Principal, grid_column: LiteralString = "e.grid_id"
) -> tuple[LiteralString, list[Any]] | None:
    """The SQL condition (and its parameters) that keeps a query to the rows whose
    grid (`grid_column`) the principal may see; None when nothing is left out."""
    if not principal.restricted:
        return None
    if principal.region is None:
        return "false", []
    return grid_column + " IN (" + SUBTREE_GRIDS + ")", [principal.region.subtree_pattern]


def station_predicate(principal: Principal) -> tuple[LiteralString, list[Any]] | None:
    """The SQL condition keeping a query over stations aliased `s` to those a principal
    may see: the stations inside their subtree and those on the way up to the city (the
    street centre that serves a grid worker's grid); None when nothing is left out."""
    if not principal.restricted:
        return None
    if principal.region is None:
        return "false", []
    return (
        "s.region_id IN (SELECT sr.id FROM regions sr"
        " WHERE sr.path LIKE %s OR %s LIKE sr.path || '%%')",
        [principal.region.subtree_pattern, principal.region.path],
    )


def principal_for(
    role: Role,
    subject_id: str,
    region: Region | None,
    district: str | None,
    worker_grid: str | None,
    visible_grids: frozenset[str] | None,
) -> Principal | None:
    """Build the principal of a token row; None if the token cannot be honoured.

    `region` is the token's node (operators) or the grid worker's grid node, looked up
    at request time so a reassigned worker follows their new grid at once; `district`
    the name of the district that node lies in (None for the city).
    """
    if role == "admin":
        return Principal(role, subject_id)
    if region is None:  # operator without a node, grid worker gone from the ledger
        return None
    if role == "operator":
        return Principal(
            role, subject_id, district=district, region=region, visible_grids=visible_grids
        )
    if worker_grid is None:
        return None
    return Principal(
        role,
        subject_id,
        district=district,
        grid_id=worker_grid,
        region=region,
        visible_grids=visible_grids,
    )
