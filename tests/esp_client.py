"""A client that reads the server's bytes the way ESP-AT's ``at_ota_cmd.c`` does.

Not an HTTP library on purpose: it sends the module's exact requests and applies
its byte-level rules (``shared/esp-at-client.md``), so a response that a browser
accepts but a module rejects fails here too.
"""

from __future__ import annotations

import socket
import ssl

READ_SIZE = 1024  # TEXT_BUFFSIZE in the firmware
LISTING_BUFFER = 8192

HEADERS = (
    "Connection: keep-alive\r\nCache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (Windows NT 5.1) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/30.0.1599.101 Safari/537.36 \r\nAccept: */*\r\nAuthorization: token {token}\r\n"
    "Accept-Encoding: gzip,deflate,sdch\r\nAccept-Language: zh-CN,zh;q=0.8\r\n\r\n"
)

#: The firmware's partition signatures, name -> (offset, magic bytes). A name missing
#: here fails the firmware's magic check whatever the body holds.
MAGIC = {
    "ota": (0, b"\xe9"), "ble_data": (2, b"\x27\x95"), "factory_param": (0, b"\xfc\xfc"),
    **{f"{use}_{kind}": (0, b"\xf1\xf1")  # the certificate partitions
       for use in ("mqtt", "client", "server", "wpa2") for kind in ("ca", "cert", "key")},
}


class ModuleError(AssertionError):
    """What makes a real module print an error and abort the update."""


def _connect(host: str, port: int, tls: bool, timeout: float, source: str | None = None) -> socket.socket:
    """``source``: the module's own address (another loopback address stands for another module)."""
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=None if source is None else (source, 0))
    if tls:  # mode 1: esp-tls with an empty configuration, no CA check
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return sock


def version_query(host: str, port: int, token: str, tls: bool = False, timeout: float = 10.0,
                  source: str | None = None) -> str:
    """Plain ``AT+CIUPDATE``: the ``rom_version": "`` search, as both firmware generations do it.

    Current firmware reads until the buffer holds ``rom_version": `` and ``status`` or
    the server closes; an answer without them that leaves the socket open makes it sit
    out its socket timeout (``timeout`` here) before it reports ERROR. esp-at v2.x reads
    only once, so the version must already be in the first 1024-byte read.
    """
    with _connect(host, port, tls, timeout, source) as sock:
        request = f"GET /v1/device/rom/?is_format_simple=true HTTP/1.0\r\nHost: {host}:{port}\r\n"
        sock.sendall((request + HEADERS.format(token=token)).encode())
        first = data = chunk = sock.recv(READ_SIZE)
        try:
            while chunk and not (b'rom_version": ' in data and b"status" in data):
                kept = data[-64:] if len(chunk) > 64 else b""  # the firmware's overlap between reads
                chunk = sock.recv(READ_SIZE - len(kept))
                data = kept + chunk
        except TimeoutError:
            raise ModuleError(f"no version and no close within {timeout} s: {first[:200]!r}") from None
    start = first.find(b'rom_version": ')
    if start < 0:
        raise ModuleError(f"rom_version error! first read was {first[:200]!r}")
    value = first[start + len(b'rom_version": "') :]
    end = value.find(b'",')
    if end < 0:
        raise ModuleError("rom_version tail error!")
    return value[:end].decode()


def download(
    host: str, port: int, token: str, version: str, partition: str,
    partition_size: int = 4 * 1024 * 1024, tls: bool = False, timeout: float = 10.0,
) -> bytes:
    """``AT+CIUPDATE=<mode>,"<version>","<partition>"``: the image as the module writes it.

    Raises ``ModuleError`` where the module reports ERROR. Returns ``b""`` where the
    firmware finds no ``Content-Length: `` in its first read (or no answer at all) and
    stops as if the download were complete: for the application (``ota``) the empty
    image then fails, for any other partition the module reports OK with the
    partition erased. A server must never get there.
    """
    offset, magic = MAGIC.get(partition, (0, b""))
    with _connect(host, port, tls, timeout) as sock:
        request = (
            f"GET /v1/device/rom/?action=download_rom&version={version}&filename={partition}.bin "
            f"HTTP/1.1\r\nHost: {host}:{port}\r\n"
        )
        sock.sendall((request + HEADERS.format(token=token)).encode())
        first = sock.recv(READ_SIZE)
        at = first.find(b"Content-Length: ")  # case-sensitive strstr in the firmware
        if at < 0:
            if partition == "ota":
                raise ModuleError(f"no 'Content-Length: ' in the first read, empty image: {first[:300]!r}")
            return b""  # the module reports OK: the erased partition stays empty
        digits = first[at + 16 :].split(b"\r\n", 1)[0]
        total = int(digits) if digits.isdigit() else 0
        end = first.find(b"\r\n\r\n")
        if end < 0:
            # the firmware would search the next read for Content-Length again and stop there
            raise ModuleError("headers did not end within the first read")
        body = bytearray(first[end + 4 :])
        if not magic:
            raise ModuleError(f"{partition}: the firmware knows no magic bytes for this partition name")
        if body[offset : offset + len(magic)] != magic:
            raise ModuleError(f"{partition} partition has an invalid magic byte: {bytes(body[:4]).hex()}")
        if total > partition_size:
            raise ModuleError(f"Content-Length {total} is larger than the partition")
        while len(body) < total:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise ModuleError(f"connection closed after {len(body)} of {total} bytes")
            body += chunk
        if len(body) != total:
            raise ModuleError(f"received {len(body)} bytes, Content-Length said {total}")
        return bytes(body)


def list_versions(host: str, port: int, token: str, tls: bool = False, timeout: float = 10.0) -> list[str]:
    """``AT+CIPFWVER?``: esp_http_client into an 8192-byte buffer, then ``"version": `` items."""
    with _connect(host, port, tls, timeout) as sock:
        sock.sendall(
            f"GET /v1/device/rom HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: token {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status >= 400:
        raise ModuleError(f"listing answered {status}")
    if len(body) > LISTING_BUFFER:
        raise ModuleError(f"listing body of {len(body)} bytes overruns the module's 8192-byte buffer")
    versions, pos = [], 0
    while (pos := body.find(b'"version": ', pos)) >= 0:
        value = body[pos + len(b'"version": "') :]
        end = value.find(b'", ')
        if end < 0:
            raise ModuleError('a "version": "X" without ", " after it crashes the module')
        versions.append(value[:end].decode())
        pos += 1
    return versions
