"""Mirror-flip reliability (the TSCPR idea): how far to trust each landmark.

The face mesh runs on each face crop and on its horizontal mirror in one batch.
The mirror's 68 landmarks, mapped back (x → w − 1 − x in the crop, left/right
indices swapped), would equal the direct ones if the network were sure; their
per-landmark distance, the mirror error, is strongly correlated with the true
error. A monotone map calibrated on afw (tools/calibrate_confidence.py) turns it
into the expected error and a confidence in [0, 1]. Where the two agree the
landmark is their average (which is also more accurate than either); where they
disagree strongly the pipeline takes the point from the fitted 3D model instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.backends import ENGINES_DIR, BackendError
from tracker.landmarks68 import IBUG68_MIRROR, Mesh68Mapping
from tracker.mesh import MESH_INPUT, MeshResult
from tracker.roi import crop_points_to_image

CALIBRATION_FILE = "confidence_calibration.npz"
# Expected error (inter-ocular units) at which confidence reaches 0: the usual failure threshold.
FAILURE_ERROR = 0.10


@dataclass
class Reliability:
    landmarks: np.ndarray  # 68×2 image pixels: the average of the direct and mapped-back mirror predictions
    mirror_error: np.ndarray  # 68, inter-ocular units
    expected_error: np.ndarray  # 68, inter-ocular units (calibrated)
    confidence: np.ndarray  # 68 in [0, 1]


def mirror_back(mirror_crop_landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks predicted on a mirrored crop, in the unmirrored crop's pixels and iBUG order."""
    back = np.array(mirror_crop_landmarks, dtype=np.float64, copy=True)
    back[:, 0] = (MESH_INPUT - 1) - back[:, 0]
    return back[IBUG68_MIRROR]


class ConfidenceCalibration:
    """Monotone map mirror error → expected landmark error, as knots (np.interp between them)."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or ENGINES_DIR / CALIBRATION_FILE
        if not path.is_file():
            raise BackendError(f"confidence calibration {path} is missing; rebuild it with "
                               "`python tools/calibrate_confidence.py`")
        data = np.load(path)
        self.mirror_error = data["mirror_error"]
        self.expected_error = data["expected_error"]

    def expected(self, mirror_error: np.ndarray) -> np.ndarray:
        return np.interp(mirror_error, self.mirror_error, self.expected_error)


def assess(mesh: MeshResult, mapping: Mesh68Mapping, calibration: ConfidenceCalibration | None) -> Reliability:
    """Fuse the direct and mirrored predictions of one face and rate each landmark.

    Without a calibration (as when calibrating), expected error and confidence are NaN.
    """
    direct, mirror = mapping.predict(mesh)
    mirrored = mirror_back(mirror)
    fused = 0.5 * (direct + mirrored)
    eyes = float(np.linalg.norm(fused[36] - fused[45]))
    error = np.linalg.norm(direct - mirrored, axis=1) / max(eyes, 1e-6)
    if calibration is None:
        expected = confidence = np.full(68, np.nan)
    else:
        expected = calibration.expected(error)
        confidence = np.clip(1.0 - expected / FAILURE_ERROR, 0.0, 1.0)
    return Reliability(landmarks=crop_points_to_image(fused, mesh.roi, MESH_INPUT), mirror_error=error,
                       expected_error=expected, confidence=confidence)
