"""The download audit log: one line per request, saying who got what and how it ended.

Pure formatting of a closed ``RequestRecord``; the web layer hands the line to the
app's ``sanic_ota.logs.LogWriter``, which writes it bare to stderr from its writer
thread (no logger, no prefix, so JSON lines stay parseable). Tokens never reach a
record, only key names.
"""

from __future__ import annotations

import functools
import json

from sanic_ota.accounting import Kind, Outcome, RequestRecord

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
    r = record
    return (f"client={r.client} " + _text_middle(r.kind, r.key, r.version, r.file, r.range, r.status, r.sent, r.outcome)
            + f"{r.time} duration_ms={r.duration_ms}" + ("" if r.change is None else f" change={r.change}"))


@functools.lru_cache(maxsize=1024)
def _text_middle(kind: Kind, key: str | None, version: str | None, file: str | None,
                 span: str | None, status: int, sent: int, outcome: Outcome | None) -> str:
    """The text line from its kind up to its time: ``fields`` joined as key=value, "-" for None.

    Kept for the lines seen last: a fleet asking the same thing writes the same fields
    again and again; only the client address (one per module), time and duration differ.
    """
    # (``x or "-"``: these are None or non-empty names; enums by their value)
    return (f"kind={kind._value_} key={key or '-'} version={version or '-'} "
            f"file={file or '-'} range={span or '-'} status={status} bytes={sent} "
            f"outcome={'-' if outcome is None else outcome._value_} time=")
