"""Shared fixtures: paths to the shared data, skipping cleanly when it is absent."""

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
