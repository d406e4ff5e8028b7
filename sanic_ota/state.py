"""Everything a running server knows, opened from settings without any web framework.

``open_state`` is what start-up does: load the keys, get the signing or verifying
key, open the release store, and index the releases (``Indexer.start``: all of
them, or with many, first those a version query can name; the watcher reads the
rest at once). The web layer keeps the ``State`` on ``app.ctx``; the watcher swaps
in a new ``index`` or ``keyring`` whole when files change, and records in
``keys_file`` whether the keys file on disk is applied in full.

At start the keys file must be there, valid and private (0600): the server refuses
to start otherwise, as it always has. The softer rules for a keys file that goes
bad while the server runs are ``keys.reload``'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sanic_ota.changes import Snapshot, layout_of, snapshot
from sanic_ota.channel_writer import BucketChannelWriter, ChannelWriter
from sanic_ota.errors import ConfigurationError
from sanic_ota.filecache import SERVER_RECHECK_SECONDS, VerifiedFiles
from sanic_ota.files import open_to_others, write_atomic
from sanic_ota.fleet import Fleet
from sanic_ota.keys import Keyring, KeysFileStatus, load_keys
from sanic_ota.mirror_status import StatusReader
from sanic_ota.ratelimit import FailureLimiter
from sanic_ota.records import Records
from sanic_ota.releases import EventHook, Index, Indexer, summary
from sanic_ota.settings import Settings
from sanic_ota.signing import Signer, Verifier, create_key_pair, load_signer, load_verifier, public_pem
from sanic_ota.stats import Stats
from sanic_ota.store.local import LocalStore
from sanic_ota.store.s3 import S3Location

logger = logging.getLogger("sanic_ota.state")


@dataclass
class State:
    settings: Settings
    store: LocalStore
    keyring: Keyring
    verifier: Verifier
    indexer: Indexer
    index: Index
    files: VerifiedFiles
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    stats: Stats = field(default_factory=Stats)  # in memory only unless given a file
    fleet: Fleet = field(default_factory=Fleet)  # likewise; shares the statistics file
    keys_file: KeysFileStatus = field(default_factory=KeysFileStatus)
    #: stat signatures taken just before the first index, so the watcher's first
    #: re-scan catches a change made while the server was starting
    seen: Snapshot = field(default_factory=dict)
    #: with a store (a replica): what its mirror last saw of the bucket; None for local disks
    store_status: StatusReader | None = None
    #: where the admin API writes channel files and the pin: ``store``, or on a replica the bucket
    writer: ChannelWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = ChannelWriter(self.store)


def require_private(path: Path, what: str) -> None:
    """Refuse a secret that group or others can read, telling exactly how to fix it."""
    if open_to_others(path):
        raise ConfigurationError(
            f"{what} {path} is readable by group or others; run: chmod 600 {path}"
        )


def load_keyring(settings: Settings) -> Keyring:
    path = Path(settings.keys_file)
    keys = load_keys(path)
    require_private(path, "keys file")
    if not keys:
        logger.warning("keys file %s holds no key: every request will be refused", path)
    return Keyring(keys)


def signing_keys(settings: Settings) -> tuple[Verifier, Signer | None]:
    """The verifier, and the signer when the server signs (creating the pair on first start)."""
    if not settings.sign_manifests:
        return load_verifier(settings.public_key_path), None
    private, public = Path(settings.signing_key), settings.public_key_path
    with Records(settings.state_dir).lock():  # two workers starting at once make one pair
        if not private.exists():
            logger.warning("no signing key %s: creating a new Ed25519 key pair", private)
            signer = create_key_pair(private, public)
        else:
            require_private(private, "signing key")
            signer = load_signer(private)
            if not public.exists():
                write_atomic(public, public_pem(signer.private_key.public_key()))
    verifier = load_verifier(public)
    if verifier.keyid != signer.verifier.keyid:
        raise ConfigurationError(f"public key {public} does not belong to signing key {private}")
    return verifier, signer


def open_indexer(
    settings: Settings, verifier: Verifier, signer: Signer | None, events: EventHook | None = None
) -> Indexer:
    """The indexer of the releases the settings name, keeping its records in ``state_dir``."""
    return Indexer(LocalStore.from_settings(settings), Records(settings.state_dir), verifier, signer, events)


def open_state(settings: Settings, events: EventHook | None = None) -> State:
    keyring = load_keyring(settings)
    verifier, signer = signing_keys(settings)
    store = LocalStore.from_settings(settings)
    if settings.store:  # a replica's cache is its own to make: its records and stats live there from the start
        store.ensure_directories()
    indexer = Indexer(store, Records(settings.state_dir), verifier, signer, events)
    seen = snapshot(layout_of(store, settings))
    index = indexer.start()
    logger.info(
        "serving %d release(s) %s; %d key(s); manifests %s",
        len(index.releases),
        summary(index.versions()),
        len(keyring),
        "signed here" if signer else "verified (offline signing)",
    )
    files = VerifiedFiles(store, settings.cache_bytes, SERVER_RECHECK_SECONDS, spool_dir=settings.state_dir)
    store_status = StatusReader(settings.cache_dir, settings.store) if settings.store else None
    fleet = Fleet(settings.stats_path)
    fleet.flush()  # the rollout offers every worker remembered, before the first version query
    state = State(settings, store, keyring, verifier, indexer, index, files, stats=Stats(settings.stats_path),
                  fleet=fleet, seen=seen, store_status=store_status)
    if settings.store:
        state.writer = BucketChannelWriter(store, S3Location.parse(settings.store))
    return state
