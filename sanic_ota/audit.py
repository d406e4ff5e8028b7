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
    # (``x or "-"``: these are None or non-empty names; enums by their value, which formats faster than the member)
    r = record
    return (f"client={r.client} kind={r.kind._value_} key={r.key or '-'} version={r.version or '-'} "
            f"file={r.file or '-'} range={r.range or '-'} status={r.status} bytes={r.sent} "
            f"outcome={'-' if r.outcome is None else r.outcome._value_} time={r.time} duration_ms={r.duration_ms}"
            + ("" if r.change is None else f" change={r.change}"))
