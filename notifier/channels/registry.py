"""The channel adapters a notifier worker uses, by channel name."""

from __future__ import annotations

import httpx

from carewatch.settings import Settings
from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.aliyun_voice import AliyunVoiceChannel
from notifier.channels.base import Channel
from notifier.channels.wecom import WeComChannel


def build_channels(settings: Settings, client: httpx.AsyncClient) -> dict[str, Channel]:
    """One adapter per channel name ("sms", "wecom", "voice"), all sharing the caller's
    client."""
    channels: list[Channel] = [
        AliyunSmsChannel(settings, client),
        WeComChannel(settings, client),
        AliyunVoiceChannel(settings, client),
    ]
    return {channel.name: channel for channel in channels}
