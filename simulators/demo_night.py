"""`carewatch demo night-sos`: one SOS at night, through the real pipeline, told as a timeline.

The demo's street and workers (simulators.demo), with the fake providers pushing their
receipts. The night window (voice_quiet_start..end) is set around the wall clock, so the
run is "at night" whatever the time of day. The fake is scripted: the grid worker's alert
SMS is reported undelivered and their call is answered with key 1. Printed (and written
as Markdown with --out): every timeline entry as an offset from the press, every text each
recipient got (numbers masked), and the time from the press to the first ring (the call
request reaching the voice provider).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec

from carewatch.logs import mask_phone
from carewatch.messages import DeviceCommand
from carewatch.settings import Settings
from carewatch.topics import topic
from simulators.demo import (
    Band,
    Demo,
    await_ingest,
    demo_settings,
    ports_free,
    prepare,
    run_demo,
    say,
    wait_for,
)

UNDELIVERED_CODE = "MK:0005"  # a carrier's "could not deliver" code, as Aliyun reports it


@dataclass(frozen=True, slots=True)
class Entry:
    offset_ms: int
    tag: str  # a stable name of the kind of entry (press, alert, sms, call, key1, ...)
    what: str


@dataclass(frozen=True, slots=True)
class NightRun:
    elder: str
    night_window: str
    entries: list[Entry]
    texts: dict[str, list[str]]  # "name (kind) 138****0001" -> what they got, in order
    press_to_ring_ms: int


def night_settings(settings: Settings, escalation_wait: float | None, daytime: bool) -> Settings:
    """The demo's settings with a night window around now (local time), or none at all
    (daytime), and the configured wait between steps."""
    s = demo_settings(settings, escalation_wait or settings.escalation_wait_s)
    now = datetime.now(ZoneInfo(s.timezone))
    start, end = now - timedelta(hours=1), now + timedelta(hours=3)
    if daytime:  # equal start and end: no night window
        start = end = now.replace(hour=0, minute=0)
    return s.model_copy(
        update={
            "voice_enabled": True,
            "voice_quiet_start": start.strftime("%H:%M"),
            "voice_quiet_end": end.strftime("%H:%M"),
        }
    )


def describe_event(action: str, actor: str, d: dict[str, Any]) -> tuple[str, str]:
    """(tag, text) of one alert_events row."""
    if action == "receipt":
        code = f" ({d.get('receipt_code')})" if d.get("receipt_code") else ""
        what = (
            f"receipt: {d.get('channel', '')} {d.get('receipt')}{code} <- {d.get('recipient', '')}"
        )
        return f"receipt_{d.get('channel', '')}_{d.get('receipt')}", what
    if action == "escalation_step":
        return action, f"escalation step {d.get('step')}: {','.join(d.get('channels', []))}"
    if action == "notified":
        what = f"notified ({d.get('purpose')}, {d.get('channel')}, step {d.get('step')})"
        return f"notified_{d.get('purpose')}", f"{what} -> {d.get('recipient')}"
    keep = {k: v for k, v in d.items() if k in ("reason", "recipient", "step")}
    extra = f" {json.dumps(keep, ensure_ascii=False)}" if keep else ""
    return action, f"{action} by {actor}{extra}"


async def night_scenario(demo: Demo, s: Settings, elder: dict[str, Any], band: Band) -> NightRun:
    gw = (
        await demo.rows(
            "SELECT gw.name, gw.phone FROM grid_workers gw JOIN elders e ON e.grid_id = gw.grid_id"
            " WHERE e.id = %s",
            elder["id"],
        )
    )[0]
    phone = gw["phone"]
    await demo.http.post(
        f"{demo.fake}/_control/sms_report", json={"phone": phone, "code": UNDELIVERED_CODE}
    )
    await demo.http.post(f"{demo.fake}/_control/calls", json={"phone": phone, "outcomes": ["key1"]})
    say()
    say(
        f"Night SOS — {elder['name']} presses SOS at {datetime.now(ZoneInfo(s.timezone)):%H:%M}"
        f" ({window(s)}); the fake reports the SMS to"
        f" {gw['name']} (grid worker, {mask_phone(phone)}) undelivered and their call answers key 1"
    )
    band_seen: list[tuple[int, DeviceCommand]] = []
    async with aiomqtt.Client(
        s.mqtt_host, s.mqtt_port, identifier=f"carewatch-demo-band-{band.device_id}"
    ) as watch:
        await watch.subscribe(topic(band.device_id, "cmd"), qos=1)

        async def listen() -> None:
            async for message in watch.messages:
                cmd = msgspec.json.decode(message.payload, type=DeviceCommand)
                band_seen.append((time.time_ns() // 1_000_000, cmd))

        listener = asyncio.create_task(listen())
        try:
            t0 = await band.event("sos")
            alert = await wait_for(
                lambda: demo.alert_for(elder["id"], "sos", t0), 20, "the SOS alert"
            )

            async def done() -> bool:
                rows = await demo.notifications(alert["id"])
                told = any(
                    r["purpose"] == "handled"
                    and r["channel"] != "downlink"
                    and r["status"] in ("sent", "delivered")
                    for r in rows
                )
                card = any(  # the callbacks app's sweep updates every card (every 2 s)
                    r["template_code"] == "update_template_card" and r["received_ms"] >= t0
                    for r in await demo.records()
                )
                return told and card and any(c.type == "help_coming" for _, c in band_seen)

            await wait_for(
                done, 60, "key 1, the 'handled' messages, the WeCom card update and the downlink"
            )
        finally:
            listener.cancel()
    return await collect(demo, s, alert, t0, band.device_id, band_seen)


async def collect(
    demo: Demo,
    s: Settings,
    alert: dict[str, Any],
    t0: int,
    device_id: str,
    band_seen: list[tuple[int, DeviceCommand]],
) -> NightRun:
    def off(ms: float) -> int:
        return int(ms - t0)

    entries = [Entry(0, "press", "SOS pressed on the wristband (device time)")]
    opened = off(alert["opened_at"].timestamp() * 1000)
    entries.append(Entry(opened, "alert", f"alert opened: {alert['kind']} / {alert['severity']}"))
    events = await demo.rows(
        "SELECT at, actor, action, details FROM alert_events WHERE alert_id = %s"
        " AND action <> 'opened' ORDER BY id",
        alert["id"],
    )
    for e in events:
        tag, what = describe_event(e["action"], e["actor"], e["details"])
        entries.append(Entry(off(e["at"].timestamp() * 1000), tag, what))
    notes = await demo.notifications(alert["id"])
    names = {
        n["address"]: f"{n['recipient_name']} ({n['recipient_kind']})"
        for n in notes
        if n["address"]
    }
    texts: dict[str, list[str]] = {}
    first_ring: int | None = None
    for r in await demo.records():
        if r["received_ms"] < t0 or r["outcome"] != "delivered":
            continue
        who = f"{names.get(r['address'], '?')} {mask_phone(r['address'] or '')}"
        if r["provider"] == "voice":
            first_ring = r["received_ms"] if first_ring is None else first_ring
            said = f"电话 {r['text']}：" + "，".join(f"{k}={v}" for k, v in r["params"].items())
            entries.append(
                Entry(off(r["received_ms"]), "call", f"phone rings: {who} ({r['text']})")
            )
        elif r["template_code"] == "update_template_card":
            said = f"企业微信卡片按钮改为：{r['text']}"
            what = f"wecom card updated (update_template_card) -> {who}"
            entries.append(Entry(off(r["received_ms"]), "wecom_card_update", what))
        else:
            body = " / ".join((r["text"] or "").splitlines())
            said = f"{'短信' if r['provider'].startswith('sms') else '企业微信'}：{body}"
            what = f"{r['provider']} accepted by the provider -> {who}"
            entries.append(Entry(off(r["received_ms"]), r["provider"], what))
        texts.setdefault(who, []).append(f"+{off(r['received_ms']) / 1000:.2f}s {said}")
    for at_ms, cmd in band_seen:
        entries.append(Entry(off(at_ms), "downlink", f"wristband shows: {cmd.text} ({cmd.type})"))
        texts.setdefault(f"wristband {device_id}", []).append(
            f"+{off(at_ms) / 1000:.2f}s 手环：{cmd.text}"
        )
    if first_ring is None:
        raise RuntimeError("no call reached the voice provider")
    entries.sort(key=lambda e: e.offset_ms)
    return NightRun(alert["elder_id"], window(s), entries, texts, off(first_ring))


def window(s: Settings) -> str:
    if s.voice_quiet_start == s.voice_quiet_end:
        return "daytime: no night window"
    return f"night window {s.voice_quiet_start}-{s.voice_quiet_end}"


def render(run: NightRun) -> list[str]:
    lines = [f"Timeline (offsets from the press; {run.night_window}):"]
    lines += [f"  +{e.offset_ms / 1000:7.3f}s  {e.tag:<22} {e.what}" for e in run.entries]
    lines += ["", "What each recipient got:"]
    for who, got in run.texts.items():
        lines.append(f"  {who}")
        lines += [f"    {t}" for t in got]
    lines += ["", f"Press to first ring: {run.press_to_ring_ms} ms"]
    return lines


def markdown(run: NightRun) -> str:
    out = ["# Night SOS (carewatch demo night-sos)", "", f"{run.night_window.capitalize()}.", ""]
    out += ["## Timeline", "", "| offset from the press | entry | what |", "|---|---|---|"]
    out += [
        f"| +{e.offset_ms / 1000:.3f} s | {e.tag} | {e.what.replace('|', '/')} |"
        for e in run.entries
    ]
    out += ["", "## What each recipient got", ""]
    for who, got in run.texts.items():
        out.append(f"- **{who}**")
        out += [f"  - {t.replace('|', '/')}" for t in got]
    out += ["", f"**Press to first ring: {run.press_to_ring_ms} ms**", ""]
    return "\n".join(out)


async def play(demo: Demo, s: Settings) -> NightRun:
    elder = (
        await demo.rows(
            "SELECT e.id, e.name, d.id AS band FROM elders e JOIN devices d"
            " ON d.elder_id = e.id AND d.kind = 'wristband' ORDER BY e.id LIMIT 1"
        )
    )[0]
    async with aiomqtt.Client(
        s.mqtt_host, s.mqtt_port, identifier="carewatch-demo-devices"
    ) as mqtt:
        band = Band(mqtt, elder["band"])
        await await_ingest(demo, band)
        say("[setup] workers running, fake providers pushing receipts")
        return await night_scenario(demo, s, elder, band)


def main(settings: Settings, args: argparse.Namespace) -> int:
    s = night_settings(settings, args.escalation_wait, args.daytime)
    if not ports_free(s) or not prepare(s):
        return 1
    result = asyncio.run(run_demo(s, play, push_reports=True))
    say()
    for line in render(result):
        say(line)
    if args.out is not None:
        args.out.write_text(markdown(result), encoding="utf-8")
        say(f"(written to {args.out})")
    return 0
