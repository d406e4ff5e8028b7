"""The download audit log: one line per request, saying who got what and how it ended.

Pure formatting; the web layer fills an ``AuditRecord`` per request and hands the
formatted line to the app's ``sanic_ota.logs.LogWriter``, which writes it bare to stderr
from its writer thread (no logger, no prefix, so JSON lines stay parseable). Tokens never
reach a record, only key names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic

#: What a request was, as the log and the metrics name it.
KINDS = ("version_query", "listing", "download", "manifest", "metrics", "status", "other")

#: How a request ended: the whole answer sent, the client gone before the end,
#: refused (4xx), or failed on our side (5xx).
OUTCOMES = ("completed", "aborted", "refused", "error")

LOG_FORMATS = ("text", "json")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class AuditRecord:
    client: str
    kind: str = "other"
    key: str | None = None
    version: str | None = None
    file: str | None = None
    status: int = 0
    bytes: int = 0
    outcome: str = ""
    time: str = field(default_factory=_now)
    started: float = field(default_factory=monotonic, repr=False)

    def finish(self, status: int, sent: int, outcome: str | None = None) -> None:
        self.status, self.bytes = status, sent
        self.outcome = outcome or ("completed" if status < 400 else "refused" if status < 500 else "error")

    def to_dict(self) -> dict[str, object]:
        return {
            "client": self.client, "kind": self.kind, "key": self.key, "version": self.version,
            "file": self.file, "status": self.status, "bytes": self.bytes, "outcome": self.outcome,
            "time": self.time, "duration_ms": round((monotonic() - self.started) * 1000, 1),
        }


def format_record(record: AuditRecord, log_format: str) -> str:
    data = record.to_dict()
    if log_format == "json":
        return json.dumps(data, separators=(",", ":"))
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in data.items())
