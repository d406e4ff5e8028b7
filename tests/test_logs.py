"""Log lines leave through the app's own writer thread, in order, and all of them on stop."""

from __future__ import annotations

import io
import logging
import threading

from sanic_ota import audit
from sanic_ota.accounting import Kind, RequestRecord
from sanic_ota.logs import ROOT, LogWriter, RedactSignatures, redact_signatures


def test_every_line_is_written_in_order_by_stop() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream)
    writer.start()
    for n in range(5000):
        writer.audit(f'{{"n":{n}}}')
    logging.getLogger(f"{ROOT}.test").warning("after the audit lines")
    writer.stop()
    lines = stream.getvalue().splitlines()
    assert lines[:5000] == [f'{{"n":{n}}}' for n in range(5000)]  # bare, as queued
    assert len(lines) == 5001 and lines[-1].endswith("WARNING sanic_ota.test: after the audit lines")


def test_audit_records_are_formatted_by_the_writer_thread_in_order(monkeypatch) -> None:
    """The event loop only queues a closed record; its line is made by the writer thread."""
    formatted_in: set[str] = set()
    real = audit.format_record

    def spy(record: RequestRecord, log_format: str) -> str:
        formatted_in.add(threading.current_thread().name)
        return real(record, log_format)

    monkeypatch.setattr("sanic_ota.logs.format_record", spy)
    stream = io.StringIO()
    writer = LogWriter(stream)
    writer.start()
    records = []
    for n in range(300):
        record = RequestRecord(client=f"10.0.0.{n % 250}", kind=Kind.VERSION_QUERY, handled=True, key="k")
        record.close(200, 57, 57)
        records.append(record)
        writer.audit_record(record, "json" if n % 2 else "text")
        if n == 150:
            writer.audit("a line in between")
    writer.stop()
    expected = [real(r, "json" if n % 2 else "text") for n, r in enumerate(records)]
    expected.insert(151, "a line in between")
    assert stream.getvalue().splitlines() == expected
    assert formatted_in == {"sanic_ota-log"}


def test_two_writers_keep_their_own_lines_and_hand_the_logger_back() -> None:
    one, two = io.StringIO(), io.StringIO()
    first, second = LogWriter(one), LogWriter(two)
    first.start()
    second.start()  # the logger's records go to the writer started last
    first.audit("one's line")
    second.audit("two's line")
    logging.getLogger(ROOT).warning("a record")
    second.stop()
    first.stop()
    assert one.getvalue() == "one's line\n"
    assert two.getvalue().startswith("two's line\n") and "a record" in two.getvalue()
    log = logging.getLogger(ROOT)
    assert not [h for h in log.handlers if type(h).__module__ == "sanic_ota.logs"] and log.propagate


def test_a_writer_starts_again_after_a_stop() -> None:
    """As sanic-testing does: a server started and stopped once per request."""
    stream = io.StringIO()
    writer = LogWriter(stream)
    for n in range(3):
        writer.start()
        writer.start()  # a second start while running is nothing
        writer.audit(f"line {n}")
        writer.stop()
    writer.stop()
    assert stream.getvalue() == "line 0\nline 1\nline 2\n"


SIG = "ab" * 32


def test_our_records_never_carry_a_signature() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream)
    writer.start()
    logging.getLogger(f"{ROOT}.test").warning("asked for %s", f"/v1/device/rom/?key=k&sig={SIG}&expires=1")
    writer.stop()
    assert SIG not in stream.getvalue() and "key=k&sig=REDACTED&expires=1" in stream.getvalue()


def test_sanics_loggers_blank_the_signature_in_message_and_access_fields() -> None:
    redact_signatures()
    redact_signatures()  # idempotent: one filter per logger
    access = logging.getLogger("sanic.access")
    assert sum(isinstance(f, RedactSignatures) for f in access.filters) == 1
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    level = access.level
    access.setLevel(logging.INFO)
    for name in ("sanic.access", "sanic.error"):
        logging.getLogger(name).addHandler(keep)
    try:
        access.info("", extra={"request": f"GET http://h/v1/device/rom/?sig={SIG}"})
        logging.getLogger("sanic.error").error("Exception occurred while handling uri: %r", f"http://h/?sig={SIG}")
    finally:
        access.setLevel(level)
        for name in ("sanic.access", "sanic.error"):
            logging.getLogger(name).removeHandler(keep)
    assert [getattr(r, "request", r.getMessage()) for r in seen] == [
        "GET http://h/v1/device/rom/?sig=REDACTED", "Exception occurred while handling uri: 'http://h/?sig=REDACTED'",
    ]
