"""build_channels: one adapter per channel name, speaking to the configured providers."""

from __future__ import annotations

import httpx

from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.base import Message
from notifier.channels.registry import build_channels
from notifier.channels.wecom import WeComChannel
from tests.fake_provider_server import offline_settings, running_fake_providers


async def test_build_channels_gives_working_sms_and_wecom_adapters() -> None:
    params = {"elder_name": "王秀英", "kind_label": "跌倒", "time": "08:15", "handler": "李明"}
    async with (
        running_fake_providers(offline_settings()) as fake,
        httpx.AsyncClient() as client,
    ):
        channels = build_channels(fake.settings, client)
        assert isinstance(channels["sms"], AliyunSmsChannel)
        assert isinstance(channels["wecom"], WeComChannel)
        assert {name: ch.name for name, ch in channels.items()} == {"sms": "sms", "wecom": "wecom"}

        assert (await channels["sms"].send(Message("k1", "13800138000", "handled", params))).ok
        assert (await channels["wecom"].send(Message("k2", "liming", "handled", params))).ok
        for channel in channels.values():
            await channel.aclose()
        assert [r["provider"] for r in await fake.records()] == ["sms", "wecom"]
