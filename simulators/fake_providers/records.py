"""What the fake providers received, and the failures tests ask them to inject."""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Provider = Literal["sms", "wecom", "voice", "sms_tencent"]
# delivered: reached the recipient (with duplicate_of set: again, a duplicate the recipient
# sees; Aliyun SMS does this); duplicate: accepted but not delivered again (WeCom's
# duplicate check); rejected: the provider refused it (bad signature, number...); failed:
# injected failure. A voice call that was placed is "delivered" (the phone rang); whether
# anyone answered is in the call report the fake pushes (pushes.Pusher).
Outcome = Literal["delivered", "duplicate", "rejected", "failed"]
FailureMode = Literal["5xx", "throttle", "timeout", "timeout_after_send"]
PROVIDERS: tuple[Provider, ...] = ("sms", "wecom", "voice", "sms_tencent")
_TRAILING_LINK_RE = re.compile(r"https?://\S+$")


def link_at_end(text: str) -> str | None:
    """The link a message ends with (the alert SMS's ack link), as the recipient reads it."""
    found = _TRAILING_LINK_RE.search(text)
    return found.group(0) if found else None


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    provider: Provider
    received_ms: int
    outcome: Outcome
    address: str | None = None  # phone number(s) or WeCom touser
    template_code: str | None = None  # SMS TemplateCode, or the WeCom msgtype
    params: dict[str, Any] = field(default_factory=dict)  # template variables / message body
    text: str | None = None  # what the recipient sees
    out_id: str | None = None  # SMS OutId (the sender's idempotency key)
    dedup_key: str | None = None  # what duplicates are detected by
    duplicate_of: int | None = None  # index of the first delivery of a repeated message
    message_id: str | None = None  # BizId / msgid returned to the sender
    error: str | None = None  # provider error code of a rejection or failure

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RecordBook:
    """Every request in arrival order, in memory and optionally as JSON lines in a file."""

    def __init__(self, record_file: Path | None = None) -> None:
        self._records: list[Record] = []
        self._file = record_file
        self.gettoken_calls = 0

    def add(self, provider: Provider, received_ms: int, outcome: Outcome, **fields: Any) -> Record:
        record = Record(len(self._records), provider, received_ms, outcome, **fields)
        self._records.append(record)
        if self._file is not None:
            # A small synchronous append: the fake favours simplicity over throughput.
            with self._file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        return record

    def note_gettoken(self) -> None:
        self.gettoken_calls += 1

    def select(self, since: int = 0, provider: Provider | None = None) -> list[Record]:
        return [r for r in self._records[since:] if provider is None or r.provider == provider]

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for provider in PROVIDERS:
            counts = Counter(r.outcome for r in self._records if r.provider == provider)
            out[provider] = {
                "requests": sum(counts.values()),
                "delivered": counts["delivered"],
                "duplicates": counts["duplicate"],
                # the same message delivered to the recipient a second (third...) time
                "delivered_again": sum(
                    1
                    for r in self._records
                    if r.provider == provider
                    and r.outcome == "delivered"
                    and r.duplicate_of is not None
                ),
                "rejected": counts["rejected"],
                "failed": counts["failed"],
            }
        out["wecom"]["gettoken_calls"] = self.gettoken_calls
        return out

    def reset(self) -> None:
        self._records.clear()
        self.gettoken_calls = 0


class FailurePlan:
    """Failures to inject into the next N accepted requests of each provider."""

    def __init__(self) -> None:
        self._pending: dict[Provider, deque[FailureMode]] = {p: deque() for p in PROVIDERS}

    def inject(self, provider: Provider, count: int, mode: FailureMode) -> None:
        self._pending[provider].extend([mode] * count)

    def take(self, provider: Provider) -> FailureMode | None:
        pending = self._pending[provider]
        return pending.popleft() if pending else None

    def clear(self, provider: Provider) -> int:
        """Drop the failures still pending for one provider (an outage ends); how many."""
        dropped = len(self._pending[provider])
        self._pending[provider].clear()
        return dropped

    def pending(self) -> dict[str, int]:
        return {p: len(q) for p, q in self._pending.items()}

    def reset(self) -> None:
        for queue in self._pending.values():
            queue.clear()
