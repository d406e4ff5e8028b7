from __future__ import annotations

import json

from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.audit import format_record


def test_json_line_has_every_field() -> None:
    record = RequestRecord(client="10.0.0.1", kind=Kind.DOWNLOAD, handled=True, key="dev", version="v1",
                           file="ota.bin")
    record.client_gone = True
    record.close(200, 1234, 5000)
    data = json.loads(format_record(record, "json"))
    assert data["client"] == "10.0.0.1" and data["key"] == "dev" and data["kind"] == "download"
    assert data["version"] == "v1" and data["file"] == "ota.bin" and data["status"] == 200
    assert data["bytes"] == 1234 and data["outcome"] == "aborted"
    assert data["time"].endswith("Z") and data["duration_ms"] >= 0


def test_outcome_follows_status_and_text_format() -> None:
    record = RequestRecord(client="::1")
    record.close(403, 40, 40)
    assert record.outcome == "refused"
    record = RequestRecord(client="::1")
    record.close(500, 40, 40)
    assert record.outcome == "error"
    line = format_record(record, "text")
    assert "client=::1" in line and "key=-" in line and "outcome=error" in line
