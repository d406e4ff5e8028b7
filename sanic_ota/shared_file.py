"""A SQLite file every worker of a server adds to and reads: the 24 h statistics and the fleet counts.

Each worker counts in memory and adds its counts in one transaction every few seconds;
SQLite's own locking makes that safe across processes. The file is the server's, not
the releases': it may be deleted or replaced while the server runs, so its tables are
created on first use and again after any trouble. Trouble never reaches a request:
the owner keeps counting in memory, and the log says so once when it starts and once
when the file works again.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

#: seconds a writer waits for another worker's transaction before it counts as trouble
BUSY_TIMEOUT = 1.0


class SharedFile:
    def __init__(self, path: Path, schema: str, name: str, logger: logging.Logger) -> None:
        self.path = path
        self.schema = schema
        self.name = name  # "statistics file", "fleet counts": how the log names it
        self.logger = logger
        self._ready = False
        self._broken = False

    def connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode (callers say BEGIN), the tables there."""
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        if not self._ready:
            try:
                connection.executescript(self.schema)
            except BaseException:
                connection.close()
                raise
            self._ready = True
        return connection

    def trouble(self, what: str, error: Exception) -> None:
        """The file failed (``what``: cannot write, cannot read); said once until it works."""
        self._ready = False  # the file may have been replaced: create the tables again
        if not self._broken:
            self.logger.warning("%s %s: %s (%s); counting in memory until it works", self.name, self.path, what, error)
            self._broken = True

    def works(self) -> None:
        """The file took a write: say so if it had failed."""
        if self._broken:
            self.logger.info("%s %s works again", self.name, self.path)
            self._broken = False
