"""The throw-away server directory every anchor serves: one release, a key, the answers.

A 1.6 MB application image made with esptool's image writer (the server validates
every application image and refuses a bad one), a 4 KiB ``0xF1 0xF1`` certificate
partition, and a keys file made by ``tools/keygen.py``. The small answers the bare
Sanic app and nginx serve (version query, listing, the 403) are copied from our own
server once it runs (``Workspace.answers``), so all three send the same bytes.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sanic_ota.example_release import build_app_image, build_cert_partition
from sanic_ota.settings import Settings

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
VERSION = "v1.0.0"
#: "1.6 MB": a typical ESP-AT application image (esp-at's own factory builds are 1.5-1.8 MB).
IMAGE_SIZE = 1_600_000
CERT_SIZE = 4096
#: Our request targets, as the module sends them.
QUERY = "/v1/device/rom/?is_format_simple=true"
LISTING = "/v1/device/rom"
CERT = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=mqtt_ca.bin"
IMAGE = f"/v1/device/rom/?action=download_rom&version={VERSION}&filename=ota.bin"
#: A token no key has: the wrong-token scenario sends it.
WRONG_TOKEN = "f" * 40


@dataclass
class Workspace:
    root: Path
    token: str
    image: bytes
    cert: bytes
    #: request target -> (status, body) as our server answered it, and "403" for a wrong token
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    @property
    def partitions(self) -> Path:
        return self.root / "partitions"

    @property
    def env(self) -> dict[str, str]:
        """Our server's environment: the operator's defaults, on this directory."""
        settings = Settings(
            keys_file=self.root / "authorisation_keys.json",
            partitions_dir=self.partitions,
            manifests_dir=self.root / "manifests",
            signing_key=self.root / "manifest_signing_key.pem",
        )
        return dict(os.environ, **settings.to_environ(), PYTHONPATH=str(REPO))


def make_workspace(root: Path) -> Workspace:
    image = build_app_image(VERSION, size=IMAGE_SIZE)
    # PKI partition: 8-byte header + 4-byte item header + text, padded to 4 bytes.
    text = (b"sanic_ota bench CA placeholder text, not a certificate.\n" * 100)[: CERT_SIZE - 12]
    cert = build_cert_partition(text)
    assert len(cert) == CERT_SIZE and cert[:2] == b"\xf1\xf1", len(cert)
    release = root / "partitions" / VERSION
    release.mkdir(parents=True)
    (release / "ota.bin").write_bytes(image)
    (release / "mqtt_ca.bin").write_bytes(cert)
    # nginx's workers run as "nobody" when started by root: let them read the files.
    for path in (root, root / "partitions", release):
        path.chmod(0o755)
    keys = root / "authorisation_keys.json"
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "keygen.py"), "bench", "--keys", str(keys)],
        check=True, capture_output=True, text=True,
    )
    keys.chmod(0o600)
    return Workspace(root, out.stdout.strip(), image, cert)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_fd_limit() -> None:
    """10,000 idle connections need ~20,000 descriptors here and in the servers (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def copy_answers(ws: Workspace, port: int) -> None:
    """Our server's answers, for the anchors that serve the same bytes."""
    from wire import fetch

    for target in (QUERY, LISTING, CERT, IMAGE):
        status, _, body = fetch(port, target, ws.token)
        assert status == 200, (target, status, body[:200])
        ws.answers[target] = (status, body)
    status, _, body = fetch(port, QUERY, WRONG_TOKEN)
    assert status == 403, (status, body)
    ws.answers["403"] = (status, body)
