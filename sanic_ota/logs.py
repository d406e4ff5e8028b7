"""Where log lines go: stderr, written by one background thread, never by the event loop.

Writing each audit line to stderr from the event loop took half of a worker's time
under load (bench/, version query: 3.6k req/s, 52% in ``StreamHandler.emit``). Now
every line, audit or not, is put on one queue as a finished string, and one thread
writes whatever has queued up in a single write: few syscalls on a busy server, and
the lines stay in the order they were made. The queue is drained at exit. Audit
lines are printed bare, so JSON lines stay parseable; every other ``sanic_ota.*``
record gets time, process, level and logger name.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
from typing import TextIO

ROOT = "sanic_ota"
DETAILED = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

_STOP = None
_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
_writer: threading.Thread | None = None


def audit(line: str) -> None:
    """Queue one audit line; cheap enough for every request."""
    _lines.put(line)


class _QueueLines(logging.Handler):
    """Formats a record here and leaves the writing to the writer thread."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _lines.put(self.format(record))
        except Exception:
            self.handleError(record)


def _write_lines(stream: TextIO) -> None:
    while True:
        batch = [_lines.get()]
        while not _lines.empty() and len(batch) < 1000:
            batch.append(_lines.get_nowait())
        done = _STOP in batch
        text = "".join(f"{line}\n" for line in batch if line is not _STOP)
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing sensible left to do
            pass
        if done:
            return


def start() -> None:
    """Start the writer and route ``sanic_ota.*`` records to it; once per process."""
    global _writer
    if _writer is not None:
        return
    _writer = threading.Thread(target=_write_lines, args=(sys.stderr,), name="sanic_ota-log", daemon=True)
    _writer.start()
    handler = _QueueLines()
    handler.setFormatter(logging.Formatter(DETAILED))
    log = logging.getLogger(ROOT)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    atexit.register(stop)


def stop() -> None:
    """Write everything still queued, then end the thread."""
    global _writer
    if _writer is not None:
        _lines.put(_STOP)
        _writer.join(timeout=5)
        _writer = None
