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
    if log_format == "json":
        return json.dumps(fields(record), separators=(",", ":"))
    # the text line, spelled out: ``fields`` joined as key=value, "-" for None (half the time)
    r = record
    return (f"client={r.client} kind={r.kind} key={_text(r.key)} version={_text(r.version)} "
            f"file={_text(r.file)} range={_text(r.range)} status={r.status} bytes={r.sent} "
            f"outcome={_text(r.outcome)} time={r.time} duration_ms={r.duration_ms}"
            + ("" if r.change is None else f" change={r.change}"))


def _text(value: object) -> object:
    return "-" if value is None else value
