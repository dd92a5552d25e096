"""Mirror-flip reliability (the TSCPR idea): how far to trust each landmark.

The face mesh runs on each face crop and on its horizontal mirror in one batch,
and the refiner refines both. Mapped back (x → w − 1 − x in the crop, left/right
indices swapped), the mirror's 68 landmarks would equal the direct ones if the
networks were sure. The mirror error of a landmark is the spread of its four
predictions (the linear map's and the refiner's, on the crop and on the mirror):
mean distance from their mean, in inter-ocular units; without the refiner, the
two mirror-pass predictions. A monotone map calibrated on afw
(tools/calibrate_confidence.py) turns it, plus the face's mean mirror error (a
point on a confused face is less trustworthy), into each landmark's expected
error (one map over errors normalised per landmark, since jaw points err more
than eye corners) and a confidence in [0, 1]. The landmark itself is the average of the
refiner's direct and mirrored predictions (more accurate than either).

The refiner also rates each landmark's visibility (not hidden by an occluder), from the
crop and from its mirror; the two are averaged, and a landmark's confidence is its
mirror-based confidence times that visibility, so a covered point is never trusted.
Its expression weights from the crop and from the mirror (Left and Right swapped back)
are averaged too.

The head pose gets a rating of its own: the 3D fit's residual (the weighted distance left between
the fitted face model's points and the landmarks, with the mesh's depths and the fit's priors, per
unit weight, in inter-ocular units) plus a term for the landmarks beyond the frame's edge (pose_signal),
mapped monotonically to the pose's expected error in degrees (PoseErrorCalibration, fitted on tracked
ICT renders with known pose, whole faces and faces cut by the frame, by tools/calibrate_pose_error.py,
one map for stills and one for video). Landmarks that no one head explains (misread, or a picture out
of shape) make for a pose to trust less, and so does a face the frame cuts: the fit counts the points
beyond the edge at its floor, so they hardly show in the residual, but the pose is read from the part
in view.

The blendshapes get one too: the expected mean absolute error of the six key weights (RATED_SHAPES), from how
far the refiner's expression readings of the crop and of its mirror disagree on them, how little its landmarks
are trusted and how many are beyond the frame's edge (blendshape_signal), mapped monotonically as the pose's is
(BlendshapeErrorCalibration, fitted by tools/calibrate_blendshape_error.py on the same kinds of renders). A face
whose mouth or eyes the frame cuts off, or that the two readings see differently, rates less sure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.backends import ENGINES_DIR, BackendError
from tracker.engines import load_engine_arrays
from tracker.landmarks68 import IBUG68_MIRROR, CropLandmarks
from tracker.mesh import MESH_INPUT, unmirror_crop_x
from tracker.roi import Roi, crop_points_to_image
from tracker.types import ARKIT_BLENDSHAPES, ARKIT_MIRROR

CALIBRATION_FILE = "confidence_calibration.npz"
POSE_ERROR_FILE = "pose_error_calibration.npz"
BLENDSHAPE_ERROR_FILE = "blendshape_error_calibration.npz"
# The weights the blendshape rating is for: the key shapes the ICT renders drive (tools/render_ict.py KEY_SHAPES),
# which the render benchmarks score.
RATED_SHAPES = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp")
_RATED = np.array([ARKIT_BLENDSHAPES.index(name) for name in RATED_SHAPES])
# How much the landmarks' mean distrust (1 − confidence) adds to the rating's signal, against the expression
# readings' disagreement (weight units). Chosen on tools/tune_fit_weights.py's tuning render clips (seeds 700-702),
# tracked whole and with the lower or upper 35% of the face beyond the frame's edge for a third of each clip:
# Spearman ρ with the key weights' true error 0.55 / 0.58 / 0.60 / 0.60 at 0.05 / 0.1 / 0.15 / 0.2 on the whole
# frames (0.46 with the disagreement alone), 0.72-0.74 over all.
UNCONFIDENCE_WEIGHT = 0.15
# How much the landmarks placed beyond the frame's edge add to each rating's signal, as a share of them. The pose and
# the expression of such a face are read from the part in view, and are off by far more than the fit's residual or
# the two readings' disagreement show. Chosen on tools/evaluate_cut_renders.py's clips from tuning seed 750 (12
# clips, each tracked cut and whole; the maps fitted on all but one clip and read on it, clip by clip). On their cut
# frames the pose was 11.7° off and read 7.4° from the residual alone. With the share of all 68 points at 0.15 it read
# 11.8°, but 12.7° on the frames cut at the bottom (true 7.8°): the pose is read from the brows, nose and eyes, and a
# jaw and mouth beyond the edge tell little about it. The share of points 17-47 at 0.1 / 0.15 / 0.2 read 11.4° /
# 11.8° / 11.8° (at the bottom 8.4° / 7.5° / 7.1°; Spearman ρ on the cut frames 0.69 / 0.66 / 0.63, against 0.66 for
# all 68 at 0.15), the uncut clips' frames 4.2° / 4.1° / 4.1° against a true 4.05° (4.8° from the residual alone). The
# key weights were 0.188 off on the cut frames and read 0.109 without a term, 0.160 / 0.178 / 0.189 with the share of
# all 68 at 0.2 / 0.4 / 0.6 (uncut 0.071 / 0.065 / 0.062 / 0.061 against 0.061; ρ 0.44 / 0.49 / 0.50 / 0.50 over all).
POSE_BEYOND_POINTS = slice(17, 48)
POSE_BEYOND_WEIGHT = 0.1
BLENDSHAPE_BEYOND_WEIGHT = 0.6
# Expected error (inter-ocular units) at which confidence reaches 0: the usual failure threshold.
FAILURE_ERROR = 0.10


@dataclass
class Reliability:
    landmarks: np.ndarray  # 68×2 image pixels: the average of the direct and mapped-back mirror predictions
    mirror_error: np.ndarray  # 68, inter-ocular units
    expected_error: np.ndarray  # 68, inter-ocular units (calibrated)
    confidence: np.ndarray  # 68 in [0, 1]: calibrated mirror confidence × visibility
    visibility: np.ndarray | None  # 68 in [0, 1] from the refiner (None without one)
    expression: np.ndarray | None = None  # 52 ARKit weights in [0, 1] from the refiner (None without one)
    # The crop's and the mirror's readings of the RATED_SHAPES: mean absolute difference (None without a refiner).
    expression_disagreement: float | None = None


def mirror_back(mirror_crop_landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks predicted on a mirrored crop, in the unmirrored crop's pixels and iBUG order."""
    back = np.array(mirror_crop_landmarks, dtype=np.float64, copy=True)
    back[:, 0] = unmirror_crop_x(back[:, 0])
    return back[IBUG68_MIRROR]


class ConfidenceCalibration:
    """Monotone map from the mirror check's signal (:func:`calibration_signal`) to expected landmark error.

    Both are scaled per landmark (``error_scale``, ``signal_scale``: afw means relative to
    the mean over all landmarks); one knot table (:func:`knot_map`) maps the scaled
    signal to the scaled expected error."""

    def __init__(self, path: Path | None = None, table: Mapping[str, np.ndarray] | None = None) -> None:
        """From ``path`` (the shipped file by default), or from ``table``, the same four arrays in memory (as
        tools/calibrate_confidence.py fits them)."""
        data = table
        if data is None:
            path = path or ENGINES_DIR / CALIBRATION_FILE
            data = load_engine_arrays(path, "confidence calibration",
                                      "rebuild it with `python tools/calibrate_confidence.py`")
            if "signal_scale" not in data:
                raise BackendError(f"confidence calibration {path} is from an older version; rebuild it with "
                                   "`python tools/calibrate_confidence.py`")
        self.mirror_error = data["mirror_error"]
        self.expected_error = data["expected_error"]
        self.signal_scale = data["signal_scale"]
        self.error_scale = data["error_scale"]

    def expected(self, signal: np.ndarray) -> np.ndarray:
        return knot_map(signal / self.signal_scale, self.mirror_error, self.expected_error) * self.error_scale


class _StillAndTrackedMaps:
    """A rating's calibration: two monotone knot tables (:func:`knot_map`) from a signal to an expected error, one
    for stills and one for tracked video frames (fits warm-started, outputs smoothed: the same signal means another
    error there), stored as ``{X}_still``, ``{Y}_still``, ``{X}_tracked`` and ``{Y}_tracked`` in engines/``FILE``,
    which tools/``TOOL`` fits."""

    FILE: str
    WHAT: str
    TOOL: str
    X: str
    Y: str
    MAX_ERROR: float  # the largest the error can be: the map, rising past its last knot, stops there

    def __init__(self, path: Path | None = None, table: Mapping[str, np.ndarray] | None = None) -> None:
        """From ``path`` (the shipped file by default), or from ``table``, the same four arrays in memory (as
        the tool fits them)."""
        fix = f"rebuild it with `python tools/{self.TOOL}`"
        path = path or ENGINES_DIR / self.FILE
        data = table if table is not None else load_engine_arrays(path, self.WHAT, fix)
        self.maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for kind in ("still", "tracked"):
            knots_x = np.asarray(data[f"{self.X}_{kind}"], np.float64)
            knots_y = np.asarray(data[f"{self.Y}_{kind}"], np.float64)
            # knot_map needs rising knots, and past the last one divides by it.
            if not (knots_x.ndim == 1 and knots_x.shape == knots_y.shape and len(knots_x) >= 2
                    and np.all(np.isfinite(knots_x)) and np.all(np.isfinite(knots_y))
                    and np.all(np.diff(knots_x) >= 0) and knots_x[0] > 0):
                raise BackendError(f"{self.WHAT} {path if table is None else '(given)'} holds no usable {kind} knot "
                                   f"table; {fix}")
            self.maps[kind] = (knots_x, knots_y)

    def _read(self, signal: float, tracked: bool) -> float:
        knots_x, knots_y = self.maps["tracked" if tracked else "still"]
        return min(float(knot_map(np.float64(signal), knots_x, knots_y)), self.MAX_ERROR)


def pose_signal(fit_rms: float, beyond: np.ndarray) -> float:
    """What the pose's rating maps to an expected error: the 3D fit's residual RMS (inter-ocular units,
    tracker.fitting.FitResult.rms) plus POSE_BEYOND_WEIGHT times the share of the brows, nose and eyes
    (POSE_BEYOND_POINTS) among the 68 landmarks ``beyond`` the frame's edge (68 bools)."""
    return float(fit_rms + POSE_BEYOND_WEIGHT * np.mean(beyond[POSE_BEYOND_POINTS]))


class PoseErrorCalibration(_StillAndTrackedMaps):
    """Monotone maps from :func:`pose_signal` to the head pose's expected error: the angle, in degrees, between the
    fitted head rotation and the true one."""

    FILE, WHAT, TOOL, X, Y = POSE_ERROR_FILE, "pose error calibration", "calibrate_pose_error.py", "signal", "error_deg"
    MAX_ERROR = 180.0  # no two rotations are further apart (a focal length far too short read 790° unbounded)

    def expected_deg(self, signal: float, tracked: bool) -> float:
        """The expected error of a pose whose signal is ``signal``, on a still or (``tracked``) a video frame."""
        return self._read(signal, tracked)


def blendshape_signal(disagreement: float, confidence: np.ndarray, beyond: np.ndarray) -> float:
    """What the blendshape rating maps to an expected error: the expression readings' ``disagreement``
    (Reliability.expression_disagreement) plus UNCONFIDENCE_WEIGHT times the 68 landmarks' mean distrust
    (1 − ``confidence``, which is 0 beyond the frame's edge) plus BLENDSHAPE_BEYOND_WEIGHT times the share of them
    ``beyond`` the frame's edge (68 bools)."""
    return float(disagreement + UNCONFIDENCE_WEIGHT * (1.0 - np.mean(confidence))
                 + BLENDSHAPE_BEYOND_WEIGHT * np.mean(beyond))


class BlendshapeErrorCalibration(_StillAndTrackedMaps):
    """Monotone maps from :func:`blendshape_signal` to the expected mean absolute error of the RATED_SHAPES' weights
    (the tracker's calibrated blendshapes against the true ones)."""

    FILE, WHAT, TOOL, X, Y = (BLENDSHAPE_ERROR_FILE, "blendshape error calibration",
                              "calibrate_blendshape_error.py", "signal", "error")
    MAX_ERROR = 1.0  # weights in [0, 1] are at most 1 off

    def expected(self, signal: float, tracked: bool) -> float:
        """The expected mean absolute error of the rated weights of a face whose signal is ``signal``, on a still or
        (``tracked``) a video frame."""
        return self._read(signal, tracked)


def knot_map(x: np.ndarray, knots_x: np.ndarray, knots_y: np.ndarray) -> np.ndarray:
    """The calibration's monotone map: straight lines between the knots, and past the last one (the median of
    afw's largest twenty-fourth of the signals) in proportion to ``x``. Held at the last knot's value, a point
    whose two passes disagree by a whole face would read as trustworthy as one at afw's 98th percentile."""
    y = np.interp(x, knots_x, knots_y)
    return np.where(x > knots_x[-1], knots_y[-1] * x / knots_x[-1], y)


def mirror_spread(prediction: CropLandmarks) -> np.ndarray:
    """Each landmark's mirror error in crop pixels: the mean distance of its (two or four)
    predictions, mirror ones mapped back, from their mean."""
    shapes = [prediction.direct, mirror_back(prediction.mirror)]
    if prediction.initial is not None and prediction.mirror_initial is not None:
        shapes += [prediction.initial, mirror_back(prediction.mirror_initial)]
    stack = np.stack(shapes)
    return np.linalg.norm(stack - stack.mean(0), axis=2).mean(0)


def calibration_signal(mirror_error: np.ndarray) -> np.ndarray:
    """What the calibration maps to expected error: each landmark's mirror error plus its face's mean
    (faces × 68 or 68). On afw, held out, this ranks true errors better than the point's own alone."""
    return mirror_error + mirror_error.mean(axis=-1, keepdims=True)


def assess(prediction: CropLandmarks, roi: Roi, calibration: ConfidenceCalibration | None) -> Reliability:
    """Fuse the direct and mirrored predictions of one face (cropped at ``roi``) and rate each landmark.

    Without a calibration (as when calibrating), expected error and confidence are NaN.
    """
    if prediction.mirror is None:
        raise ValueError("assess needs the mirrored prediction (run the mesh with mirror=True)")
    fused = 0.5 * (prediction.direct + mirror_back(prediction.mirror))
    eyes = float(np.linalg.norm(fused[36] - fused[45]))
    error = mirror_spread(prediction) / max(eyes, 1e-6)
    visibility = None
    if prediction.visibility is not None and prediction.mirror_visibility is not None:
        visibility = 0.5 * (prediction.visibility + prediction.mirror_visibility[IBUG68_MIRROR])
    expression = disagreement = None
    if prediction.expression is not None and prediction.mirror_expression is not None:
        mirrored = prediction.mirror_expression[ARKIT_MIRROR]
        expression = 0.5 * (prediction.expression + mirrored)
        disagreement = float(np.abs(prediction.expression - mirrored)[_RATED].mean())
    if calibration is None:
        expected = confidence = np.full(68, np.nan)
    else:
        expected = calibration.expected(calibration_signal(error))
        confidence = np.clip(1.0 - expected / FAILURE_ERROR, 0.0, 1.0)
        if visibility is not None:
            confidence = confidence * visibility
    return Reliability(landmarks=crop_points_to_image(fused, roi, MESH_INPUT), mirror_error=error,
                       expected_error=expected, confidence=confidence, visibility=visibility, expression=expression,
                       expression_disagreement=disagreement)
