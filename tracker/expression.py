"""Calibrated blendshape weights: the 3D fit's expression weights mapped towards the true ones.

The fit's weights lean on the refiner's expression reading, which was trained on renders where
each key expression is off half the time. Like any regression it pulls its answers towards that
prior: a neutral face reads a little above 0, a strong smile well below its weight, most on the
side of the face turned away from the camera (BENCHMARKS.md, "renders"). This stage undoes that
pull with a small map per ARKit shape, fitted on tracked renders with known weights by
``tools/calibrate_expression.py`` (engines/expression_calibration.npz):

    w' = clip(a·w + b + far·(c·w + d), 0, 1)

``far`` is how far the shape's side of the face is turned away: max(0, ±yaw / 45°), + for the
subject's Left shapes (a face turned to its own left, yaw > 0, turns its left side away), − for
Right ones, 0 for shapes without a side. Shapes the renders do not drive keep a = 1 and b = c = d = 0.
The fit's own state (its warm start) keeps the uncalibrated weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracker.engines import ENGINES_DIR, BackendError, load_engine_arrays

CALIBRATION_FILE = "expression_calibration.npz"
FAR_YAW_DEG = 45.0  # the yaw at which a side counts as fully turned away (far = 1)


def side_of(name: str) -> int:
    """+1 for the subject's Left shapes, −1 for Right ones, 0 for the rest (by the ARKit name)."""
    return 1 if name.endswith("Left") else -1 if name.endswith("Right") else 0


def far_side(sides: np.ndarray, yaw_deg: float | np.ndarray) -> np.ndarray:
    """How far each shape's side is turned away from the camera, per shape (and per frame for an array
    of yaws): 0 facing it or without a side, 1 at 45° of yaw, more beyond."""
    yaw = np.asarray(yaw_deg, np.float64)[..., None]
    return np.maximum(sides * yaw / FAR_YAW_DEG, 0.0)


def calibrate(weights: np.ndarray, far: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """The map above for weights [..., S] with their ``far`` [..., S] and ``coefficients`` [S, 4] = (a, b, c, d)."""
    a, b, c, d = coefficients.T
    return np.clip(a * weights + b + far * (c * weights + d), 0.0, 1.0)


class ExpressionCalibration:
    """Per-shape coefficients (a, b, c, d) of the map above, for the 52 ARKit names in the fit's order."""

    def __init__(self, names: list[str], coefficients: np.ndarray) -> None:
        coefficients = np.asarray(coefficients, np.float64)
        if coefficients.shape != (len(names), 4):
            raise ValueError(f"expression calibration needs {len(names)}×4 coefficients, got {coefficients.shape}")
        self.names = list(names)
        self.coefficients = coefficients
        self.sides = np.array([side_of(n) for n in names], np.float64)

    @classmethod
    def identity(cls, names: list[str]) -> ExpressionCalibration:
        """The map that changes nothing."""
        coefficients = np.zeros((len(names), 4))
        coefficients[:, 0] = 1.0
        return cls(names, coefficients)

    @classmethod
    def load(cls, names: list[str], path: Path | None = None) -> ExpressionCalibration:
        path = path or ENGINES_DIR / CALIBRATION_FILE
        data = load_engine_arrays(path, "expression calibration", "rebuild it with `python tools/calibrate_expression.py`")
        stored = [str(n) for n in data["names"]]
        if stored != list(names):
            raise BackendError(f"expression calibration {path} does not match the face model's shapes; rebuild it "
                               "with `python tools/calibrate_expression.py`")
        return cls(stored, data["coefficients"])

    def save(self, path: Path) -> None:
        np.savez(path, names=np.array(self.names), coefficients=self.coefficients)

    def apply(self, weights: np.ndarray, yaw_deg: float) -> np.ndarray:
        """Calibrated weights of one face whose head is turned by ``yaw_deg`` (the fit's yaw)."""
        return calibrate(np.asarray(weights, np.float64), far_side(self.sides, yaw_deg), self.coefficients)
