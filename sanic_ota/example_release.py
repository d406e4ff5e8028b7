"""The example release: a small, valid release, so the server has something real to serve.

``write_release(store, version)`` writes the release's ``ota.bin`` and ``mqtt_ca.bin``
into a store (``make example``, ``tools/make_example_release.py``); tests and bench/
build their images with ``build_app_image``. The bytes are fixed (no timestamps, no
randomness): building twice gives identical files, so an example manifest and its
signature stay valid and tests can compare builds.

``ota.bin`` is a structurally valid ESP32 application image, built with esptool's
own image writer (``ESP32FirmwareImage.save``; esptool 5 or newer, where ``save(None)``
returns the bytes), so its layout is esptool's, not ours:

    header (8)           0xE9, segment count, flash mode DIO, 4 MB / 40 MHz, entry
    extended header (16) WP pin disabled, chip id 0 (ESP32), max chip rev v3.99,
                         hash_appended = 1
    segment 0 (DROM, 0x3F400020): esp_app_desc_t (256 bytes) then filler text;
                         the app description sits at file offset 32, where ESP-IDF
                         and esptool look for it
    segment 1 (IRAM, 0x40080000): 64 bytes of Xtensa ``nop.n``
    padding to 16 bytes, checksum byte, SHA-256 of everything before it

It passes ``esptool image-info`` (checksum and hash valid) but holds no real code:
never flash it to a module you care about.

``mqtt_ca.bin`` uses ESP-AT's PKI partition format (``tools/AtPKI.py`` in esp-at),
all integers little-endian:

    magic 0xF1F1 (2) | item count (2) | length of the items (4) | items
    item: type (1: 0x01 CA) | id (1) | content length (2) | content | 0xFF to 4 bytes

with one CA item holding a PEM-shaped text. The text is not a real certificate.
"""

from __future__ import annotations

import base64
import struct
import textwrap

from esptool.bin_image import ELFSection, ESP32FirmwareImage

from sanic_ota.store.local import LocalStore
from sanic_ota.versions import check_name

DROM_ADDR = 0x3F400020
IRAM_ADDR = 0x40080000
APP_DESC_MAGIC = 0xABCD5432
IDF_VERSION = "v5.1.2"
COMPILE_DATE = "Jan  1 2024"
COMPILE_TIME = "00:00:00"

#: ``esp_app_desc_t``: magic, secure_version, reserved, version, project_name,
#: time, date, idf_ver, app_elf_sha256, min/max efuse block rev, mmu page size,
#: reserved; 256 bytes.
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")
_NOP_N = b"\x3d\xf0"
_PKI_CA = 0x01

EXAMPLE_CA = (
    b"-----BEGIN CERTIFICATE-----\n"
    + textwrap.fill(
        base64.b64encode(
            b"sanic_ota example CA: placeholder bytes, not a certificate. " * 4
        ).decode(),
        64,
    ).encode()
    + b"\n-----END CERTIFICATE-----\n"
)


def build_app_image(
    version: str, project: str = "sanic_ota_example", size: int = 4096
) -> bytes:
    """Return an ESP32 application image of about ``size`` bytes (at least ~400).

    ``version`` and ``project`` must fit their 32-byte C strings (31 bytes + NUL).
    """
    description = _APP_DESC.pack(
        APP_DESC_MAGIC,
        0,
        b"",
        _c_string(version, "version"),
        _c_string(project, "project"),
        COMPILE_TIME.encode(),
        COMPILE_DATE.encode(),
        IDF_VERSION.encode(),
        b"",  # no ELF file exists, so no ELF SHA-256
        0,
        99,  # max efuse block revision v0.99: no limit that matters here
        0,
        b"",
        b"",
    )
    code = _NOP_N * 32
    # header, two segment headers, code, checksum block, SHA-256
    overhead = 24 + 2 * 8 + len(code) + 16 + 32
    filler_len = max(0, size - overhead - len(description)) // 4 * 4
    filler = (f"{project} {version} example rodata\n".encode() * size)[:filler_len]

    image = ESP32FirmwareImage()
    image.flash_mode = 2  # DIO
    image.flash_size_freq = 0x20  # 4 MB, 40 MHz
    image.entrypoint = IRAM_ADDR
    image.max_rev_full = 399
    image.segments = [
        ELFSection(b".flash.appdesc", DROM_ADDR, description + filler, flags=0),
        ELFSection(b".iram0.text", IRAM_ADDR, code, flags=0),
    ]
    return bytes(image.save(None))


def build_cert_partition(text: bytes) -> bytes:
    """Return an ESP-AT PKI partition holding ``text`` as its one CA item (id 0)."""
    if len(text) > 0xFFFF:
        raise ValueError(f"certificate of {len(text)} bytes does not fit 16 bits")
    item = struct.pack("<BBH", _PKI_CA, 0, len(text)) + text
    item += b"\xff" * (-len(item) % 4)
    return struct.pack("<HHI", 0xF1F1, 1, len(item)) + item


def write_release(store: LocalStore, version: str, app_version: str | None = None) -> list[tuple[str, int]]:
    """Write the example release into ``store`` as release ``version``; (where, length) of each file.

    ``version`` must be a plain name (``BadRequest`` otherwise, before anything is
    written), as the server requires of every release. ``app_version`` is the
    version inside the image (default: ``version``).
    """
    check_name(version, "release name")
    files = {"ota.bin": build_app_image(app_version or version), "mqtt_ca.bin": build_cert_partition(EXAMPLE_CA)}
    store.publish(version, files)
    return [(store.where(version, name), len(data)) for name, data in files.items()]


def _c_string(value: str, what: str) -> bytes:
    """Encode ``value`` for a 32-byte C string field, refusing what would not fit."""
    encoded = value.encode()
    if len(encoded) > 31:
        raise ValueError(f"{what} {value!r} is longer than 31 bytes")
    return encoded
