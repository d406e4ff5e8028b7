"""Requests as the module writes them, and the module's first-read rules.

See ``shared/esp-at-client.md``: the module reads ONE 1024-byte chunk first and needs
the exact-case ``Content-Length: ``, the end of the headers and the partition's magic
bytes in it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from workspace import HOST


def request_bytes(path: str, token: str, http10: bool = False, close: bool = False) -> bytes:
    return (
        f"GET {path} HTTP/{'1.0' if http10 else '1.1'}\r\n"
        f"Host: {HOST}\r\nConnection: {'close' if close else 'keep-alive'}\r\nUser-Agent: ESP32 Http Client\r\n"
        f"Authorization: token {token}\r\nAccept-Encoding: gzip,deflate,sdch\r\n\r\n"
    ).encode()


def fetch(port: int, path: str, token: str) -> tuple[int, bytes, bytes]:
    """One blocking GET, read to the close: (status, headers, body)."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request_bytes(path, token, http10=True, close=True))
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def first_read_problem(first: bytes, magic: bytes | None, needle: bytes | None) -> str | None:
    """What the module would trip over in its first 1024-byte read, or None."""
    head, sep, body = first.partition(b"\r\n\r\n")
    lower = head.lower()
    problem = None
    if not sep:
        problem = "headers did not end in the first read"
    elif b"transfer-encoding" in lower and b"chunked" in lower:
        problem = "chunked transfer encoding"
    elif b"content-encoding" in lower:
        problem = "Content-Encoding present"
    elif b"Content-Length: " not in first:
        problem = "no exact-case 'Content-Length: ' in the first 1024 bytes"
    elif magic is not None and not body.startswith(magic):
        problem = f"first body bytes {body[:4].hex() or '(none)'} are not the magic {magic.hex()}"
    elif needle is not None and needle not in first:
        problem = f"{needle!r} not in the first read"
    if problem is None:
        return None
    status = first.split(b"\r\n", 1)[0].decode(errors="replace") or "(nothing read)"
    return f"{problem} [{status}]"


@dataclass
class WireCheck:
    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, problem: str | None) -> None:
        self.checked += 1
        if problem:
            self.failures.append(f"{what}: {problem}")


def check_wire(port: int, token: str, samples: int, cases: list[tuple[str, str, bytes | None, bytes | None, bool]],
               result: WireCheck) -> None:
    """Read each answer the way the module does: ONE blocking recv(1024) straight after the request.

    ``cases``: (what, path, magic, needle, HTTP/1.0).
    """
    for _ in range(samples):
        for what, path, magic, needle, http10 in cases:
            with socket.create_connection((HOST, port), timeout=10) as s:
                s.sendall(request_bytes(path, token, http10))
                first = s.recv(1024)
            result.add(what, first_read_problem(first, magic, needle))
