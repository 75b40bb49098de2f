"""HTML of the grid worker's phone page (Simplified Chinese). Pure: rows in, text out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from operator_api.labels import ago, kind_label, local_time, severity_label, status_label
from operator_api.models import AreaReport, VisitItemOut
from operator_api.report_export import HEADERS, PERIOD_LABELS, row_cells, title

Row = dict[str, Any]

_STYLE = """
*{box-sizing:border-box}
body{margin:0;font-family:-apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",
"WenQuanYi Micro Hei",sans-serif;
background:#f2f4f7;color:#1d2129;font-size:17px;line-height:1.45}
header{background:#c4302b;color:#fff;padding:16px}
header h1{margin:0;font-size:21px}
header p{margin:4px 0 0;font-size:14px;opacity:.9}
section{padding:12px 12px 4px}
h2{font-size:18px;margin:8px 4px 10px}
.count{display:inline-block;min-width:26px;padding:0 8px;border-radius:13px;background:#c4302b;
color:#fff;text-align:center;font-size:15px}
ul{list-style:none;margin:0;padding:0}
li{background:#fff;border-radius:12px;padding:14px 16px;margin-bottom:10px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
li.sev-critical{border-left:6px solid #c4302b}
li.sev-warning{border-left:6px solid #e8912d}
li.sev-info{border-left:6px solid #3471c4}
.kind{font-size:19px;font-weight:600}
.elder{font-size:18px}
.meta{color:#4e5969;font-size:15px}
.stale{color:#c4302b;font-weight:600}
button{display:block;width:100%;min-height:52px;margin-top:10px;border:0;border-radius:10px;
background:#c4302b;color:#fff;font-size:18px}
button.secondary{background:#3471c4}
.empty{color:#4e5969;padding:8px 4px}
.reasons{color:#86501a;font-size:15px}
.checkin{display:flex;gap:8px;flex-wrap:wrap;margin-top:8px}
.checkin input{flex:1 1 100%;min-height:44px;font-size:16px;padding:6px 10px;
border:1px solid #c9cdd4;border-radius:8px}
.checkin button{flex:1 1 0;margin-top:0;min-height:48px;font-size:16px}
.checkin button.call{background:#3471c4}
.checkin button.away{background:#86909c}
table{border-collapse:collapse;background:#fff;font-size:14px;width:100%}
th,td{border:1px solid #e5e6eb;padding:6px 8px;text-align:right;white-space:nowrap}
th{background:#f7f8fa}
td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}
tr.total td{font-weight:600;background:#fff7e8}
.scroll{overflow-x:auto}
nav a{color:#3471c4;margin-right:14px}
"""

# How many of the ranked visit list the phone page shows.
VISITS_SHOWN = 20
_CHECKIN_BUTTONS = (
    ("visited", "已走访", ""),
    ("phoned", "已电话", "call"),
    ("not_home", "未遇本人", "away"),
)

_ACTIONS: dict[str, tuple[str, str, str]] = {
    # status -> (action path, button text, css class)
    "open": ("acknowledge", "我来处理", ""),
    "acknowledged": ("resolve", "已处理完毕", "secondary"),
}

# An elder quiet for longer than this is highlighted on the page.
STALE_AFTER_S = 6 * 3600


def _alert_item(alert: Row, now: datetime) -> str:
    opened: datetime = alert["opened_at"]
    button = ""
    if alert["status"] in _ACTIONS:
        path, text, css = _ACTIONS[alert["status"]]
        button = (
            f'<form method="post" action="/m/alerts/{escape(str(alert["id"]))}/{path}">'
            f'<button type="submit" class="{css}">{text}</button></form>'
        )
    return (
        f'<li class="alert sev-{escape(alert["severity"])}" data-alert-id="{escape(str(alert["id"]))}">'
        f'<div class="kind">{escape(kind_label(alert["kind"]))}'
        f"（{escape(severity_label(alert['severity']))}）</div>"
        f'<div class="elder">{escape(alert["elder_name"])}</div>'
        f'<div class="meta">{escape(local_time(opened, now))} · {escape(ago(opened, now))}'
        f" · {escape(status_label(alert['status']))}</div>"
        f"{button}</li>"
    )


def _elder_item(elder: Row, now: datetime) -> str:
    seen: datetime | None = elder["last_sign_of_life"]
    stale = seen is None or (now - seen).total_seconds() > STALE_AFTER_S
    css = ' class="stale"' if stale else ""
    return (
        f'<li class="elder-item" data-elder-id="{escape(elder["id"])}">'
        f'<div class="elder">{escape(elder["name"])}</div>'
        f'<div class="meta"><span{css}>最后活动：{escape(ago(seen, now))}</span></div></li>'
    )


def _visit_item(item: VisitItemOut, now: datetime) -> str:
    reasons = "；".join(r.text for r in item.reasons) or "常规走访"
    last = ""
    if item.last_checkin is not None:
        c = item.last_checkin
        last = (
            f'<div class="meta">上次登记：{escape(c.outcome_label)} · '
            f"{escape(local_time(c.at, now))}</div>"
        )
    buttons = "".join(
        f'<button type="submit" name="outcome" value="{value}" class="{css}">{text}</button>'
        for value, text, css in _CHECKIN_BUTTONS
    )
    elder_id = escape(item.elder_id)
    return (
        f'<li class="visit-item" data-elder-id="{elder_id}" data-score="{item.score:g}">'
        f'<div class="elder">{escape(item.name)}</div>'
        f'<div class="meta">{escape(item.address or "")}</div>'
        f'<div class="reasons">{escape(reasons)}</div>{last}'
        f'<form class="checkin" method="post" action="/m/visits/{elder_id}/checkin">'
        f'<input name="note" maxlength="500" placeholder="备注（选填）">{buttons}</form></li>'
    )


def render_page(
    title: str,
    alerts: Sequence[Row],
    elders: Sequence[Row],
    now: datetime,
    visits: Sequence[VisitItemOut] = (),
) -> str:
    """The whole page: my open alerts first, then today's visits, then my elders."""
    alert_list = (
        "<ul>" + "".join(_alert_item(a, now) for a in alerts) + "</ul>"
        if alerts
        else '<p class="empty">暂无待处理告警</p>'
    )
    elder_list = (
        "<ul>" + "".join(_elder_item(e, now) for e in elders) + "</ul>"
        if elders
        else '<p class="empty">暂无老人</p>'
    )
    visit_list = (
        "<ul>" + "".join(_visit_item(v, now) for v in visits[:VISITS_SHOWN]) + "</ul>"
        if visits
        else '<p class="empty">暂无巡访对象</p>'
    )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>更新于 {escape(local_time(now, now))}</p></header>"
        '<section><nav><a href="/m/reports">巡访与告警统计</a></nav></section>'
        f'<section id="alerts"><h2>我的待处理告警 <span class="count">{len(alerts)}</span></h2>'
        f"{alert_list}</section>"
        f'<section id="visits"><h2>今日巡访 <span class="count">{len(visits[:VISITS_SHOWN])}</span></h2>'
        f"{visit_list}</section>"
        f'<section id="elders"><h2>我的老人</h2>{elder_list}</section>'
        "</body></html>"
    )


def render_message(title: str, message: str) -> str:
    """A bare page for errors (bad link, no access)."""
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>{escape(title)}</h1></header><section><p class="empty">{escape(message)}'
        "</p></section></body></html>"
    )


def _cell(value: object) -> str:
    return "" if value is None else escape(str(value))


def render_report(page_title: str, report: AreaReport) -> str:
    """The street and district report as a table, with its downloads."""
    query = f"period={report.period}&amp;date={report.start.isoformat()}"
    other = "month" if report.period == "week" else "week"
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join(
        f'<tr class="{"total" if r.level == "district" else "street"}">'
        + "".join(f"<td>{_cell(c)}</td>" for c in row_cells(r))
        + "</tr>"
        for r in report.rows
    )
    table = (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        if report.rows
        else '<p class="empty">暂无数据</p>'
    )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title(report))}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title(report))}</h1><p>{escape(page_title)}</p></header>"
        f'<section><nav><a href="/m">返回</a><a href="/m/reports?period={other}">'
        f"{PERIOD_LABELS[other]}</a>"
        f'<a href="/m/reports.xlsx?{query}">下载 Excel</a>'
        f'<a href="/m/reports.csv?{query}">下载 CSV</a></nav></section>'
        f"<section>{table}</section></body></html>"
    )
