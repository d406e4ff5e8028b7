"""Tests for tools/make_example_release.py (``make example``, ``sanic-ota-example``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_ota.example_release import build_app_image
from sanic_ota.tools import make_example_release


def test_writes_the_release_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--partitions", str(tmp_path), "--version", "v9", "--app-version", "9.0"]
    assert make_example_release.main(argv) == 0
    assert (tmp_path / "v9" / "ota.bin").read_bytes() == build_app_image("9.0")
    assert f"wrote {tmp_path / 'v9' / 'ota.bin'} ({len(build_app_image('9.0'))} bytes)" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "why"), [
    (["--version", "../escape"], "plain name"),
    (["--version", "v1", "--app-version", "v" * 32], "longer than 31 bytes"),
])
def test_refuses_bad_arguments_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], why: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        make_example_release.main(["--partitions", str(tmp_path / "partitions"), *argv])
    assert exit_info.value.code == 2 and why in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
