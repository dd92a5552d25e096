"""Where the model files live, the error a backend raises when it cannot serve one, and the batch
handling every runtime shares.

Its own module so that the backends (tracker/backends.py and the lazily imported
tracker/tensorrt_backend.py) both depend on it instead of on each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENGINES_DIR = Path(os.environ.get("FACE_TRACKER_ENGINES", Path(__file__).resolve().parent.parent / "engines"))


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
