"""The grid worker's phone page (/m): over HTTP, and rendered by a real headless Chromium.

CI must install Debian's `chromium` (and `chromium-driver`) for the browser test; it is
skipped, with the reason, only when no chromium binary exists.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from harness.services import Proc
from tests.operator_support import A1, A3, Tokens, seed, serving

PHONE_W, PHONE_H = 390, 844
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def site(db_dsn: str, redis_server: Proc) -> AsyncIterator[tuple[str, Tokens]]:
    tokens = seed(db_dsn)
    async with serving(db_dsn, redis_server.port) as base:
        yield base, tokens


async def test_token_link_moves_into_a_cookie_and_page_lists_my_grid(
    site: tuple[str, Tokens],
) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        entry = await http.get("/m", params={"token": tokens.gw1})
        assert entry.status_code == 303 and entry.headers["location"] == "/m"
        cookie = entry.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = await http.get("/m")  # the client now carries the cookie
    assert page.status_code == 200
    html = page.text
    assert 'name="viewport"' in html and 'lang="zh-CN"' in html
    assert "我的待处理告警" in html and "我的老人" in html
    assert "周敏（解放碑第一网格）" in html
    assert "张秀英" in html and "紧急呼叫" in html
    assert "最后活动：12分钟前" in html
    assert A1 in html
    assert "陈淑芬" not in html and A3 not in html  # grid G3 is not theirs


async def test_bad_link_is_refused_in_chinese(site: tuple[str, Tokens]) -> None:
    base, _tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        bad = await http.get("/m", params={"token": "cwo_forged"})
        no_cookie = await http.get("/m")
    assert bad.status_code == 401 and "链接无效" in bad.text
    assert no_cookie.status_code == 401


async def test_tap_to_acknowledge_from_the_phone(site: tuple[str, Tokens], db_dsn: str) -> None:
    base, tokens = site
    async with httpx.AsyncClient(base_url=base, timeout=10, follow_redirects=True) as http:
        await http.get("/m", params={"token": tokens.gw1})
        page = await http.post(f"/m/alerts/{A1}/acknowledge")
        assert page.status_code == 200 and "处理中" in page.text
        refused = await http.post(f"/m/alerts/{A3}/acknowledge")
        assert refused.status_code == 403
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT status FROM alerts WHERE id = %s", (A1,)).fetchone()
        # the notifier stops the escalation when this change reaches it
        published = conn.execute("SELECT change_id FROM rules_outbox").fetchall()
        untouched = conn.execute("SELECT status FROM alerts WHERE id = %s", (A3,)).fetchone()
    assert row == ("acknowledged",)
    assert published == [(f"{A1}:acknowledged:2",)]
    assert untouched == ("open",)


# --------------------------------------------------------------------------------------
# Real browser
# --------------------------------------------------------------------------------------


async def _chromium(profile: Path, *args: str) -> str:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode("utf-8")


def _png_size_and_colours(data: bytes) -> tuple[int, int, int]:
    """(width, height, number of distinct pixels) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth}/{colour}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        filter_type, row = line[0], bytearray(line[1:])
        for i in range(stride):  # undo the PNG scanline filter
            left = row[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if filter_type == 1:
                row[i] = (row[i] + left) & 0xFF
            elif filter_type == 2:
                row[i] = (row[i] + up) & 0xFF
            elif filter_type == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[i] = (row[i] + pred) & 0xFF
        colours.update(bytes(row[i : i + bpp]) for i in range(0, stride, bpp * 7))
        previous = row
    return width, height, len(colours)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
async def test_phone_page_in_headless_chromium(site: tuple[str, Tokens], tmp_path: Path) -> None:
    base, tokens = site
    url = f"{base}/m?token={tokens.gw1}"
    dom = await _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert "张秀英" in dom, dom[:2000]
    assert "紧急呼叫" in dom
    assert "最后活动：" in dom
    assert "陈淑芬" not in dom

    shot = tmp_path / "phone.png"
    await _chromium(
        tmp_path / "profile-shot",
        f"--window-size={PHONE_W},{PHONE_H}",
        f"--screenshot={shot}",
        url,
    )
    width, height, colours = _png_size_and_colours(shot.read_bytes())
    assert (width, height) == (PHONE_W, PHONE_H)
    assert colours >= 4, f"only {colours} colour(s) in the screenshot: nothing was rendered"
