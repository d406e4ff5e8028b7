"""What a partition image says about itself, and whether the module would take it.

The ESP-AT client checks only a few magic bytes at the start of the body, and a
module that flashes a broken application image finds out only at the next boot.
So the server checks more than the client does, before it ever offers a file: an
``ota`` image is validated as the bootloader would (header, every segment present,
checksum byte, appended SHA-256) and its ``esp_app_desc_t`` is read, so the manifest
can record which project and version the bytes really hold.

Everything here takes ``bytes`` and does no I/O. Parsing is left to esptool, whose
image classes are the reference for this format; none of its exceptions leave this
module, every problem becomes an ``ImageError``. esptool is imported when the first
application image is inspected, not with this module: it takes a tenth of a second
(click, rich, serial), which Sanic's main process (it never inspects an image) and a
restart with nothing to hash would pay for nothing.
"""

from __future__ import annotations

import io
import struct
from functools import cache
from typing import TYPE_CHECKING, Any

from sanic_ota.errors import ImageError

if TYPE_CHECKING:
    from esptool.bin_image import ESP32FirmwareImage

_CERTIFICATE = (0, b"\xf1\xf1")

#: Partition name -> (offset, magic bytes), as the ESP-AT client checks them in the
#: first bytes of the body. Names not listed (custom partitions) have no check.
PARTITION_MAGIC: dict[str, tuple[int, bytes]] = {
    "ota": (0, b"\xe9"),
    **{
        f"{use}_{kind}": _CERTIFICATE
        for use in ("mqtt", "client", "server", "wpa2")
        for kind in ("ca", "cert", "key")
    },
    "factory_param": (0, b"\xfc\xfc"),
    "ble_data": (2, b"\x27\x95"),
}

#: Image header (8 bytes) plus extended header (16 bytes): where segments begin.
_HEADER_LEN = 24
_CHIP_ID_OFFSET = 12
_HASH_APPENDED_OFFSET = 23

#: The first 144 of the 256 bytes of ``esp_app_desc_t`` (ESP-IDF ``esp_app_format.h``)
#: that begins the first segment: magic, secure_version, reserved, then the strings.
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s")
_APP_DESC_MAGIC = 0xABCD5432


@cache
def _chips() -> dict[int, Any]:
    """esptool's chip classes by the id the image header carries (ESP8266 has none); each
    knows its name and its image class (``BOOTLOADER_IMAGE``, set by ``esptool.bin_image``)."""
    import esptool.bin_image  # noqa: F401  (gives each chip class its image class)
    from esptool.targets import CHIP_DEFS

    return {rom.IMAGE_CHIP_ID: rom for rom in CHIP_DEFS.values() if hasattr(rom, "IMAGE_CHIP_ID")}


def check_magic(partition: str, data: bytes) -> None:
    """Raise ``ImageError`` unless ``data`` starts the way the client expects.

    This is the only check the module itself makes before it erases the partition
    and writes the body, so a file that fails here would surely be refused.
    """
    if partition not in PARTITION_MAGIC:
        return
    offset, magic = PARTITION_MAGIC[partition]
    seen = bytes(data[offset : offset + len(magic)])
    if len(seen) < len(magic):
        raise ImageError(
            f"{partition} image is too short: {len(data)} bytes, the magic "
            f"{magic.hex(' ')} is expected at offset {offset}"
        )
    if seen != magic:
        raise ImageError(
            f"{partition} image has the wrong magic at offset {offset}: "
            f"expected {magic.hex(' ')}, seen {seen.hex(' ')}"
        )


def describe_app_image(data: bytes) -> dict[str, str]:
    """Validate an application image and return what it says about itself.

    Checked as the bootloader checks before it boots an image: header, every
    segment present, checksum byte, and the SHA-256 if the header says one is
    appended. Segment load addresses are not checked. Trailing bytes after the
    image (padding to a flash size) are ignored, as the bootloader ignores them.
    Any structural problem raises ``ImageError``.
    """
    data = bytes(data)
    if len(data) < _HEADER_LEN:
        raise ImageError(
            f"application image is truncated: {len(data)} bytes, "
            f"its header alone is {_HEADER_LEN}"
        )
    if data[0] != 0xE9:
        raise ImageError(f"not an application image: magic {data[0]:#04x}, not 0xe9")
    chip_id = int.from_bytes(data[_CHIP_ID_OFFSET : _CHIP_ID_OFFSET + 2], "little")
    chip = _chips().get(chip_id)
    if chip is None:
        raise ImageError(f"application image has an unknown chip id {chip_id}")
    image = _load(chip.BOOTLOADER_IMAGE, data)
    _check_integrity(image)
    if not image.segments:
        raise ImageError("application image has no segments")
    return {**_app_description(image.segments[0].data), "chip": chip.CHIP_NAME}


def inspect(partition: str, data: bytes) -> dict[str, object]:
    """Return what a manifest records about a file beyond its length and hash.

    Raises ``ImageError`` for a file the module would reject or fail to boot.
    """
    check_magic(partition, data)
    if partition == "ota":
        return {"image": describe_app_image(data)}
    return {}


def _load(image_class: type[ESP32FirmwareImage], data: bytes) -> ESP32FirmwareImage:
    """Parse with esptool's image class, turning whatever it raises into ``ImageError``.

    esptool reports a short read as ``struct.error`` or ``TypeError`` when the
    bytes end in a segment header or before the checksum byte, and as
    ``FatalError`` when they end inside a segment; for untrusted input anything
    it raises means a bad image. It prints nothing while loading an ESP32-family
    image (the tests check that).
    """
    if data[_HASH_APPENDED_OFFSET] not in (0, 1):
        raise ImageError(
            f"application image header is corrupt: hash_appended is "
            f"{data[_HASH_APPENDED_OFFSET]:#04x}, not 0 or 1"
        )
    try:
        return image_class(io.BytesIO(data))
    except (struct.error, TypeError) as e:
        raise ImageError(
            "application image is truncated: it ends in a segment header "
            "or before its checksum"
        ) from e
    except Exception as e:
        raise ImageError(f"application image is truncated or malformed: {e}") from e


def xor_bytes(data: bytes, state: int = 0) -> int:
    """``state`` XOR every byte of ``data``: esptool's ``ESPLoader.checksum``, in C speed.

    esptool folds the bytes one by one in Python: 54 ms for a 1.6 MB image, which
    made indexing 700 such releases take longer than Sanic's 30 s start-up limit.
    Folding the whole image as one integer, halving it each step, takes about 4 ms.
    """
    value, length = int.from_bytes(data, "little"), len(data)
    while length > 1:
        half = length // 2
        value = (value >> (8 * half)) ^ (value & ((1 << (8 * half)) - 1))
        length -= half
    return state ^ value


def _checksum(image: ESP32FirmwareImage) -> int:
    """``image.calculate_checksum()``, segment by segment as esptool defines it, but fast."""
    from esptool.loader import ESPLoader  # imported by _chips() already

    checksum: int = ESPLoader.ESP_CHECKSUM_MAGIC
    for segment in image.segments:
        if segment.include_in_checksum:
            checksum = xor_bytes(segment.data, checksum)
    return checksum


def _check_integrity(image: ESP32FirmwareImage) -> None:
    """Check the checksum byte and, if the header says so, the appended SHA-256."""
    calculated = _checksum(image)
    if image.checksum != calculated:
        raise ImageError(
            f"application image checksum is wrong: stored {image.checksum:#04x}, "
            f"calculated {calculated:#04x}"
        )
    if not image.append_digest:
        return
    if len(image.stored_digest) < len(image.calc_digest):
        raise ImageError("application image is truncated: its SHA-256 is missing")
    if image.stored_digest != image.calc_digest:
        raise ImageError(
            f"application image SHA-256 is wrong: stored {image.stored_digest.hex()}, "
            f"calculated {image.calc_digest.hex()}"
        )


def _app_description(segment: bytes) -> dict[str, str]:
    """Read the ``esp_app_desc_t`` that ESP-IDF places first in the first segment."""
    if len(segment) < _APP_DESC.size:
        raise ImageError("application image has no app description (segment too short)")
    magic, _, _, version, project, time, date, idf = _APP_DESC.unpack_from(segment)
    if magic != _APP_DESC_MAGIC:
        raise ImageError(
            f"application image has no app description: magic {magic:#010x}, "
            f"expected {_APP_DESC_MAGIC:#010x}"
        )
    return {
        "project_name": _text(project),
        "app_version": _text(version),
        "idf_version": _text(idf),
        "compile_date": _text(date),
        "compile_time": _text(time),
    }


def _text(field: bytes) -> str:
    """A NUL-terminated C string; never fails, odd bytes become U+FFFD."""
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")
