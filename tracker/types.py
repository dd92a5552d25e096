"""Plain result records that flow from the pipeline to the outputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracker.mesh import MeshResult

# The 52 ARKit blendshape names in Apple's order: the `blendshapes` keys of every output.
ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)  # fmt: skip


def mirror_blendshape_name(name: str) -> str:
    """The shape's name on the face's other side (a horizontal mirror swaps Left and Right)."""
    if name.endswith("Left"):
        return name[:-4] + "Right"
    if name.endswith("Right"):
        return name[:-5] + "Left"
    return name


# ARKIT_MIRROR[i]: the index of shape i's mirror twin (weights[ARKIT_MIRROR] mirrors a weight vector).
ARKIT_MIRROR: np.ndarray = np.array([ARKIT_BLENDSHAPES.index(mirror_blendshape_name(n)) for n in ARKIT_BLENDSHAPES])


@dataclass
class Pose:
    """Head pose in the convention of tracker/pose.py (degrees; camera axes x right, y down, z forward)."""

    yaw: float
    pitch: float
    roll: float
    quaternion: np.ndarray  # [w, x, y, z], the rotation from the frontal pose
    translation_mm: np.ndarray  # model origin in the camera frame (depth from an assumed focal length)
    rotation: np.ndarray  # 3×3, the same rotation as a matrix (not written out)
    # The rotation's expected error, degrees (the angle between it and the true one), from the 3D fit's residual and
    # the brows, nose and eyes beyond the frame's edge (tracker.reliability.pose_signal);
    # None when not rated: a failed fit keeps the previous pose; TrackerConfig.pose_error, mirror_check or refiner off.
    expected_error_deg: float | None = None

    def to_record(self) -> dict:
        record = {
            "yaw": round(self.yaw, 2),
            "pitch": round(self.pitch, 2),
            "roll": round(self.roll, 2),
            "quaternion": [round(float(v), 5) for v in self.quaternion],
            "translation_mm": [round(float(v), 1) for v in self.translation_mm],
        }
        if self.expected_error_deg is not None:
            record["expected_error_deg"] = round(self.expected_error_deg, 2)
        return record


@dataclass(frozen=True)
class Gaze:
    """The eyes' turn in the head, degrees, in the head pose's sense: ``yaw`` > 0 toward the subject's own left,
    ``pitch`` > 0 up (tracker/gaze.py measures it)."""

    yaw: float
    pitch: float

    def direction(self) -> np.ndarray:
        """The line of sight, a unit vector in the face model's axes (x the subject's left, y up, z out of the
        face): turned up by the pitch, then sideways by the yaw."""
        yaw, pitch = math.radians(self.yaw), math.radians(self.pitch)
        return np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])

    @classmethod
    def from_direction(cls, x: float, y: float, z: float) -> Gaze:
        """The gaze along (x, y, z) in the face model's axes, of any length: the inverse of :meth:`direction`."""
        return cls(yaw=math.degrees(math.atan2(x, z)), pitch=math.degrees(math.atan2(y, math.hypot(x, z))))

    def to_record(self) -> dict:
        return {"yaw": round(float(self.yaw), 2), "pitch": round(float(self.pitch), 2)}


@dataclass
class FaceResult:
    id: int
    bbox: np.ndarray  # [x0, y0, x1, y1] image pixels
    score: float  # probability that a face is present (face mesh presence)
    landmarks: np.ndarray  # 68×2 image pixels, iBUG order
    mesh: MeshResult  # the face mesh this frame: ROI, crop-space and image-space points
    landmark_confidence: np.ndarray | None = None  # 68 in [0, 1], from the mirror check
    landmark_visibility: np.ndarray | None = None  # 68 in [0, 1], from the refiner: not hidden by an occluder
    occluded: np.ndarray | None = None  # 68 bool: hidden by the head itself or by something in front of it
    pose: Pose | None = None
    blendshapes: dict[str, float] | None = None  # 52 ARKit names, each in [0, 1]
    gaze: Gaze | None = None  # the eyes' turn in the head; None until the eyes are read
    fit_ok: bool = True  # False when the 3D fit could not use this frame's landmarks
    # What the pose's expected_error_deg is read from (tracker.reliability.pose_signal: the 3D fit's residual RMS, in
    # inter-ocular units, and the landmarks beyond the frame's edge; not written out); None when the fit failed.
    pose_signal: float | None = None
    # The expected mean absolute error of the key blendshape weights (tracker.reliability.RATED_SHAPES), from
    # blendshape_signal; None when not rated: a failed fit keeps the previous weights; TrackerConfig.blendshape_error,
    # calibrate_expression, mirror_check or refiner off.
    blendshapes_error: float | None = None
    # What blendshapes_error is read from (not written out); None when the fit failed or without the refiner's two
    # expression readings (mirror_check or refiner off).
    blendshape_signal: float | None = None

    def to_record(self) -> dict:
        """The JSON Lines form of DESIGN.md; fields not computed are left out, never faked."""
        record = {
            "id": self.id,
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(self.score, 4),
            "landmarks": np.round(self.landmarks, 2).tolist(),
        }
        if self.landmark_confidence is not None:
            record["landmark_confidence"] = [round(float(v), 3) for v in self.landmark_confidence]
        if self.landmark_visibility is not None:
            record["landmark_visibility"] = [round(float(v), 3) for v in self.landmark_visibility]
        if self.occluded is not None:
            record["occluded"] = [bool(v) for v in self.occluded]
        if self.pose is not None:
            record["pose"] = self.pose.to_record()
        if self.blendshapes is not None:
            record["blendshapes"] = {k: round(float(v), 4) for k, v in self.blendshapes.items()}
        if self.blendshapes_error is not None:
            record["blendshapes_error"] = round(self.blendshapes_error, 3)
        if self.gaze is not None:
            record["gaze"] = self.gaze.to_record()
        if not self.fit_ok:
            record["fit_ok"] = False
        return record


@dataclass
class FrameResult:
    frame: int
    time_s: float
    source: str
    faces: list[FaceResult] = field(default_factory=list)

    def to_record(self) -> dict:
        return {
            "frame": self.frame,
            "time_s": round(self.time_s, 4),
            "source": readable_path(self.source),
            "faces": [f.to_record() for f in self.faces],
        }


def readable_path(name: str) -> str:
    """A file name as text that any JSON or CSV reader takes: bytes that are not UTF-8 (which Python keeps as
    lone surrogates) become ``\\xNN``, so ``a_\\xff.jpg`` names the file ``a_<0xff>.jpg``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8_path(name: str) -> bool:
    """Whether a path's name is valid UTF-8 (OpenCV's file functions crash on one that is not)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: Any) -> Any:
    # Records are meant to be JSON-ready; numpy values that slip through must not stop an output.
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        value = _plain(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def record_json(record: dict) -> str:
    """A record (``to_record()``) as one line of compact, strict JSON. JSON has no NaN or infinity and strict
    readers refuse a line that holds them, so a value that is not finite is written as null. Records are
    finite by construction (the fit refuses non-finite results, the filters skip them); this keeps a slip
    from making a whole line unreadable."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False, default=_plain)
    except ValueError:
        return json.dumps(_finite_or_none(record), separators=(",", ":"), allow_nan=False)

