"""Where log lines go: stderr, written by background threads, never by the event loop.

Writing each audit line to stderr from the event loop took half of a worker's time
under load (bench/, version query: 3.6k req/s, 52% in ``StreamHandler.emit``). Now:
- audit lines (one per request) are put on a queue as finished strings; a thread
  writes whatever has queued up in one write, so a busy server makes few syscalls;
- every other ``sanic_ota.*`` record goes through a ``QueueHandler`` to a
  ``QueueListener`` thread, with time, process, level and logger name.
Both threads drain their queues at exit. Audit lines are printed bare, so JSON
lines stay parseable.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

ROOT = "sanic_ota"
DETAILED = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

_STOP = None
_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
_writer: threading.Thread | None = None
_listener: QueueListener | None = None


def audit(line: str) -> None:
    """Queue one audit line; cheap enough for every request."""
    _lines.put(line)


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
    """Start both writers and route ``sanic_ota.*`` records; once per process."""
    global _writer, _listener
    if _writer is not None:
        return
    _writer = threading.Thread(target=_write_lines, args=(sys.stderr,), name="sanic_ota-audit", daemon=True)
    _writer.start()
    detailed = logging.StreamHandler(sys.stderr)
    detailed.setFormatter(logging.Formatter(DETAILED))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    log = logging.getLogger(ROOT)
    log.handlers[:] = [QueueHandler(records)]
    log.setLevel(logging.INFO)
    log.propagate = False
    _listener = QueueListener(records, detailed)
    _listener.start()
    atexit.register(stop)


def stop() -> None:
    """Write everything still queued, then end the threads."""
    global _writer, _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    if _writer is not None:
        _lines.put(_STOP)
        _writer.join(timeout=5)
        _writer = None
