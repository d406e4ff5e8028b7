"""Docs that stay true: every setting documented, the two commands first."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from sanic_ota.settings import describe
from sanic_ota.tools import publish
from sanic_ota.web.server import TIMEOUT_DEFAULTS

README = (REPO / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:1500]
    assert "make run" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    for variable, _, _ in describe():
        assert f"`{variable}`" in README, variable


def test_sanic_timeouts_are_documented_with_their_values() -> None:
    for name, value in TIMEOUT_DEFAULTS.items():
        assert re.search(rf"SANIC_{name}={int(value)}\b", README), name


def test_make_targets_in_the_readme_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    # commands, not prose: `make x` in backticks, or an indented (code block) line
    for target in set(re.findall(r"(?:`|^\s+(?:sudo )?)make ([a-z][a-z0-9-]*)", README, re.M)):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_files_the_readme_names_exist() -> None:
    named = set(re.findall(r"\b((?:tools|deploy|bench)/[\w.-]+\.(?:py|conf|service|env|sh))\b", README))
    assert "deploy/nginx-replicas.conf" in named and "tools/publish.py" in named
    for path in named:
        assert (REPO / path).is_file(), path


def test_publish_options_in_the_readme_exist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        publish.main(["--help"])
    usage = capsys.readouterr().out
    # what follows "publish" on a line of the README, commands and prose alike
    tails = [line[line.index("publish"):] for line in README.splitlines() if "publish" in line]
    flags = {flag for tail in tails for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", tail)}
    assert {"--to", "--pin", "--delete"} <= flags and "`--force`" in README
    for flag in flags | {"--force"}:
        assert flag in usage, flag
