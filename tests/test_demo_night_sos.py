"""`carewatch demo night-sos`: the real pipeline (run-all, the fake providers pushing their
receipts, PostgreSQL, Redis, Mosquitto of this test) at night whatever the wall clock
says, and with --daytime (no night window: only the undelivered receipt rings the phone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from carewatch.settings import Settings
from harness.pipeline import CAREWATCH, settings_env
from harness.services import free_port

ROW = re.compile(r"^\| \+(\d+\.\d{3}) s \| (\S+) \| (.*) \|$")


def run_demo(
    settings: Settings, tmp_path: Path, *extra: str
) -> tuple[str, list[tuple[int, str, str]]]:
    fake, ack = f"http://127.0.0.1:{free_port()}", free_port()
    s = settings.model_copy(
        update={
            "ack_port": ack,
            "ack_base_url": f"http://127.0.0.1:{ack}",
            "operator_port": free_port(),
            "callbacks_port": free_port(),
            "aliyun_sms_endpoint": f"{fake}/aliyun-sms/",
            "aliyun_voice_endpoint": f"{fake}/aliyun-voice/",
            "tencent_sms_endpoint": f"{fake}/tencent-sms/",
            "wecom_base_url": f"{fake}/wecom",
        }
    )
    out = tmp_path / "night.md"
    done = subprocess.run(
        [CAREWATCH, "demo", "night-sos", "--out", str(out), *extra],
        env=settings_env(s),
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        text=True,
    )
    print(done.stdout)  # the run, for -s
    assert done.returncode == 0, done.stdout + done.stderr
    markdown = out.read_text(encoding="utf-8")
    rows = [
        (round(float(m[1]) * 1000), m[2], m[3])
        for line in markdown.splitlines()
        if (m := ROW.match(line))
    ]
    return markdown, rows


def first(rows: list[tuple[int, str, str]], tag: str, contains: str = "") -> int:
    return next(ms for ms, t, what in rows if t == tag and contains in what)


def test_night_sos_rings_at_once_and_key1_tells_everyone(
    settings: Settings, tmp_path: Path
) -> None:
    markdown, rows = run_demo(settings, tmp_path)
    gw = "(grid_worker)"
    press, alert = first(rows, "press"), first(rows, "alert")
    sms, call = first(rows, "sms", gw), first(rows, "call", gw)
    failed = first(rows, "receipt_sms_failed", "grid_worker:")
    key1 = first(rows, "receipt_voice_key1", "grid_worker:")
    acked, told = first(rows, "acknowledged"), first(rows, "notified_handled")
    downlink = first(rows, "downlink")
    # at night step 0 calls with its SMS; the undelivered receipt adds no second call
    assert press == 0 <= alert <= sms <= failed
    assert alert <= call <= key1 <= acked <= told
    assert acked <= downlink
    assert "voice" in next(w for _, t, w in rows if t == "escalation_step")
    assert sum(1 for _, t, w in rows if t == "call" and gw in w) == 1
    assert not [w for _, t, w in rows if t == "escalation_step" and "step 0" not in w]
    assert f"**Press to first ring: {first(rows, 'call')} ms**" in markdown
    # every recipient's texts, numbers masked: the family is told who handles it
    assert re.search(r"短信：.*（网格员）于\d\d:\d\d接手处理", markdown)
    assert "手环：已有人前来帮助" in markdown
    assert acked <= first(rows, "wecom_card_update", gw)
    assert re.search(r"企业微信卡片按钮改为：已由.*（网格员）处理", markdown)
    headers = [line for line in markdown.splitlines() if line.startswith("- **")]
    assert any(re.search(r"\(grid_worker\) \d{3}\*{4}\d{4}\*\*$", h) for h in headers)
    assert not [h for h in headers if re.search(r"\d{11}", h)]


def test_daytime_night_sos_rings_only_after_the_undelivered_receipt(
    settings: Settings, tmp_path: Path
) -> None:
    markdown, rows = run_demo(settings, tmp_path, "--daytime")
    gw = "(grid_worker)"
    order = [
        first(rows, "press"),
        first(rows, "alert"),
        first(rows, "sms", gw),
        first(rows, "receipt_sms_failed", "grid_worker:"),
        first(rows, "voice_queued", "sms_undelivered"),
        first(rows, "call", gw),
        first(rows, "receipt_voice_key1", "grid_worker:"),
        first(rows, "acknowledged"),
        first(rows, "notified_handled"),
        first(rows, "downlink"),
    ]
    assert order == sorted(order), order
    assert "voice" not in next(w for _, t, w in rows if t == "escalation_step")
    assert [w for _, t, w in rows if t == "call"] == [
        w for _, t, w in rows if t == "call" and gw in w
    ]
    assert f"**Press to first ring: {first(rows, 'call')} ms**" in markdown
    assert "Daytime: no night window." in markdown
