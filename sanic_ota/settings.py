"""Every setting, declared once, typed, with its default.

Settings are ``SANIC_OTA_*`` environment variables (``SANIC_OTA_KEYS_FILE`` and so on).
The server and the tools both read them from the raw environment with ``from_environ``;
``to_environ`` gives them back, for a process started with the same settings. Sanic
also copies every ``SANIC_*`` variable into ``app.config``, turning values that look
like numbers into numbers (a directory named ``007`` would become ``7``), so nothing
reads that copy. Paths are relative to the working directory, as with the original
server. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanic_ota.audit import LOG_FORMATS
from sanic_ota.errors import ConfigurationError

#: Prefix of the keys ``from_config`` reads: the variable names without ``SANIC_``.
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
    channels_dir: Path = field(
        default=Path("channels"),
        metadata=_doc("Channel files, one channels/<name>.json per channel: its pin and its rollout "
                      "(written by the admin API)."),
    )
    upload_max_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_doc("Largest release upload the admin API takes (a tar of the release's files); "
                      "a larger one gets 413 and nothing of it is kept."),
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
        metadata=_doc("true: the server signs manifests; false: it only verifies them (the default with "
                      "SANIC_OTA_STORE, where true is refused)."),
    )
    quiet_seconds: float = field(
        default=1.0,
        metadata=_doc("How long a release must be unchanged before it is re-indexed."),
    )
    rescan_seconds: float = field(
        default=10.0,
        metadata=_doc("How often a stat-only re-scan catches what file events missed "
                      "(a replaced or re-linked partitions/, a lost watch)."),
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
    header_timeout: float = field(
        default=10.0,
        metadata=_doc("Seconds a request's headers may take from their first byte; slower ones get 408 "
                      "and the connection is closed, however steadily bytes trickle in."),
    )
    max_unauthenticated_connections: int = field(
        default=256,
        metadata=_doc("Connections one client address may hold open per worker before a request on "
                      "them passed authentication; more are closed at once. 0: no cap."),
    )

    log_format: str = field(
        default="text",
        metadata=_doc("Audit log lines: text (key=value) or json (one object per line)."),
    )
    extra_ports: tuple[int, ...] = field(
        default=(),
        metadata=_doc("More ports to listen on besides --port, comma-separated, such as 80: AT+CIPFWVER? "
                      "always connects to 80 (443 with TLS), whatever port the module updates from."),
    )
    store: str = field(
        default="",
        metadata=_doc("Empty: releases in the local partitions/ and manifests/. s3://bucket/prefix: a replica "
                      "that mirrors the bucket into the cache directory and serves the verified copy."),
    )
    cache_dir: Path = field(
        default=Path("cache"),
        metadata=_doc("With a store: the replica's copy of the bucket (partitions/, manifests/, channels/) and "
                      "its own records; one directory per replica."),
    )
    cache_dir_bytes: int = field(
        default=4 * 1024 * 1024 * 1024,
        metadata=_doc("With a store: most bytes of releases the cache directory holds; the oldest releases "
                      "are left out first, never the newest, the pinned one, or one a channel pins or rolls out."),
    )
    poll_seconds: float = field(
        default=5.0,
        metadata=_doc("With a store: how often the bucket is listed (one ListObjectsV2; nothing is fetched "
                      "unless something changed)."),
    )

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigurationError(f"{ENV_PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        if not self.rescan_seconds > 0:  # 0 would re-scan on every tick of the watcher
            raise ConfigurationError(f"{ENV_PREFIX}RESCAN_SECONDS must be more than 0")
        if not 0 < self.header_timeout < math.inf:  # also NaN
            raise ConfigurationError(f"{ENV_PREFIX}HEADER_TIMEOUT must be a positive number of seconds")
        if self.upload_max_bytes < 1:
            raise ConfigurationError(f"{ENV_PREFIX}UPLOAD_MAX_BYTES must be 1 or more")
        if self.max_unauthenticated_connections < 0:
            raise ConfigurationError(f"{ENV_PREFIX}MAX_UNAUTHENTICATED_CONNECTIONS must be 0 (no cap) or more")
        if self.store:
            self._replica()

    def _replica(self) -> None:
        """With a store, the served directories are inside the cache directory, and the
        server only verifies: the private key never sits on a serving machine."""
        if not self.store.startswith("s3://"):
            raise ConfigurationError(f"{ENV_PREFIX}STORE={self.store!r}: expected s3://bucket/prefix (or unset)")
        if self.sign_manifests:
            raise ConfigurationError(
                f"{ENV_PREFIX}SIGN_MANIFESTS=true cannot go with {ENV_PREFIX}STORE: a replica only verifies "
                f"(set {ENV_PREFIX}SIGN_MANIFESTS=false and {ENV_PREFIX}PUBLIC_KEY; sign where the private key is)"
            )
        if not 0 < self.poll_seconds < math.inf:
            raise ConfigurationError(f"{ENV_PREFIX}POLL_SECONDS must be a positive number of seconds")
        if self.cache_dir_bytes <= 0:
            raise ConfigurationError(f"{ENV_PREFIX}CACHE_DIR_BYTES must be more than 0")
        for name, default, inside in (("partitions_dir", Path("partitions"), "partitions"),
                                      ("manifests_dir", Path("manifests"), "manifests"),
                                      ("channels_dir", Path("channels"), "channels")):
            value = getattr(self, name)
            if value not in (default, self.cache_dir / inside):
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()} is not used with {ENV_PREFIX}STORE: a replica serves "
                    f"{ENV_PREFIX}CACHE_DIR/{inside}; unset it"
                )
            object.__setattr__(self, name, self.cache_dir / inside)

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
    def state_dir(self) -> Path:
        """The server's own files: the records of serials and file identities, the writers'
        lock, verified copies of large files. ``manifests_dir``, the one directory the
        server writes (see ``records``)."""
        return self.manifests_dir

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read ``OTA_*`` keys from a mapping of strings (``from_environ`` strips ``SANIC_``)."""
        values = {}
        for f in dataclasses.fields(cls):
            key = CONFIG_PREFIX + f.name.upper()
            if key in config and config[key] is not None:
                values[f.name] = _coerce(f.name, f.default, config[key])
        if values.get("store") and "sign_manifests" not in values:
            values["sign_manifests"] = False  # a replica only verifies; only an explicit true is refused
        return cls(**values)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``SANIC_OTA_*`` variables: how the server and the tools get their settings."""
        prefix_len = len("SANIC_")
        return cls.from_config({k[prefix_len:]: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})

    def to_environ(self) -> dict[str, str]:
        """The ``SANIC_OTA_*`` variables that ``from_environ`` reads back as these settings.

        One per field, so a server or tool started as another process gets every
        setting (an unset optional path is left out, which reads back as unset).
        """
        environ = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                environ[ENV_PREFIX + f.name.upper()] = _text(value)
        return environ


def _text(value: Any) -> str:
    """A setting's value as ``from_environ`` reads it back."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


#: Text settings whose case matters (an object key prefix); the others are keywords.
_CASE_SENSITIVE = frozenset({"store"})


def _coerce(name: str, default: Any, value: Any) -> Any:
    try:
        if isinstance(default, bool):
            return _boolean(value)
        if isinstance(default, tuple):
            return _ports(value)
        if isinstance(default, (int, float)):
            return type(default)(value)
        if value == "":
            return default
        if isinstance(default, str):
            text = str(value).strip()
            return text if name in _CASE_SENSITIVE else text.lower()
        return Path(str(value))  # a number (as Sanic's app.config would hold 2024) is a path too
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


def _ports(value: Any) -> tuple[int, ...]:
    """``80`` or ``80, 8080`` (Sanic may already have made a lone number an int); empty: none."""
    ports = tuple(int(part) for part in str(value).split(",") if part.strip())
    if not all(0 < port < 65536 for port in ports):
        raise ValueError("ports are numbers from 1 to 65535")
    return ports


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs and their test."""
    return [
        (ENV_PREFIX + f.name.upper(), "" if f.default in (None, ()) else str(f.default), f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]
