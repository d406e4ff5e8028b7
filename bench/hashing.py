"""Indexing speed: ``FileEntry.describe`` (read + SHA-256 + partition check) against ``sha256sum``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def make_hash_set(root: Path, total_mb: int, file_mb: int = 8) -> list[Path]:
    """Random files (custom partitions, so describe() adds no image parsing)."""
    root.mkdir()
    paths = []
    for i in range(max(1, total_mb // file_mb)):
        path = root / f"blob_{i:03d}.bin"
        path.write_bytes(os.urandom(file_mb * 1024 * 1024))
        paths.append(path)
    return paths


def time_describe(paths: list[Path]) -> float:
    """Read and describe each file as the indexer does: MB/s."""
    from sanic_ota.manifest import FileEntry

    start = time.perf_counter()
    total = 0
    for path in paths:
        data = path.read_bytes()
        FileEntry.describe(path.name, data)
        total += len(data)
    return total / 1e6 / (time.perf_counter() - start)


def time_sha256sum(paths: list[Path]) -> float:
    total = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)
    return total / 1e6 / (time.perf_counter() - start)
