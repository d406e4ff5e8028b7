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


def test_text_and_json_lines_carry_the_same_fields_and_change_only_for_admin_changes() -> None:
    """The text line is spelled out by hand for speed: it must say what ``fields`` says."""
    from sanic_ota.audit import fields

    for change in (None, "pin:beta=v1.0.0"):
        record = RequestRecord(client="10.0.0.1", kind=Kind.DOWNLOAD, handled=True, key="dev", version="v1",
                               file="ota.bin")
        record.change = change
        record.close(200, 10, 10)
        expected = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields(record).items())
        assert format_record(record, "text") == expected
        assert ("change" in json.loads(format_record(record, "json"))) is (change is not None)
