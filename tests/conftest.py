"""Shared fixtures: paths to the shared data, skipping cleanly when it is absent; a stream host that never
answers."""

import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (expected ../shared beside the repo)")
    return path


def write_variable_rate_mkv(path: Path, frames: list[np.ndarray], fps: float, declared_fps: float) -> None:
    """An MKV of ``frames`` stored ``1/fps`` apart whose track declares ``declared_fps``, as the nominal rate
    of a variable-rate recording (a browser's WebM, a screen recorder's MKV) overstates its frames. Matroska
    stores no frame count, so FFmpeg counts duration × declared_fps of them."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    data = bytearray(path.read_bytes())
    default_duration = data.index(bytes.fromhex("23E38384"))  # the track's DefaultDuration: 4 bytes, in ns
    struct.pack_into(">I", data, default_duration + 4, round(1e9 / declared_fps))
    path.write_bytes(bytes(data))


@pytest.fixture
def afw_dir() -> Path:
    return shared_path("landmarks68", "afw")


@pytest.fixture
def talking_clip() -> Path:
    return shared_path("video", "talking_d10.mp4")


@pytest.fixture
def silent_host():
    """An http:// address whose server accepts the connection and never answers (a hung camera or server):
    FFmpeg waits its whole open timeout on it. Yields (url, accepted: threading.Event)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted, held = threading.Event(), []

    def accept() -> None:
        try:
            while True:
                held.append(server.accept()[0])
                accepted.set()
        except OSError:  # the server closed: the test is over
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/live.mjpg", accepted
    server.close()
    for conn in held:
        conn.close()


def run_without_root_rights(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(command) where file permissions hold: root reads and writes anything, so as root the
    command runs without the capabilities that let it (setpriv); skips when that cannot be done here."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root, and setpriv (to drop root's right to read anything) is not installed")
        # Out of the inheritable and ambient sets too: where a runtime puts them there, the bounding set alone
        # would leave them in effect.
        drop = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set",
                "-dac_override,-dac_read_search"]
        # A file made read-only: written to anyway, the rights are still there.
        script = 'f=$(mktemp) && chmod 444 "$f" && (echo x >> "$f") 2>/dev/null; r=$?; rm -f "$f"; exit $r'
        probe = subprocess.run([*drop, "sh", "-c", script], capture_output=True, text=True, check=False)
        if probe.returncode == 0 or probe.stderr.startswith("setpriv:"):
            pytest.skip(f"setpriv cannot drop root's file rights here {probe.stderr.strip()}")
        command = [*drop, *command]
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
