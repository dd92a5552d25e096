"""Eye gaze from the face mesh's irises and the 3D fit: the eight ARKit ``eyeLook*`` weights.

Each eye is a ball that turns about a centre fixed in the head. The centre sits at a calibrated offset from
the midpoint of the eye's corners in the fitted face model (``engines/gaze_calibration.npz``, fitted by
``tools/calibrate_gaze.py`` on helen_train faces, whose subjects mostly look into the camera: their irises
then lie on the line from the camera through that centre). The iris centre is where the camera's ray
through the mesh's iris point meets a sphere of IRIS_DISTANCE_CM about the eye's centre; the direction from
the centre to it, turned into the head's axes, is the eye's gaze. The two eyes are averaged (they turn
together), each weighted by how open it is and how much of it faces the camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.engines import ENGINES_DIR, BackendError
from tracker.fitting import FaceModel, FitState
from tracker.mesh import MESH_INPUT, MeshResult
from tracker.pose import MODEL_TO_CAMERA
from tracker.roi import crop_points_to_image

CALIBRATION_FILE = "gaze_calibration.npz"
# Eyeball centre to iris centre (the pupil sits about 3.6 mm behind the cornea's apex, which is about
# 13.5 mm in front of the eye's centre of rotation). Anatomy, not fitted: faces looking into the camera,
# the only gaze these data tell, place the iris on the same ray whatever this distance is.
IRIS_DISTANCE_CM = 1.0
# iBUG 68 eye corners (outer, inner) and lids (upper pair, lower pair): the subject's right eye, then left.
EYE_CORNERS = np.array([[36, 39], [45, 42]])
EYE_LIDS = np.array([[[37, 38], [41, 40]], [[43, 44], [47, 46]]])
# Lid gap over eye width below which an eye tells no gaze, and above which it counts fully.
SHUT, OPEN = 0.08, 0.16
# Eye-in-head angles that ARKit's eyeLook weights reach 1 at. ARKit does not document them; these are
# about the range people turn their eyes before turning the head.
FULL_SIDEWAYS_DEG, FULL_UP_DEG, FULL_DOWN_DEG = 30.0, 25.0, 25.0
LOOK_NAMES = ("eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeLookDownLeft",
              "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeLookDownRight")


@dataclass(frozen=True)
class Gaze:
    """Eye-in-head gaze, radians: ``yaw`` > 0 toward the subject's left, ``pitch`` > 0 up."""

    yaw: float
    pitch: float


def iris_points(mesh: MeshResult) -> np.ndarray:
    """The two iris centres (subject's right eye, then left) in image pixels: the crop's, averaged with the
    mirror crop's mapped back when the mesh ran that pass."""
    centres = mesh.iris_crop_points[:, 0]
    if mesh.mirror_iris_crop_points is not None:
        back = mesh.mirror_iris_crop_points[::-1, 0].copy()  # the mirror's crop-left iris is the subject's left
        back[:, 0] = (MESH_INPUT - 1) - back[:, 0]
        centres = 0.5 * (centres + back)
    return crop_points_to_image(centres, mesh.roi, MESH_INPUT)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Lid gap over eye width of each eye (subject's right, then left) from the 68 landmarks."""
    lm = np.asarray(landmarks, np.float64)
    width = np.linalg.norm(lm[EYE_CORNERS[:, 0]] - lm[EYE_CORNERS[:, 1]], axis=1)
    gap = np.linalg.norm(lm[EYE_LIDS[:, 0]] - lm[EYE_LIDS[:, 1]], axis=2).mean(1)
    return gap / np.maximum(width, 1e-9)


def eye_weights(landmarks: np.ndarray, facing: np.ndarray | None = None) -> np.ndarray:
    """How much each eye's gaze counts (subject's right, then left): 0 shut, 1 open, ramping between SHUT
    and OPEN, times the share of its six landmarks that face the camera (``facing``, 68 bool) if given."""
    weights = np.clip((eye_openness(landmarks) - SHUT) / (OPEN - SHUT), 0.0, 1.0)
    if facing is not None:
        weights = weights * np.array([np.mean(facing[36:42]), np.mean(facing[42:48])])
    return weights


class GazeEstimator:
    def __init__(self, model: FaceModel, centre_offset: np.ndarray) -> None:
        """``centre_offset``: the eyeball centre's offset from the midpoint of the eye's corners, model cm
        (outward, up, forward)."""
        self.model = model
        self.centre_offset = np.asarray(centre_offset, np.float64)

    @classmethod
    def load(cls, model: FaceModel, path: Path | None = None) -> GazeEstimator:
        path = path or ENGINES_DIR / CALIBRATION_FILE
        if not path.is_file():
            raise BackendError(f"gaze calibration {path} is missing; refit it with `python tools/calibrate_gaze.py`")
        return cls(model, np.load(path)["centre_offset"])

    def eye_centres(self, state: FitState) -> np.ndarray:
        """The two eyeball centres (subject's right, then left) in model axes, cm, for the fit's identity."""
        return eye_centres(self.model, state.identity, self.centre_offset)

    def estimate(self, iris_px: np.ndarray, landmarks: np.ndarray, state: FitState, camera: np.ndarray,
                 facing: np.ndarray | None = None) -> Gaze | None:
        """Gaze from the iris centres (image px), the 68 landmarks (how open each eye is) and the fit;
        ``facing`` (68 bool, optional) marks the landmarks that face the camera. None when neither eye is
        usable (both shut or turned away)."""
        weights = eye_weights(landmarks, facing)
        if not weights.sum() > 0:
            return None
        angles = eye_angles(iris_px, self.eye_centres(state), state.rotation, state.translation, camera)
        usable = np.isfinite(angles).all(1) & (weights > 0)
        if not usable.any():
            return None
        yaw, pitch = np.average(angles[usable], axis=0, weights=weights[usable])
        return Gaze(yaw=float(yaw), pitch=float(pitch))


def eye_centres(model: FaceModel, identity: np.ndarray, centre_offset: np.ndarray) -> np.ndarray:
    """Eyeball centres (subject's right, then left; model cm) at ``centre_offset`` (outward, up, forward)
    from the midpoints of the eye corners of the face with this identity."""
    corners = model.landmarks[EYE_CORNERS]  # 2×2 indices into the model's points
    shape = model.mean[corners] + np.einsum("k,kijc->ijc", identity, model.identity[:, corners])
    mid = shape.mean(1)
    outward = np.array([-1.0, 1.0])  # model +x is the subject's left
    return mid + np.stack([outward * centre_offset[0], np.full(2, centre_offset[1]),
                           np.full(2, centre_offset[2])], 1)


def eye_angles(iris_px: np.ndarray, centres: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
               camera: np.ndarray, distance: float = IRIS_DISTANCE_CM) -> np.ndarray:
    """Each eye's (yaw, pitch), radians, eye-in-head: the camera ray through its iris point meets the
    sphere of ``distance`` about its centre (nearest the camera; where the ray misses, its closest point).
    ``rotation`` and ``translation`` are the fit's: a model point X is at rotation · MODEL_TO_CAMERA · X +
    translation in camera axes (x right, y down, z forward, cm)."""
    f, cx, cy = camera
    to_camera = rotation @ MODEL_TO_CAMERA
    centres_cam = centres @ to_camera.T + translation
    rays = np.column_stack([(iris_px[:, 0] - cx) / f, (iris_px[:, 1] - cy) / f, np.ones(len(iris_px))])
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    along = (rays * centres_cam).sum(1)
    reach = along ** 2 - (centres_cam ** 2).sum(1) + distance ** 2
    s = along - np.sqrt(np.maximum(reach, 0.0))
    direction = s[:, None] * rays - centres_cam
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    head = direction @ to_camera  # into model axes: x the subject's left, y up, z out of the face
    return np.column_stack([np.arctan2(head[:, 0], head[:, 2]),
                            np.arctan2(head[:, 1], np.hypot(head[:, 0], head[:, 2]))])


def look_weights(gaze: Gaze | None) -> dict[str, float]:
    """The eight eyeLook weights of a gaze (both eyes turn together); all 0 without one."""
    if gaze is None:
        return dict.fromkeys(LOOK_NAMES, 0.0)
    sideways = np.degrees(gaze.yaw) / FULL_SIDEWAYS_DEG  # > 0: toward the subject's left
    up = np.degrees(gaze.pitch)
    level = {"Up": max(up, 0.0) / FULL_UP_DEG, "Down": max(-up, 0.0) / FULL_DOWN_DEG}
    toward = {"Left": {"Out": sideways, "In": -sideways}, "Right": {"Out": -sideways, "In": sideways}}
    weights = {}
    for name in LOOK_NAMES:
        side = "Left" if name.endswith("Left") else "Right"
        kind = name[len("eyeLook"):-len(side)]
        value = level[kind] if kind in level else toward[side][kind]
        weights[name] = float(np.clip(value, 0.0, 1.0))
    return weights
