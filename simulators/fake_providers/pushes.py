"""The fakes' pushes to our callback endpoints, as Aliyun's HTTP batch push makes them.

Aliyun POSTs a JSON array to the URL configured in its console and expects HTTP 200 with
`{"code": 0, ...}`; anything else (or no answer) is pushed again later (1, 5 and 10
minutes on). The fake pushes to `notifier.provider_callbacks` at
callbacks_host:callbacks_port under the configured secret, retries the same way on a
short scale (PUSH_RETRY_S), and can be told to push each report twice (the real service
does not promise exactly once). SMS delivery reports go in batches (SMS_REPORT_BATCH_S).

What a report says is scripted per phone number by tests and demos:
- SMS: the next N messages to a number are not delivered (`failed`, with a carrier code);
  every other message is reported DELIVERED.
- Voice: each call to a number takes the next scripted outcome: answered, busy, no_answer,
  key1, key2 (default: answered); the report comes after ring_s (the phone "rings").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict, deque
from datetime import datetime
from typing import Any, Literal

import httpx

from carewatch.settings import Settings
from notifier.channels.aliyun_sms import PROVIDER_TZ
from simulators.fake_providers.records import Record

log = logging.getLogger(__name__)

CallOutcome = Literal["answered", "busy", "no_answer", "key1", "key2"]
# VoiceReport status_code and dtmf of each scripted outcome.
CALL_REPORTS: dict[CallOutcome, tuple[str, str]] = {
    "answered": ("200000", ""),
    "busy": ("200002", ""),
    "no_answer": ("200003", ""),
    "key1": ("200000", "1"),
    "key2": ("200000", "2"),
}
PUSH_RETRY_S = (0.2, 0.5, 1.0)  # the real service: 1, 5, 10 minutes
# SMS delivery reports are pushed in batches, as the real service's batch push does (a
# JSON array of the reports it collected since the last push): those of the messages
# accepted within SMS_REPORT_BATCH_S go in one push of at most SMS_REPORT_BATCH_MAX. One
# push per message cost the fake (and the callbacks app) an HTTP exchange per SMS, which
# on the bench's machine the fake paid for by answering the next SendSms later.
SMS_REPORT_BATCH_S = 0.1
SMS_REPORT_BATCH_MAX = 100
UNDELIVERED_CODE = "MK:0001"  # a carrier's code for a message it could not deliver


def provider_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=PROVIDER_TZ).strftime("%Y-%m-%d %H:%M:%S")


class Pusher:
    def __init__(self, settings: Settings, ring_s: float = 0.2) -> None:
        secret = settings.provider_callback_secret.get_secret_value()
        self.base = (
            f"http://{settings.callbacks_host}:{settings.callbacks_port}/callbacks/{secret}/aliyun"
        )
        self.ring_s = ring_s
        self.push_twice = False
        self._sms_failures: dict[str, deque[str]] = defaultdict(deque)
        self._calls: dict[str, deque[CallOutcome]] = defaultdict(deque)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sms_reports: list[dict[str, Any]] = []  # collected for the next batch push
        self.pushes: list[dict[str, Any]] = []  # what was pushed, and how it was answered
        # one client for every push: building one (its TLS context) costs ~100 ms, which
        # would show in every "report to ring" time measured through the fake
        self._client = httpx.AsyncClient(timeout=5.0)

    def reset(self) -> None:
        self._sms_failures.clear()
        self._calls.clear()
        self.push_twice = False
        self.pushes.clear()
        self._sms_reports.clear()

    # --- scripts --------------------------------------------------------------------

    def fail_sms(self, phone: str, count: int, code: str = UNDELIVERED_CODE) -> None:
        self._sms_failures[phone[-11:]].extend([code] * count)

    def script_calls(self, phone: str, outcomes: list[CallOutcome]) -> None:
        self._calls[phone[-11:]].extend(outcomes)

    # --- reports --------------------------------------------------------------------

    def sms_delivered(self, record: Record) -> None:
        """The delivery report of one SMS the fake accepted."""
        for phone in (record.address or "").split(","):
            failures = self._sms_failures.get(phone[-11:])
            code = failures.popleft() if failures else "DELIVERED"
            item = {
                "phone_number": phone,
                "send_time": provider_time(record.received_ms),
                "report_time": provider_time(record.received_ms),
                "success": code == "DELIVERED",
                "err_code": code,
                "err_msg": "用户接收成功" if code == "DELIVERED" else "用户接收失败",
                "sms_size": "1",
                "biz_id": record.message_id or "",
                "out_id": record.out_id or "",
            }
            if not self._sms_reports:  # the first of a batch: push the batch soon
                self._spawn(self._push_sms_reports())
            self._sms_reports.append(item)

    def call_placed(self, record: Record, call_id: str) -> None:
        """The call report of one call the fake placed, after it "rang"."""
        phone = record.address or ""
        script = self._calls.get(phone[-11:])
        outcome: CallOutcome = script.popleft() if script else "answered"
        status_code, dtmf = CALL_REPORTS[outcome]
        answered = status_code == "200000"
        item = {
            "call_id": call_id,
            "callee": phone,
            "start_time": provider_time(record.received_ms) if answered else "",
            "end_time": provider_time(record.received_ms),
            "duration": "12" if answered else "0",
            "status_code": status_code,
            "status_msg": outcome,
            "out_id": record.out_id or "",
            "dtmf": dtmf,
        }
        self._spawn(self._push("voice-report", [item], self.ring_s))

    def push_sms_up(self, phone: str, content: str) -> None:
        """Someone replies to our number (SmsUp)."""
        item = {
            "phone_number": phone,
            "content": content,
            "send_time": provider_time(int(datetime.now(PROVIDER_TZ).timestamp() * 1000)),
            "dest_code": "1234",
            "sequence_id": str(secrets.randbelow(10**12)),
        }
        self._spawn(self._push("sms-up", [item], 0.0))

    # --- delivery of pushes -----------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_sms_reports(self) -> None:
        await asyncio.sleep(SMS_REPORT_BATCH_S)
        items, self._sms_reports = self._sms_reports, []
        for i in range(0, len(items), SMS_REPORT_BATCH_MAX):
            await self._push("sms-report", items[i : i + SMS_REPORT_BATCH_MAX], 0.0)

    async def _push(self, path: str, items: list[dict[str, Any]], delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)  # the phone rings / the carrier reports
        for _ in range(2 if self.push_twice else 1):
            await self._push_once(path, items)

    async def _push_once(self, path: str, items: list[dict[str, Any]]) -> None:
        status: int | str = "not sent"
        for wait_s in (0.0, *PUSH_RETRY_S):
            if wait_s:
                await asyncio.sleep(wait_s)
            try:
                response = await self._client.post(f"{self.base}/{path}", json=items)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
                continue
            status = response.status_code
            if response.status_code == 200:
                break
        self.pushes.append({"path": path, "items": items, "answer": status})
        if status != 200:
            log.info("fake provider push not taken", extra={"path": path, "answer": status})

    async def aclose(self) -> None:
        """Drop the pushes not made yet (the fake is shutting down)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
