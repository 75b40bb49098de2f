"""Run the fake Aliyun SMS + WeCom providers on a free loopback port inside a test.

async with running_fake_providers(settings) as fake:
    channel = AliyunSmsChannel(fake.settings, client)   # adapters aimed at the fake
    ...
    assert (await fake.records("sms"))[0]["out_id"] == "..."
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from carewatch.settings import Settings
from simulators.fake_providers.records import link_at_end
from simulators.fake_providers.server import (
    FakeProviders,
    bind,
    create_app,
    fake_state,
    serving,
    sms_path,
    tencent_path,
    voice_path,
    wecom_prefix,
)


@dataclass
class RunningFakeProviders:
    base_url: str  # http://127.0.0.1:{port}
    settings: Settings  # the caller's settings with both provider URLs pointing here
    state: FakeProviders  # in-process access to the records and the fake's state
    http: httpx.AsyncClient  # a client of the inspection/control endpoints

    async def records(self, provider: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if provider:
            params["provider"] = provider
        response = await self.http.get("/_records", params=params)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/_stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def fail(self, provider: str, count: int = 1, mode: str = "5xx") -> None:
        response = await self.http.post(
            "/_control/fail", json={"provider": provider, "count": count, "mode": mode}
        )
        response.raise_for_status()

    async def recover(self, provider: str) -> None:
        """End an outage injected with `fail(provider, count=many)`."""
        (
            await self.http.post("/_control/recover", params={"provider": provider})
        ).raise_for_status()

    async def expire_tokens(self) -> None:
        (await self.http.post("/_control/expire_tokens")).raise_for_status()

    async def fail_sms_delivery(self, phone: str, count: int = 1, code: str = "MK:0001") -> None:
        """The next `count` SMS to `phone` are reported undelivered (needs push_reports)."""
        body = {"phone": phone, "count": count, "code": code}
        (await self.http.post("/_control/sms_report", json=body)).raise_for_status()

    async def script_calls(self, phone: str, *outcomes: str) -> None:
        """How the next calls to `phone` end: answered, busy, no_answer, key1, key2."""
        body = {"phone": phone, "outcomes": list(outcomes)}
        (await self.http.post("/_control/calls", json=body)).raise_for_status()

    async def sms_reply(self, phone: str, content: str) -> None:
        """`phone` replies `content` to our number: an SmsUp push (needs push_reports)."""
        body = {"phone": phone, "content": content}
        (await self.http.post("/_control/sms_reply", json=body)).raise_for_status()

    async def wecom_press(
        self, userid: str, key: str, *, twice: bool = False, forge: bool = False, age_s: int = 0
    ) -> list[int]:
        """`userid` presses the button `key` of their latest WeCom card: the fake pushes
        the template_card_event (`age_s`: signed that long ago); returns the HTTP status
        of each push."""
        body = {"userid": userid, "key": key, "twice": twice, "forge": forge, "age_s": age_s}
        response = await self.http.post("/_control/wecom_press", json=body)
        response.raise_for_status()
        statuses: list[int] = response.json()["statuses"]
        return statuses

    async def push_twice(self, on: bool = True) -> None:
        (await self.http.post("/_control/push_twice", params={"on": on})).raise_for_status()

    async def pushes(self) -> list[dict[str, Any]]:
        response = await self.http.get("/_pushes")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def reset(self) -> None:
        (await self.http.post("/_control/reset")).raise_for_status()


def link_in_sms(record: dict[str, Any]) -> str:
    """The ack link at the end of a delivered SMS, as the recipient reads it."""
    link = link_at_end(str(record["text"]))
    assert link is not None, record["text"]
    return link


def offline_settings(**overrides: Any) -> Settings:
    """Settings for tests that need no database, broker or bus (only the fakes)."""
    return Settings(log_json=False, metrics_port=0, _env_file=None, **overrides)


@contextlib.asynccontextmanager
async def running_fake_providers(
    settings: Settings,
    *,
    record_file: Path | None = None,
    wecom_users: Iterable[str] | None = None,
    wecom_unlicensed: Iterable[str] = (),
    hang_s: float = 10.0,
    push_reports: bool = False,
    ring_s: float = 0.2,
) -> AsyncIterator[RunningFakeProviders]:
    """Start the fake providers on a free port for the duration of the block; with
    `push_reports`, they push delivery and call reports to settings.callbacks_port."""
    app = create_app(
        settings,
        record_file,
        wecom_users=wecom_users,
        wecom_unlicensed=wecom_unlicensed,
        hang_s=hang_s,
        push_reports=push_reports,
        ring_s=ring_s,
    )
    with bind("127.0.0.1", 0) as sock:
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        aimed = settings.model_copy(
            update={
                "aliyun_sms_endpoint": base_url + sms_path(settings),
                "wecom_base_url": base_url + wecom_prefix(settings),
                "aliyun_voice_endpoint": base_url + voice_path(settings),
                "tencent_sms_endpoint": base_url + tencent_path(settings),
            }
        )
        async with serving(app, sock), httpx.AsyncClient(base_url=base_url) as http:
            yield RunningFakeProviders(base_url, aimed, fake_state(app), http)
