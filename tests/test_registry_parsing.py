"""Ledger cell validators and file parsing (no database)."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from registry.fields import FieldError, parse_bool, parse_id, parse_lat, parse_phone, parse_time
from registry.ledger import parse_ledger
from registry.ledger_format import OFFICER_COLUMNS

PROFILES = ("standard", "alone")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("13812345678", "13812345678"),
        ("+8613812345678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("023-12345678", "023-12345678"),
        ("0851-1234567", "0851-1234567"),
    ],
)
def test_valid_phone_numbers_are_normalised(raw: str, stored: str) -> None:
    assert parse_phone(raw) == stored


@pytest.mark.parametrize("raw", ["1381234", "12812345678", "138123456789", "02312345678", "abc"])
def test_invalid_phone_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(FieldError, match="is not a valid phone number"):
        parse_phone(raw)


def test_booleans_times_ids_and_ranges() -> None:
    assert [parse_bool(v) for v in ("true", "TRUE", "1", "是", "false", "0", "否")] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert parse_time("8:05") == time(8, 5)
    assert parse_time("23:59") == time(23, 59)
    for bad_time in ("24:00", "12:60", "noon", "12:00:00"):
        with pytest.raises(FieldError):
            parse_time(bad_time)
    with pytest.raises(FieldError):
        parse_bool("maybe")
    with pytest.raises(FieldError, match="not a valid id"):
        parse_id("WB 01")
    with pytest.raises(FieldError, match="not a valid id"):
        parse_id("WB01\n")  # ends up in MQTT topics and message ids
    with pytest.raises(FieldError, match="out of range"):
        parse_lat("-91")
    with pytest.raises(FieldError, match="not a number"):
        parse_lat("north")


def _officers(tmp_path: Path, text: str, name: str = "officers.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_bom_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    header = ",".join(OFFICER_COLUMNS)
    path = _officers(
        tmp_path,
        "\ufeff"
        + header
        + "\nDO1,渝中区,张伟,13812345678,\n\n,,,,\nDO2,渝中区,李静,1381234,\nDO1,渝中区,王敏,13912345678,x y\n",
    )

    ledger = parse_ledger([path], PROFILES)

    assert [o.officer_id for o in ledger.officers] == ["DO1"]
    assert [(e.line, e.field) for e in ledger.errors] == [
        (5, "phone"),
        (6, "officer_id"),
        (6, "wecom_userid"),
    ]
    assert "duplicate officer_id 'DO1' (first at" in ledger.errors[1].reason


def test_header_problems_are_reported_once_per_column(tmp_path: Path) -> None:
    path = _officers(
        tmp_path, "officer_id,district,name,mobile,wecom_userid\nDO1,渝中区,张伟,13812345678,\n"
    )

    ledger = parse_ledger([path], PROFILES)

    assert {(e.line, e.field, e.reason) for e in ledger.errors} == {
        (1, "phone", "missing column"),
        (1, "mobile", "unknown column"),
    }
    assert ledger.officers == []


def test_unreadable_files_are_errors_not_crashes(tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.csv"  # neither UTF-8 nor GBK: 0xFF starts no character in either
    gbk.write_bytes(b"officer_id,district,name,phone,wecom_userid\nDO1,\xff\xfe,x,13812345678,\n")
    unknown = _officers(tmp_path, "id,name\n1,x\n", "unknown.csv")
    missing = tmp_path / "missing.csv"

    ledger = parse_ledger([gbk, unknown, missing], PROFILES)

    reasons = {Path(e.file).name: e.reason for e in ledger.errors}
    assert "neither UTF-8 nor GBK" in reasons["gbk.csv"]
    assert "unknown table" in reasons["unknown.csv"]
    assert reasons["missing.csv"] == "no such file"
