"""Where the model files live, and the error a backend raises when it cannot serve one.

Its own module so that the backends (tracker/backends.py and the lazily imported
tracker/tensorrt_backend.py) both depend on it instead of on each other.
"""

from __future__ import annotations

import os
from pathlib import Path

ENGINES_DIR = Path(os.environ.get("FACE_TRACKER_ENGINES", Path(__file__).resolve().parent.parent / "engines"))


class BackendError(RuntimeError):
    """A backend cannot be used here; the message is one line for the user."""
