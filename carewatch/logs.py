"""Structured (JSON lines) logging with personal data masked.

Phone numbers are masked wherever they appear in a log record (message or extra
fields), so no adapter has to remember to do it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from carewatch.phones import mask_phones

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def mask_phone(text: str) -> str:
    """'13812345678' -> '138****5678', '023-63851234' -> '023-****1234' (the one owner of
    the rule is carewatch.phones.mask_phones)."""
    return mask_phones(text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # A phone number kept as a number (e.g. read from a spreadsheet) is masked too.
        text = str(value)
        masked = mask_phone(text)
        return masked if masked != text else value
    if isinstance(value, dict):
        return {_mask(k): _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def _masked_str(value: object) -> str:
    """Any other object (a dataclass, an exception...) is logged as its masked str()."""
    return mask_phone(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_phone(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = _mask(value)
        if record.exc_info:
            out["exc"] = mask_phone(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=_masked_str)


class MaskingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_phone(super().format(record))


def setup_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else MaskingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access", "faststream"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
