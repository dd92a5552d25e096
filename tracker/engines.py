"""Where the model files live, the error a backend raises when it cannot serve one, and the batch
handling every runtime shares.

Its own module so that the backends (tracker/backends.py and the lazily imported
tracker/tensorrt_backend.py) both depend on it instead of on each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_PACKAGE = Path(__file__).resolve().parent


def default_engines_dir(package: Path = _PACKAGE) -> Path:
    """The model files of the tracker package at ``package``: installed with it as its ``models`` folder (pip
    install .), or, in a checkout (and an editable install), the repository's engines/ folder."""
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "engines"


def writable_folder(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (made first if missing): the check Numba makes of a cache folder,
    and the one the caches of compiled code here make (tracker/jit_cache.py, tracker/tensorrt_backend.py)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


# FACE_TRACKER_ENGINES set and not empty: another folder of model files (an empty value is the default's).
ENGINES_DIR = Path(os.environ.get("FACE_TRACKER_ENGINES") or default_engines_dir())


class BackendError(RuntimeError):
    """A backend cannot be used here; the message is one line for the user."""


def as_inputs(batch: np.ndarray | dict[str, np.ndarray], input_name: str) -> dict[str, np.ndarray]:
    """A session's inputs by name, contiguous float32 (a single array is the model's one input)."""
    inputs = batch if isinstance(batch, dict) else {input_name: batch}
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}


def run_in_chunks(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], inputs: dict[str, np.ndarray],
                  max_batch: int) -> dict[str, np.ndarray]:
    """``run`` on consecutive slices of at most ``max_batch`` items, outputs joined along the batch axis:
    a runtime whose buffers or optimisation profile stop at a batch size (TensorRT) still takes any
    batch. Every model here treats the items of a batch independently."""
    n = len(next(iter(inputs.values())))
    if n <= max_batch:
        return run(inputs)
    parts = [run({k: v[i:i + max_batch] for k, v in inputs.items()}) for i in range(0, n, max_batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def runtime_said(exc: Exception) -> str:
    """A runtime's failure (ONNX Runtime's, OpenCV's: many lines, often a graph dump) as one short clause: its
    first line, or the line that gives OpenCV's error, without the source file and line that lead it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    said = next((line for line in lines if "error: (" in line), lines[0])
    said = said[said.find("error: (") + len("error: "):] if "error: (" in said else said
    return f"{type(exc).__name__}: {said[:200]}"


class EngineArrays(dict):
    """The arrays of one engine file; asking for one it lacks is a BackendError that says how to rebuild it."""

    def __init__(self, arrays: dict[str, np.ndarray], described: str, fix: str) -> None:
        super().__init__(arrays)
        self._described, self._fix = described, fix

    def __missing__(self, key: str) -> np.ndarray:
        raise BackendError(f"{self._described} has no '{key}' (it is from another version); {self._fix}")


def load_engine_arrays(path: Path, what: str, fix: str) -> EngineArrays:
    """The arrays of an engine's .npz file, read whole now; BackendError naming the file and ``fix`` (how to
    rebuild it) when it is missing or unreadable (NumPy's own errors name neither)."""
    described = f"{what} {path}"
    if not path.is_file():
        raise BackendError(f"{described} is missing; {fix}")
    try:
        with np.load(path) as data:
            return EngineArrays({key: data[key] for key in data.files}, described, fix)
    except Exception as exc:  # noqa: BLE001 -- a damaged file fails in many ways (zip, pickle, npy header)
        raise BackendError(f"{described} cannot be read ({type(exc).__name__}: {exc}); {fix}") from None
