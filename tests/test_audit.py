from __future__ import annotations

import json

from sanic_ota.audit import AuditRecord, format_record


def test_json_line_has_every_field() -> None:
    record = AuditRecord(client="10.0.0.1", kind="download", key="dev", version="v1", file="ota.bin")
    record.finish(200, 1234, "aborted")
    data = json.loads(format_record(record, "json"))
    assert data["client"] == "10.0.0.1" and data["key"] == "dev" and data["kind"] == "download"
    assert data["version"] == "v1" and data["file"] == "ota.bin" and data["status"] == 200
    assert data["bytes"] == 1234 and data["outcome"] == "aborted"
    assert data["time"].endswith("Z") and data["duration_ms"] >= 0


def test_outcome_follows_status_and_text_format() -> None:
    record = AuditRecord(client="::1")
    record.finish(403, 40)
    assert record.outcome == "refused"
    record.finish(500, 40)
    assert record.outcome == "error"
    line = format_record(record, "text")
    assert "client=::1" in line and "key=-" in line and "outcome=error" in line
