"""Tests for sanic_ota.images, against images made by sanic_ota.example_release."""

from __future__ import annotations

import hashlib
import io
import struct

import pytest
from esptool.bin_image import ESP32FirmwareImage
from esptool.loader import ESPLoader
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_ota.errors import ImageError
from sanic_ota.example_release import EXAMPLE_CA, build_app_image, build_cert_partition
from sanic_ota.images import PARTITION_MAGIC, check_magic, describe_app_image, inspect, xor_bytes

IMAGE = build_app_image("v1.2.3")
#: Header (24) + segment header (8) + esp_app_desc_t (256): filler text begins here.
FILLER = 24 + 8 + 256
#: Where the data of the second (IRAM) segment begins.
SEGMENT_1 = 24 + 8 + struct.unpack_from("<I", IMAGE, 28)[0] + 8
CHECKSUM = len(IMAGE) - 33


def _patched(image: bytes, offset: int, new: bytes) -> bytes:
    """Change segment bytes and repair checksum and SHA, as a careful forger would."""
    out = bytearray(image)
    for i, byte in enumerate(new):
        out[CHECKSUM] ^= out[offset + i] ^ byte
        out[offset + i] = byte
    out[-32:] = hashlib.sha256(out[:-32]).digest()
    return bytes(out)


def test_magic_table_is_what_the_client_checks() -> None:
    certs = {
        f"{use}_{kind}": (0, b"\xf1\xf1")
        for use in ("mqtt", "client", "server", "wpa2")
        for kind in ("ca", "cert", "key")
    }
    assert PARTITION_MAGIC == {
        "ota": (0, b"\xe9"),
        **certs,
        "factory_param": (0, b"\xfc\xfc"),
        "ble_data": (2, b"\x27\x95"),
    }


@pytest.mark.parametrize("partition", sorted(PARTITION_MAGIC))
def test_good_magic_passes(partition: str) -> None:
    offset, magic = PARTITION_MAGIC[partition]
    check_magic(partition, b"\x00" * offset + magic + b"rest")


@pytest.mark.parametrize("partition", sorted(PARTITION_MAGIC))
def test_bad_magic_names_partition_offset_and_bytes(partition: str) -> None:
    offset, magic = PARTITION_MAGIC[partition]
    wrong = bytes(b ^ 0xFF for b in magic)
    with pytest.raises(ImageError) as raised:
        check_magic(partition, b"\x00" * offset + wrong + b"rest")
    message = str(raised.value)
    assert partition in message
    assert f"offset {offset}" in message
    assert magic.hex(" ") in message and wrong.hex(" ") in message


@pytest.mark.parametrize("partition", sorted(PARTITION_MAGIC))
def test_too_short_for_magic(partition: str) -> None:
    offset, magic = PARTITION_MAGIC[partition]
    for data in (b"", (b"\x00" * offset + magic)[:-1]):
        with pytest.raises(ImageError, match="too short"):
            check_magic(partition, data)


def test_ble_data_magic_is_at_offset_2() -> None:
    check_magic("ble_data", b"\x00\x00\x27\x95")
    with pytest.raises(ImageError):
        check_magic("ble_data", b"\x27\x95\x00\x00")


@pytest.mark.parametrize("data", [b"", b"\x00", b"anything at all"])
def test_custom_partitions_have_no_magic(data: bytes) -> None:
    check_magic("mfg_nvs", data)
    assert inspect("mfg_nvs", data) == {}


def test_describe_generated_image() -> None:
    assert describe_app_image(IMAGE) == {
        "project_name": "sanic_ota_example",
        "app_version": "v1.2.3",
        "idf_version": "v5.1.2",
        "chip": "ESP32",
        "compile_date": "Jan  1 2024",
        "compile_time": "00:00:00",
    }


def test_inspect() -> None:
    assert inspect("ota", IMAGE) == {"image": describe_app_image(IMAGE)}
    cert = build_cert_partition(EXAMPLE_CA)
    assert inspect("mqtt_ca", cert) == {}
    with pytest.raises(ImageError):
        inspect("ota", cert)
    with pytest.raises(ImageError):
        inspect("mqtt_ca", IMAGE)


def test_trailing_padding_is_ignored() -> None:
    assert describe_app_image(IMAGE + b"\xff" * 4096)["app_version"] == "v1.2.3"


@pytest.mark.parametrize(
    "cut", [0, 1, 8, 23, 24, 31, 32, 200, FILLER + 10, CHECKSUM - 1, CHECKSUM, -1]
)
def test_truncated_image(cut: int) -> None:
    with pytest.raises(ImageError, match="truncated"):
        describe_app_image(IMAGE[:cut])


def test_flips_that_keep_the_checksum_break_the_sha() -> None:
    broken = bytearray(IMAGE)
    broken[FILLER] ^= 0x01
    broken[FILLER + 1] ^= 0x01
    with pytest.raises(ImageError, match="SHA-256 is wrong"):
        describe_app_image(bytes(broken))


@pytest.mark.parametrize("offset", [2, 4, CHECKSUM - 1, CHECKSUM + 1, len(IMAGE) - 1])
def test_flipped_byte_outside_the_checksum_breaks_the_sha(offset: int) -> None:
    broken = bytearray(IMAGE)
    broken[offset] ^= 0x01
    with pytest.raises(ImageError, match="SHA-256 is wrong"):
        describe_app_image(bytes(broken))


@pytest.mark.parametrize("offset", [FILLER, SEGMENT_1, SEGMENT_1 + 63])
def test_flipped_byte_in_a_segment_breaks_the_checksum(offset: int) -> None:
    broken = bytearray(IMAGE)
    broken[offset] ^= 0x01
    with pytest.raises(ImageError, match="checksum is wrong"):
        describe_app_image(bytes(broken))


def test_flipped_byte_with_repaired_sha_breaks_the_checksum() -> None:
    broken = bytearray(IMAGE)
    broken[FILLER] ^= 0x01
    broken[-32:] = hashlib.sha256(broken[:-32]).digest()
    with pytest.raises(ImageError, match="checksum"):
        describe_app_image(bytes(broken))


def test_patched_helper_keeps_image_valid() -> None:
    assert describe_app_image(_patched(IMAGE, FILLER, b"ZZZZ"))


def test_missing_app_description() -> None:
    with pytest.raises(ImageError, match="app description"):
        describe_app_image(_patched(IMAGE, 32, b"\x00\x00\x00\x00"))


def test_wrong_image_magic() -> None:
    with pytest.raises(ImageError, match="0xe9"):
        describe_app_image(b"\xe8" + IMAGE[1:])


def test_bad_hash_appended_field() -> None:
    with pytest.raises(ImageError, match="hash_appended"):
        describe_app_image(IMAGE[:23] + b"\x02" + IMAGE[24:])


def test_unknown_chip_id() -> None:
    with pytest.raises(ImageError, match="chip id"):
        describe_app_image(IMAGE[:12] + b"\xff\x7f" + IMAGE[14:])


@pytest.mark.parametrize(
    "data", [b"", b"\xe9", b"\x00" * 4096, b"\xe9" * 4096, bytes(range(256)) * 8]
)
def test_garbage(data: bytes) -> None:
    with pytest.raises(ImageError):
        describe_app_image(data)


def test_every_cut_and_flip_is_an_image_error_and_silent(capfd) -> None:
    for cut in range(len(IMAGE)):
        with pytest.raises(ImageError):
            describe_app_image(IMAGE[:cut])
    for offset in range(len(IMAGE)):
        broken = bytearray(IMAGE)
        broken[offset] ^= 0xA5
        with pytest.raises(ImageError):
            describe_app_image(bytes(broken))
    describe_app_image(IMAGE)
    assert capfd.readouterr() == ("", "")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 255))
def test_xor_bytes_is_esptools_checksum(data: bytes, state: int) -> None:
    assert xor_bytes(data, state) == ESPLoader.checksum(data, state)


def test_the_checksum_agrees_with_esptool_on_a_large_image() -> None:
    image = ESP32FirmwareImage(io.BytesIO(build_app_image("v1", size=1_600_000)))
    calculated = ESPLoader.ESP_CHECKSUM_MAGIC
    for segment in image.segments:
        calculated = xor_bytes(segment.data, calculated)
    assert calculated == image.calculate_checksum() == image.checksum
