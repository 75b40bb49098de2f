"""What one flush makes durable: telemetry rows, dead letters, device state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ingest.acks import Ticket
from ingest.dead_letters import DeadLetter
from ingest.validate import Accepted, DeviceUpdate, TelemetryRow


@dataclass(slots=True)
class Batch:
    started_at: float = field(default_factory=time.monotonic)
    rows: list[TelemetryRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    device_updates: list[DeviceUpdate] = field(default_factory=list)
    dedup_keys: list[str] = field(default_factory=list)
    # One per micro-batch (the messages of a micro-batch share one ticket); each gets one
    # part completed when this batch is durable.
    tickets: list[Ticket] = field(default_factory=list)
    messages: int = 0  # accepted and rejected messages in it

    def __len__(self) -> int:
        return self.messages

    def add_accepted(self, accepted: Accepted) -> None:
        if accepted.row is not None:
            self.rows.append(accepted.row)
        self.device_updates.append(accepted.device_update)
        if accepted.dedup_key is not None:
            self.dedup_keys.append(accepted.dedup_key)

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)

    def add_ticket(self, ticket: Ticket, messages: int) -> None:
        """`messages` accepted or rejected messages were added under `ticket`."""
        if not self.messages:
            # The batch's age (for ingest_batch_ms) counts from its first message.
            self.started_at = time.monotonic()
        self.messages += messages
        self.tickets.append(ticket)
