"""Faults: shutdown with downloads in flight, kill -9 mid-write, bad files, a full disk, loose secrets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TOKEN, VERSION, env_for, example, settings_for, write_release
from esp_client import ModuleError, download, list_versions, version_query
from server_process import ServerProcess

from sanic_ota.keys import load_keys


def test_sigterm_lets_downloads_in_flight_finish_and_refuses_new_ones(workdir: Path) -> None:
    # 8 MB: more than the kernel's socket buffers take, so the handler is still sending
    image = example.build_app_image("v8.0.0", size=8 * 1024 * 1024)
    (workdir / "partitions" / "v8.0.0").mkdir()
    (workdir / "partitions" / "v8.0.0" / "ota.bin").write_bytes(image)
    proc = ServerProcess(env_for(settings_for(workdir)), cwd=workdir).start()
    try:
        with socket.create_connection((proc.host, proc.port), timeout=30) as sock:
            sock.sendall(b"GET /v1/device/rom/?action=download_rom&version=v8.0.0&filename=ota.bin HTTP/1.1\r\n"
                         + f"Host: x\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
            data = sock.recv(1024)
            assert proc.proc is not None
            # Sanic 25.12's main process spins forever if SIGTERM lands while it still
            # waits for the workers' start-up acknowledgement (WorkerManager.wait_for_ack),
            # a window of about 0.1 s after "Worker ready" that this test would hit.
            time.sleep(1.0)
            proc.proc.send_signal(signal.SIGTERM)  # to Sanic's main process, as systemd's KillMode=mixed does
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the listening socket closes first
                try:
                    socket.create_connection((proc.host, proc.port), timeout=1).close()
                except OSError:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("new connections were still accepted 10 s after SIGTERM")
            while chunk := sock.recv(65536):
                data += chunk
                if len(data.partition(b"\r\n\r\n")[2]) >= len(image):
                    break
        assert data.partition(b"\r\n\r\n")[2] == image
        assert proc.proc.wait(40) == 0
    finally:
        proc.stop(signal.SIGKILL)  # never leave a server behind, whatever failed


KILL_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from sanic_ota.keys import Key, save_keys
    path, n = Path(sys.argv[1]), 0
    print("ready", flush=True)
    while True:
        n += 1
        save_keys(path, [Key(f"key-{i}", f"{n:040x}") for i in range(2000)])
""")


def test_kill_9_while_the_keys_file_is_written_leaves_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER)
    for delay in (0.05, 0.13, 0.21, 0.37):
        writer = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(delay)
        writer.kill()
        writer.wait()
        if path.exists():
            keys = load_keys(path)  # never half a file: it parses, whole
            assert len(keys) == 2000 and len({k.token for k in keys}) == 1
            assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_manifest_writes_are_whole_after_kill_9(workdir: Path) -> None:
    for n in range(30):
        write_release(workdir / "partitions", f"v2.{n}.0")
    settings = settings_for(workdir)
    proc = ServerProcess(env_for(settings), cwd=workdir)
    proc.start()
    assert proc.proc is not None
    os.killpg(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait()
    with ServerProcess(env_for(settings), cwd=workdir) as again:  # the next start recovers
        assert len(list_versions(again.host, again.port, TOKEN)) == 31
    leftovers = [p.name for p in (workdir / "manifests").iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".") for name in leftovers)  # temp files are dotfiles, never indexed


def test_an_unreadable_release_is_reported_and_the_others_served(workdir: Path) -> None:
    write_release(workdir / "partitions", "v2.0.0")
    (workdir / "partitions" / "v2.0.0" / "mqtt_ca.bin").unlink()
    (workdir / "partitions" / "v2.0.0" / "mqtt_ca.bin").symlink_to(workdir / "gone.bin")
    with ServerProcess(env_for(settings_for(workdir)), cwd=workdir) as proc:
        with pytest.raises(ModuleError, match="503"):  # v2.0.0 is the newest: never v1.0.0 in its place
            version_query(proc.host, proc.port, TOKEN)
        assert proc.logged("release v2.0.0 is NOT served: mqtt_ca.bin is a symbolic link")
        (workdir / "partitions" / VERSION / "mqtt_ca.bin").unlink()  # gone after indexing
        with pytest.raises(ModuleError):
            download(proc.host, proc.port, TOKEN, VERSION, "mqtt_ca")
        assert download(proc.host, proc.port, TOKEN, VERSION, "ota")  # the rest still served


def test_a_full_disk_fails_that_release_only(workdir: Path, tmp_path_factory) -> None:
    mount = tmp_path_factory.mktemp("tiny")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        settings = settings_for(workdir, manifests_dir=mount / "manifests")
        with ServerProcess(env_for(settings), cwd=workdir) as proc:
            assert version_query(proc.host, proc.port, TOKEN) == VERSION
            filler = mount / "filler"
            try:  # fill the disk to the last byte
                with open(filler, "wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
            except OSError:
                pass
            write_release(workdir / "partitions", "v2.0.0")
            assert proc.logged("release v2.0.0 is NOT served", timeout=10)
            with pytest.raises(ModuleError, match="503"):  # the newest is v2.0.0: never v1.0.0 in its place
                version_query(proc.host, proc.port, TOKEN)
            assert download(proc.host, proc.port, TOKEN, VERSION, "ota")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("which", ["keys", "signing key"])
def test_secrets_open_to_others_stop_the_start_with_the_fix(workdir: Path, which: str) -> None:
    settings = settings_for(workdir)
    if which == "signing key":
        with ServerProcess(env_for(settings), cwd=workdir):
            pass  # creates the key pair
        path = settings.signing_key
    else:
        path = settings.keys_file
    path.chmod(0o644)
    proc = ServerProcess(env_for(settings), cwd=workdir)
    with pytest.raises(RuntimeError) as failed:
        proc.start(timeout=20)
    assert f"chmod 600 {path}" in str(failed.value)


def test_tokens_never_reach_logs_errors_or_manifests(server: ServerProcess, workdir: Path) -> None:
    download(server.host, server.port, TOKEN, VERSION, "ota")
    with pytest.raises(ModuleError):
        download(server.host, server.port, TOKEN + "x", VERSION, "ota")
    for path in [*(workdir / "manifests").glob("*.json"), workdir / "signing.pub.pem"]:
        assert TOKEN not in path.read_text()
    assert TOKEN not in server.log()
