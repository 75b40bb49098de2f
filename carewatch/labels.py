"""User-facing Simplified Chinese labels for the codes stored in the database.

One table for every surface (SMS/WeCom text, the ack page, the operator API and phone
page, Grafana dashboards), so an elder's family and the operators' wall use the same words.
"""

from __future__ import annotations

KIND_LABELS: dict[str, str] = {
    "sos": "紧急呼叫",
    "fall": "跌倒",
    "inactivity": "长时间无活动",
    "vitals": "生命体征异常",
    "geofence": "走失预警",
    "smoke": "烟雾报警",
    "gas": "燃气报警",
    "leak": "漏水报警",
    "device_offline": "设备离线",
    "low_battery": "电量低",
    "off_wrist": "手环未佩戴",
    "water_none": "长时间未用水",
    "water_flow": "持续用水",
}

STATUS_LABELS: dict[str, str] = {
    "pending": "待确认",
    "open": "待处理",
    "acknowledged": "处理中",
    "resolved": "已解决",
    "cancelled": "已取消",
    "false_alarm": "误报",
}

SEVERITY_LABELS: dict[str, str] = {"critical": "紧急", "warning": "警告", "info": "提示"}
