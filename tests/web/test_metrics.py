from __future__ import annotations

from sanic_ota.audit import AuditRecord
from sanic_ota.keys import PROBLEMS, KeysFileStatus
from sanic_ota.web import metrics


def _value(version: str, file: str, outcome: str) -> float:
    return metrics.DOWNLOADS.labels(version, file, outcome)._value.get()


def test_unknown_names_never_become_label_values() -> None:
    record = AuditRecord(client="x", kind="download", version="made-up-1", file="nope.bin")
    record.finish(404, 0)
    before = _value("", "", "refused")
    metrics.observe(record, None)
    assert _value("", "", "refused") == before + 1
    families = {s.labels.get("version") for m in metrics.DOWNLOADS.collect() for s in m.samples}
    assert "made-up-1" not in families


def test_served_files_are_counted_by_name() -> None:
    record = AuditRecord(client="x", kind="download", version="v1", file="ota.bin")
    record.finish(200, 10, "completed")
    before = _value("v1", "ota.bin", "completed")
    metrics.observe(record, None)
    assert _value("v1", "ota.bin", "completed") == before + 1


def test_the_keys_file_gauges_name_one_reason_at_a_time() -> None:
    metrics.keys_file(KeysFileStatus("invalid", "bad JSON"))
    assert metrics.KEYS_FILE_OK._value.get() == 0
    assert {r: metrics.KEYS_FILE_PROBLEM.labels(r)._value.get() for r in PROBLEMS} == {
        "missing": 0, "unreadable": 0, "invalid": 1, "open_to_others": 0}
    metrics.keys_file(KeysFileStatus())
    assert metrics.KEYS_FILE_OK._value.get() == 1
    assert not any(metrics.KEYS_FILE_PROBLEM.labels(r)._value.get() for r in PROBLEMS)
