"""A model of ESP-IDF's ``esp_https_ota`` over ``esp_http_client``, as it behaves on the wire.

Written from the behaviour of ``components/esp_https_ota/src/esp_https_ota.c`` and
``components/esp_http_client/esp_http_client.c`` as summarised, with line references,
in ``shared/esp-idf-client.md``. It sends the same requests in the same order (header
order included) and accepts what that client accepts, no more strictly, so that a
server that passes here updates a real device:
- every request is ``HTTP/1.1`` with ``User-Agent: ESP32 HTTP Client/1.0``, then
  ``Host``, then the application's headers, then ``Range``; no ``Connection`` header;
  the connection is reused while the answers allow keep-alive;
- the partial download asks HEAD first (exactly 200, its ``Content-Length`` is the
  image length), on a connection it closes itself, then windows; it never checks that a
  window came back 206 nor reads ``Content-Range``: whatever body comes is appended;
- resumption without partial download asks ``Range: bytes=N-`` and keeps its first N
  bytes only on a 206; any other 2xx body, or a 416, makes it start from byte 0.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

USER_AGENT = "ESP32 HTTP Client/1.0"

#: ``max_http_request_size``'s default: the partial download's window.
DEFAULT_WINDOW = 64 * 1024

#: esp_http_client's default network timeout: the answer must start within it.
TIMEOUT = 5.0


class OtaFailed(AssertionError):
    """Where ``esp_https_ota_perform`` would return an error."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case: the client's parser ignores case
    body: bytes


@dataclass
class Client:
    """One ``esp_http_client`` handle: a keep-alive connection to one URL."""

    host: str
    port: int
    path: str  # path and query of the URL
    headers: dict[str, str] = field(default_factory=dict)  # esp_http_client_set_header
    connects: int = 0
    requests: list[str] = field(default_factory=list)  # each request's head, as sent
    answers: list[Answer] = field(default_factory=list)
    _sock: socket.socket | None = None
    _buffer: bytes = b""

    def request(self, method: str, range_header: str | None = None) -> Answer:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
            self._buffer = b""
            self.connects += 1
        lines = [f"{method} {self.path} HTTP/1.1", f"User-Agent: {USER_AGENT}", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if range_header is not None:
            lines.append(f"Range: {range_header}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        self.requests.append(head)
        self._sock.sendall(head.encode())
        answer = self._read(method)
        self.answers.append(answer)
        if answer.headers.get("connection", "").lower() == "close":
            self.close()
        return answer

    def _read(self, method: str) -> Answer:
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status = status_line.split(" ")[:2]
        if version != "HTTP/1.1":
            raise OtaFailed(f"status line {status_line!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise OtaFailed("this server never chunks; the model reads Content-Length only")
        if method == "HEAD" or int(status) in (204, 304):
            return Answer(int(status), headers, b"")
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            self._buffer += self._recv()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Answer(int(status), headers, body)

    def _recv(self) -> bytes:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if not data:
            raise OtaFailed("connection closed in the middle of an answer")
        return data

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fail_unless_2xx(answer: Answer) -> None:
    if not 200 <= answer.status < 300:
        raise OtaFailed(f"HTTP {answer.status}: {answer.body[:200]!r}")


def partial_download(
    host: str, port: int, path: str, headers: dict[str, str], window: int = DEFAULT_WINDOW, start: int = 0,
) -> tuple[bytes, Client]:
    """``partial_http_download = true``: HEAD, then windows of ``window`` bytes from ``start``.

    Returns the image as written to flash (the first ``start`` bytes are the server's
    too, as a device resuming had them from an earlier attempt) and the client that
    fetched the windows, for its requests and answers.
    """
    with Client(host, port, path, dict(headers)) as head_client:
        answer = head_client.request("HEAD")
    if answer.status != 200:
        raise OtaFailed(f"HEAD answered {answer.status}, not 200")
    if "content-length" not in answer.headers:
        raise OtaFailed("HEAD has no Content-Length")
    length = int(answer.headers["content-length"])
    image = bytearray()
    client = Client(host, port, path, dict(headers))
    with client:
        if start:
            image += _whole(host, port, path, headers)[:start]
        position = start
        if start == 0 and length <= window:
            first = None  # the whole image fits in one window: no Range at all
        elif length > start + window:
            first = f"bytes={start}-{start + window - 1}"
        else:
            first = f"bytes={start}-{length}"  # one past the last byte: the server clamps it
        answer = client.request("GET", first)
        _fail_unless_2xx(answer)  # a 200 with the whole file is appended all the same
        image += answer.body
        position += len(answer.body)
        while position < length:
            if length - position > window:
                answer = client.request("GET", f"bytes={position}-{position + window - 1}")
            else:
                answer = client.request("GET", f"bytes={position}-")
            _fail_unless_2xx(answer)
            image += answer.body
            position += len(answer.body)
    return bytes(image), client


def resumed_download(host: str, port: int, path: str, headers: dict[str, str], offset: int) -> tuple[bytes, Client]:
    """``ota_resumption`` without partial download: one GET with ``Range: bytes=<offset>-``.

    The device already holds the first ``offset`` bytes; a 206 continues them, any other
    2xx (or a 416) is taken as the image from byte 0.
    """
    kept = _whole(host, port, path, headers)[:offset] if offset else b""
    client = Client(host, port, path, dict(headers))
    with client:
        answer = client.request("GET", f"bytes={offset}-")
        if answer.status == 206:
            return kept + answer.body, client
        if answer.status == 416:
            answer = client.request("GET")
        _fail_unless_2xx(answer)
        return answer.body, client


def _whole(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    """What an earlier, interrupted attempt wrote: taken from a plain GET."""
    with Client(host, port, path, dict(headers)) as client:
        answer = client.request("GET")
    _fail_unless_2xx(answer)
    return answer.body
