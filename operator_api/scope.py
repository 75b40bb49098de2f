"""Who is calling and what they may see. Pure: no I/O, tested without servers.

A grid worker sees the elders (and their alerts) of their own grid, an operator those
of their district (or all districts with scope '*'), an admin everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["operator", "grid_worker", "admin"]
ROLES: tuple[Role, ...] = ("operator", "grid_worker", "admin")
ALL_DISTRICTS = "*"


class OutOfScope(Exception):
    """The caller asked for something outside what their token allows (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    subject_id: str
    district: str | None = None  # only this district (None: no district restriction)
    grid_id: str | None = None  # only this grid (None: no grid restriction)

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

    def allows(self, district: str, grid_id: str) -> bool:
        """May this caller see an elder living in (district, grid)?"""
        if self.district is not None and district != self.district:
            return False
        return self.grid_id is None or grid_id == self.grid_id

    def check_filters(self, district: str | None, grid_id: str | None) -> None:
        """Refuse explicit filters that contradict the caller's scope."""
        if district is not None and self.district is not None and district != self.district:
            raise OutOfScope(f"district {district!r} is outside this token's scope")
        if grid_id is not None and self.grid_id is not None and grid_id != self.grid_id:
            raise OutOfScope(f"grid {grid_id!r} is outside this token's scope")


def principal_for(
    role: Role, subject_id: str, scope: str | None, worker_grid: tuple[str, str] | None
) -> Principal | None:
    """Build the principal of a token row; None if the token cannot be honoured.

    `worker_grid` is (grid_id, district) of the grid worker named by subject_id, looked
    up at request time so a reassigned worker follows their new grid at once.
    """
    if role == "admin":
        return Principal(role, subject_id)
    if role == "operator":
        if not scope:
            return None
        return Principal(role, subject_id, district=None if scope == ALL_DISTRICTS else scope)
    if worker_grid is None:  # grid worker deleted from the ledger: the token is dead
        return None
    grid_id, district = worker_grid
    return Principal(role, subject_id, district=district, grid_id=grid_id)
