"""Shared fixtures: paths to the shared data, skipping cleanly when it is absent; a stream host that never
answers."""

import socket
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (expected ../shared beside the repo)")
    return path


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
