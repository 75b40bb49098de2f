"""build_channels: one adapter per channel name, speaking to the configured providers."""

from __future__ import annotations

import httpx

from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.aliyun_voice import AliyunVoiceChannel
from notifier.channels.base import Message
from notifier.channels.registry import build_channels
from notifier.channels.wecom import WeComChannel
from tests.fake_provider_server import offline_settings, running_fake_providers


async def test_build_channels_gives_working_sms_wecom_and_voice_adapters() -> None:
    params = {"elder_name": "王秀英", "kind_label": "跌倒", "time": "08:15", "handler": "李明"}
    async with (
        running_fake_providers(offline_settings()) as fake,
        httpx.AsyncClient() as client,
    ):
        channels = build_channels(fake.settings, client)
        assert isinstance(channels["sms"], AliyunSmsChannel)
        assert isinstance(channels["wecom"], WeComChannel)
        assert isinstance(channels["voice"], AliyunVoiceChannel)
        assert {name: ch.name for name, ch in channels.items()} == {
            "sms": "sms",
            "wecom": "wecom",
            "voice": "voice",
        }

        assert (await channels["sms"].send(Message("k1", "13800138000", "handled", params))).ok
        assert (await channels["wecom"].send(Message("k2", "liming", "handled", params))).ok
        # a landline takes a call: the alert is an interactive call, an update a plain one
        called = await channels["voice"].send(Message("k3", "02363001234", "alert", params))
        assert called.ok and called.provider_message_id
        assert (await channels["voice"].send(Message("k4", "13800138000", "handled", params))).ok
        for channel in channels.values():
            await channel.aclose()
        records = await fake.records()
        assert [r["provider"] for r in records] == ["sms", "wecom", "voice", "voice"]
        assert [r["text"] for r in records[2:]] == ["IvrCall", "SingleCallByTts"]
        assert records[2]["message_id"] == called.provider_message_id
        assert records[2]["out_id"] == "k3"
