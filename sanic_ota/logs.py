"""Where log lines go: stderr, written by one background thread, never by the event loop.

Writing each audit line to stderr from the event loop took half of a worker's time
under load (bench/, version query: 3.6k req/s, 52% in ``StreamHandler.emit``). Now
every line is put on one queue, and one thread writes whatever has queued up in a
single write: few syscalls on a busy server, and the lines stay in the order they
were made. An audit line is queued as its closed record and formatted by that thread
too, a batch at a time, so the event loop only appends to the queue. Audit lines are printed bare, so JSON
lines stay parseable; every other ``sanic_ota.*`` record gets time, process, level
and logger name.

The queue and the thread belong to a ``LogWriter`` that the app owns: started when a
server process starts, drained and ended when it stops (or at exit, if start-up
failed half-way). The ``sanic_ota`` logger is the process's own, so its records go to
the writer started last.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from typing import TextIO

from sanic_ota.accounting import RequestRecord
from sanic_ota.audit import format_record
from sanic_ota.signed_urls import redact

ROOT = "sanic_ota"
#: Sanic's own loggers; its access log (``--access-logs``) and some error messages
#: write the request's whole URL, query string included.
SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server")
DETAILED = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

#: The most lines written in one go.
BATCH = 1000
#: Seconds the writer rests after each write, so that lines gather into batches. A
#: thread woken for every line (one ``put`` each) took the GIL from the event loop
#: once per request; resting, it takes it a few dozen times a second under any load.
#: A line reaches stderr at most this much later.
PAUSE = 0.02


#: What the queue holds: a finished line, a closed request and the audit format to
#: write it in, a log record to filter and format, or None (stop).
Item = str | tuple[RequestRecord, str] | logging.LogRecord | None


class _QueueLines(logging.Handler):
    """Queues a record with its message made here, and leaves the rest to the writer thread.

    The message is made (``getMessage``) where the record is logged, so that arguments
    changed afterwards cannot change the line; the filters (the signature redaction)
    and the formatting (time, process, level) run in the writer thread (``line``).
    A failed authentication logs a line per request: this keeps its cost off the loop.
    """

    def __init__(self, lines: queue.SimpleQueue[Item]) -> None:
        super().__init__()
        self._lines = lines

    def handle(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = record.getMessage(), None
            self._lines.put(record)
        except Exception:
            self.handleError(record)
        return True

    def line(self, record: logging.LogRecord) -> str | None:
        """The record's line, or None if a filter drops it (writer thread)."""
        if not self.filter(record):
            return None
        try:
            return self.format(record)
        except Exception:
            self.handleError(record)
            return None


class LogWriter:
    """One queue of finished lines and the thread that writes them to ``stream``.

    ``stream`` defaults to ``sys.stderr`` as it is when the writer starts.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._handler = _QueueLines(self._lines)
        self._handler.setFormatter(logging.Formatter(DETAILED))
        self._handler.addFilter(_REDACTION)  # every sanic_ota.* record passes this handler
        self._thread: threading.Thread | None = None

    def audit(self, line: str) -> None:
        """Queue one audit line; cheap enough for every request."""
        self._lines.put(line)

    def audit_record(self, record: RequestRecord, log_format: str) -> None:
        """Queue a closed request's audit line, to be formatted by the writer thread.

        The record must not change any more: the accountant hands it over once closed.
        """
        self._lines.put((record, log_format))

    def start(self) -> None:
        """Start the thread and route ``sanic_ota.*`` records to it; a no-op if running."""
        if self._thread is not None:
            return
        stream = self._stream or sys.stderr
        self._thread = threading.Thread(target=self._write, args=(stream,), name="sanic_ota-log", daemon=True)
        self._thread.start()
        log = logging.getLogger(ROOT)
        log.handlers[:] = [self._handler]
        log.setLevel(logging.INFO)
        log.propagate = False
        atexit.register(self.stop)

    def stop(self) -> None:
        """Write everything still queued, then end the thread; a no-op if not running."""
        if self._thread is None:
            return
        log = logging.getLogger(ROOT)
        if self._handler in log.handlers:  # records from now on go where Python sends them
            log.removeHandler(self._handler)
            log.propagate = True
        self._lines.put(None)
        self._thread.join(timeout=5)
        self._thread = None
        atexit.unregister(self.stop)

    def _line(self, item: str | tuple[RequestRecord, str] | logging.LogRecord) -> str | None:
        if isinstance(item, tuple):  # a request's audit line: most items
            return format_record(*item)
        if isinstance(item, str):
            return item
        return self._handler.line(item)

    def _write(self, stream: TextIO) -> None:
        lines = self._lines
        while True:
            batch = [lines.get()]
            while not lines.empty() and len(batch) < BATCH:
                batch.append(lines.get_nowait())
            done = None in batch
            text = "".join(f"{line}\n" for item in batch if item is not None and (line := self._line(item)) is not None)
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # stderr closed: nothing sensible left to do
                pass
            if done:
                return
            time.sleep(PAUSE)


class RedactSignatures(logging.Filter):
    """Blanks the signature of a signed URL in any record, whoever logs the URL.

    Our own code logs ``request.path`` only, but Sanic's access log puts
    ``METHOD URL`` in the record's ``request`` field and its error handler logs the
    URL: a signature in a log file would be a working download credential.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        request = getattr(record, "request", None)
        if isinstance(request, str):
            record.request = redact(request)
        return True


_REDACTION = RedactSignatures()


def redact_signatures() -> None:
    """Install the redaction on Sanic's loggers; idempotent (one filter per logger).

    Sanic logs to these loggers directly, so a logger filter sees every record;
    ours log to children of ``sanic_ota``, so theirs is on ``LogWriter``'s handler.
    """
    for name in SANIC_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTION not in logger.filters:
            logger.addFilter(_REDACTION)
