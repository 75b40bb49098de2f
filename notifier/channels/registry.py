"""The channel adapters a notifier worker uses, by channel name."""

from __future__ import annotations

import httpx

from carewatch.settings import Settings
from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.aliyun_voice import AliyunVoiceChannel
from notifier.channels.base import Channel
from notifier.channels.failover import FailoverSmsChannel
from notifier.channels.tencent_sms import TencentSmsChannel
from notifier.channels.wecom import WeComChannel


def build_channels(settings: Settings, client: httpx.AsyncClient) -> dict[str, Channel]:
    """One adapter per channel name ("sms", "wecom", "voice"), all sharing the caller's
    client."""
    sms: Channel = AliyunSmsChannel(settings, client)
    if settings.tencent_secret_key is not None:  # a second SMS provider: failover
        sms = FailoverSmsChannel(
            settings, AliyunSmsChannel(settings, client), TencentSmsChannel(settings, client)
        )
    channels: list[Channel] = [
        sms,
        WeComChannel(settings, client),
        AliyunVoiceChannel(settings, client),
    ]
    return {channel.name: channel for channel in channels}
