"""Every setting, declared once, typed, with its default.

Settings arrive through Sanic's ``SANIC_`` environment prefix (``SANIC_OTA_KEYS_FILE``
and so on). The server and the tools both read them from the raw environment with
``from_environ``: Sanic's copy in ``app.config`` has already turned values that look
like numbers into numbers (a directory named ``007`` would become ``7``). Paths are
relative to the working directory, as with the original server. Tests build
``Settings(...)`` directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanic_ota.audit import LOG_FORMATS
from sanic_ota.errors import ConfigurationError

#: Prefix of the keys this module reads from ``app.config`` (after Sanic strips ``SANIC_``).
CONFIG_PREFIX = "OTA_"
ENV_PREFIX = "SANIC_" + CONFIG_PREFIX


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    keys_file: Path = field(
        default=Path("authorisation_keys.json"),
        metadata=_doc("JSON list of device keys, the original server's format (mode 0600)."),
    )
    partitions_dir: Path = field(
        default=Path("partitions"),
        metadata=_doc("Releases: partitions/<version>/<name>.bin; partitions/LATEST pins one."),
    )
    manifests_dir: Path = field(
        default=Path("manifests"),
        metadata=_doc("Signed manifests, one manifests/<version>.json per release."),
    )
    signing_key: Path = field(
        default=Path("manifest_signing_key.pem"),
        metadata=_doc("Ed25519 private key (PEM, mode 0600) that signs manifests."),
    )
    public_key: Path | None = field(
        default=None,
        metadata=_doc("Ed25519 public key (PEM); default: beside the private key, .pub.pem."),
    )
    sign_manifests: bool = field(
        default=True,
        metadata=_doc("true: the server signs manifests; false: it only verifies them."),
    )
    quiet_seconds: float = field(
        default=1.0,
        metadata=_doc("How long a release must be unchanged before it is re-indexed."),
    )
    cache_bytes: int = field(
        default=512 * 1024 * 1024,
        metadata=_doc("Memory kept for verified images; a larger file is served from a verified copy on disk."),
    )
    stats_file: Path | None = field(
        default=None,
        metadata=_doc("SQLite file of download counts and recent failures for /status, shared by workers; "
                      "default: manifests/.stats.sqlite3."),
    )

    log_format: str = field(
        default="text",
        metadata=_doc("Audit log lines: text (key=value) or json (one object per line)."),
    )

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigurationError(f"{ENV_PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")

    @property
    def public_key_path(self) -> Path:
        if self.public_key is not None:
            return self.public_key
        name = self.signing_key.name.removesuffix(".pem")
        return self.signing_key.with_name(name + ".pub.pem")

    @property
    def stats_path(self) -> Path:
        """Where the status page's counts live: ``stats_file``, else inside ``manifests_dir``."""
        return self.stats_file if self.stats_file is not None else self.manifests_dir / ".stats.sqlite3"

    @property
    def latest_file(self) -> Path:
        """The file an operator writes a version into to pin plain ``AT+CIUPDATE``."""
        return self.partitions_dir / "LATEST"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read ``OTA_*`` keys from a mapping of strings (``from_environ`` strips ``SANIC_``)."""
        values = {}
        for f in dataclasses.fields(cls):
            key = CONFIG_PREFIX + f.name.upper()
            if key in config and config[key] is not None:
                values[f.name] = _coerce(f.name, f.default, config[key])
        return cls(**values)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``SANIC_OTA_*`` variables, for the tools that run without Sanic."""
        prefix_len = len("SANIC_")
        return cls.from_config({k[prefix_len:]: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})


def _coerce(name: str, default: Any, value: Any) -> Any:
    try:
        if isinstance(default, bool):
            return _boolean(value)
        if isinstance(default, (int, float)):
            return type(default)(value)
        if value == "":
            return default
        if isinstance(default, str):
            return str(value).strip().lower()
        return Path(str(value))  # Sanic turns SANIC_OTA_PARTITIONS_DIR=2024 into an int
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}={value!r}: {e}") from e


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs and their test."""
    return [
        (ENV_PREFIX + f.name.upper(), "" if f.default is None else str(f.default), f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]
