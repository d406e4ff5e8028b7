"""The download audit log: one line per request, saying who got what and how it ended.

Pure formatting of a closed ``RequestRecord``; the web layer hands the line to the
app's ``sanic_ota.logs.LogWriter``, which writes it bare to stderr from its writer
thread (no logger, no prefix, so JSON lines stay parseable). Tokens never reach a
record, only key names.
"""

from __future__ import annotations

import json

from sanic_ota.accounting import RequestRecord

LOG_FORMATS = ("text", "json")


def fields(record: RequestRecord) -> dict[str, object]:
    """The line's fields, in the order they are written (README, "Reading the audit log").

    An admin change adds ``change`` last (what it changed); other lines are as they were.
    """
    found: dict[str, object] = {
        "client": record.client, "kind": str(record.kind), "key": record.key, "version": record.version,
        "file": record.file, "range": record.range, "status": record.status, "bytes": record.sent,
        "outcome": None if record.outcome is None else str(record.outcome),
        "time": record.time, "duration_ms": record.duration_ms,
    }
    if record.change is not None:
        found["change"] = record.change
    return found


def format_record(record: RequestRecord, log_format: str) -> str:
    data = fields(record)
    if log_format == "json":
        return json.dumps(data, separators=(",", ":"))
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in data.items())
