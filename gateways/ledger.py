"""Import the gateways' part of the ledger: which devices speak which protocol, and
which platform field means what for each product. All files or nothing.

Two tables, told apart by their header (CSV or XLSX, like the elder ledger):

    device_id,protocol,imei,product          gateway devices: the device must already be
    WB0001,watch3g,8800000001,                in the ledger (registry import); protocol is
    SMK0001,ctwing,860000000000001,15000001   watch3g, iw, ctwing or onenet; imei is the id
                                              the device or platform uses (IMEI, watch id,
                                              OneNET dev_id); product for ctwing/onenet
    platform,product,field,meaning,alarm_values
    ctwing,15000001,smoke_state,smoke,1       product field mapping: meaning is smoke, gas,
    ctwing,15000001,battery_value,battery,    leak, sos, fall (alarms: alarm_values lists
                                              the values, '|'-separated, that raise it),
                                              battery, hr, temp or presence

Errors name the file, the line (header = 1), the field and the reason. A product's
mapping is replaced as a whole by an import that lists the product.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from carewatch.settings import Settings
from registry.ledger import RowError
from registry.reader import RawRow, TableError, open_table

DEVICE_COLUMNS = ("device_id", "protocol", "imei", "product")
PRODUCT_COLUMNS = ("platform", "product", "field", "meaning", "alarm_values")
PROTOCOLS = ("watch3g", "iw", "ctwing", "onenet")
PLATFORMS = ("ctwing", "onenet")
ALARM_MEANINGS = ("smoke", "gas", "leak", "sos", "fall")
VALUE_MEANINGS = ("battery", "hr", "temp", "presence")
# which device kinds each protocol can be (a watch protocol is a wristband)
PROTOCOL_KINDS = {"watch3g": ("wristband",), "iw": ("wristband",)}

_IMEI = re.compile(r"[0-9A-Za-z_-]{1,64}\Z")
_NAME = re.compile(r"[^\s,|]{1,100}\Z")


@dataclass
class GatewayLedger:
    devices: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    device_lines: dict[str, tuple[str, int]] = field(default_factory=dict)
    fields: list[tuple[str, str, str, str, list[str]]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _cell(
    row: RawRow, name: str, column: str, errors: list[RowError], check: Callable[[str], str | None]
) -> str:
    value = row.values.get(column, "")
    problem = check(value)
    if problem is not None:
        errors.append(RowError(name, row.line, column, problem))
    return value


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in allowed else f"'{v}' is not one of {', '.join(allowed)}"


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    return lambda v: None if regex.match(v) else f"'{v[:80]}' is not a valid {what}"


def parse_files(files: list[Path]) -> GatewayLedger:
    out = GatewayLedger()
    seen_ids: dict[tuple[str, str], int] = {}
    seen_fields: dict[tuple[str, str, str], int] = {}
    for path in files:
        name = str(path)
        try:
            table = open_table(path)
            header = table.header
            if set(header) == set(DEVICE_COLUMNS):
                kind = "devices"
            elif set(header) == set(PRODUCT_COLUMNS):
                kind = "fields"
            else:
                out.errors.append(
                    RowError(
                        name,
                        1,
                        None,
                        f"unknown table: the header must be {','.join(DEVICE_COLUMNS)}"
                        f" or {','.join(PRODUCT_COLUMNS)}",
                    )
                )
                continue
            for row in table.rows:
                if row.overflow:
                    out.errors.append(RowError(name, row.line, None, "cells beyond the header"))
                if kind == "devices":
                    _device_row(out, name, row, seen_ids)
                else:
                    _field_row(out, name, row, seen_fields)
        except TableError as exc:
            out.errors.append(RowError(name, 0, None, str(exc)))
    return out


def _device_row(
    out: GatewayLedger, name: str, row: RawRow, seen: dict[tuple[str, str], int]
) -> None:
    errors = out.errors
    before = len(errors)
    device_id = _cell(row, name, "device_id", errors, lambda v: None if v else "required")
    protocol = _cell(row, name, "protocol", errors, _choice(PROTOCOLS))
    imei = _cell(row, name, "imei", errors, _pattern(_IMEI, "device id / IMEI"))
    product = row.values.get("product", "")
    if protocol in PLATFORMS and not product:
        errors.append(RowError(name, row.line, "product", f"required for {protocol} devices"))
    if product and not _NAME.match(product):
        errors.append(RowError(name, row.line, "product", f"'{product[:80]}' is not a product id"))
    if (protocol, imei) in seen:
        errors.append(
            RowError(
                name, row.line, "imei", f"'{imei}' already used at line {seen[(protocol, imei)]}"
            )
        )
    if device_id in out.device_lines:
        errors.append(RowError(name, row.line, "device_id", f"'{device_id}' listed twice"))
    seen.setdefault((protocol, imei), row.line)
    out.device_lines.setdefault(device_id, (name, row.line))
    if len(errors) == before:
        out.devices.append((device_id, protocol, imei, product or None))


def _field_row(
    out: GatewayLedger, name: str, row: RawRow, seen: dict[tuple[str, str, str], int]
) -> None:
    errors = out.errors
    before = len(errors)
    platform = _cell(row, name, "platform", errors, _choice(PLATFORMS))
    product = _cell(row, name, "product", errors, _pattern(_NAME, "product id"))
    field_name = _cell(row, name, "field", errors, _pattern(_NAME, "field name"))
    meaning = _cell(row, name, "meaning", errors, _choice(ALARM_MEANINGS + VALUE_MEANINGS))
    raw_values = row.values.get("alarm_values", "")
    values = [v.strip() for v in raw_values.split("|") if v.strip()]
    if meaning in ALARM_MEANINGS and not values:
        errors.append(
            RowError(name, row.line, "alarm_values", f"required for the alarm meaning '{meaning}'")
        )
    key = (platform, product, field_name)
    if key in seen:
        errors.append(
            RowError(name, row.line, "field", f"'{field_name}' mapped twice (line {seen[key]})")
        )
    else:
        seen[key] = row.line
    if len(errors) == before:
        out.fields.append((platform, product, field_name, meaning, values))


@dataclass
class GatewayImport:
    errors: list[RowError]
    devices: int = 0
    fields: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def import_files(dsn: str, files: list[Path]) -> GatewayImport:
    ledger = parse_files(files)
    with psycopg.connect(dsn) as conn, conn.transaction():
        errors = list(ledger.errors)
        if ledger.devices:
            ids = [d[0] for d in ledger.devices]
            listed = set(ids)  # their old ids are freed by this import
            known = {
                r[0]: r[1]
                for r in conn.execute("SELECT id, kind FROM devices WHERE id = ANY(%s)", [ids])
            }
            for device_id, protocol, imei, _ in ledger.devices:
                file, line = ledger.device_lines[device_id]
                kind = known.get(device_id)
                if kind is None:
                    errors.append(
                        RowError(file, line, "device_id", f"'{device_id}' is not in the ledger")
                    )
                elif kind not in PROTOCOL_KINDS.get(protocol, (kind,)):
                    errors.append(
                        RowError(file, line, "protocol", f"a {kind} cannot speak {protocol}")
                    )
                clash = conn.execute(
                    "SELECT id FROM devices WHERE protocol = %s AND imei = %s AND id <> %s",
                    [protocol, imei, device_id],
                ).fetchone()
                if clash is not None and clash[0] not in listed:
                    errors.append(
                        RowError(file, line, "imei", f"'{imei}' belongs to device {clash[0]}")
                    )
        if errors:
            return GatewayImport(errors)
        if ledger.devices:
            # free the ids first, so two devices may swap them in one import
            conn.execute(
                "UPDATE devices SET protocol = NULL, imei = NULL WHERE id = ANY(%s)",
                [[d[0] for d in ledger.devices]],
            )
            for device_id, protocol, imei, product in ledger.devices:
                conn.execute(
                    "UPDATE devices SET protocol = %s, imei = %s, product = %s WHERE id = %s",
                    [protocol, imei, product, device_id],
                )
        products = {(p, prod) for p, prod, *_ in ledger.fields}
        for platform, product in products:
            conn.execute(
                "DELETE FROM gateway_product_fields WHERE platform = %s AND product = %s",
                [platform, product],
            )
        for platform, product, field_name, meaning, values in ledger.fields:
            conn.execute(
                "INSERT INTO gateway_product_fields (platform, product, field, meaning, alarm_values)"
                " VALUES (%s, %s, %s, %s, %s)",
                [platform, product, field_name, meaning, values],
            )
    return GatewayImport([], len(ledger.devices), len(ledger.fields))


def cli_import(settings: Settings, files: list[Path]) -> int:
    report = import_files(settings.database_url, files)
    if not report.ok:
        print(f"gateway ledger rejected, nothing was written: {len(report.errors)} error(s)")
        for error in report.errors[:50]:
            print(f"  {error}")
        return 1
    print(f"imported {report.devices} gateway device(s) and {report.fields} product field(s)")
    return 0
