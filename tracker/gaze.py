"""Eye gaze from the face mesh's irises and the 3D fit: the eight ARKit ``eyeLook*`` weights.

Each eye is a ball that turns about a centre fixed in the head. The centre sits at a calibrated offset from
the midpoint of the eye's corners in the fitted face model (``engines/gaze_calibration.npz``, fitted by
``tools/calibrate_gaze.py`` on helen_train faces, whose subjects mostly look into the camera: their irises
then lie on the line from the camera through that centre). The iris centre is where the camera's ray
through the mesh's iris point meets a sphere of IRIS_DISTANCE_CM about the eye's centre; the direction from
the centre to it, turned into the head's axes, is the eye's gaze. The two eyes' lines of sight are taken to
meet as far away as the camera is (a user looking at the screen beside a webcam): where each leaves the
sphere about the midpoint of the two centres through the camera, the two points weighted by how open the
eye is and how much of it faces the camera, seen from that midpoint, is the face's gaze. Eyes on the camera
then read the same with one eye as with two; averaging the two eyes' angles instead, one eye alone (a wink,
a head turned away) read its own inward lean, atan(half the eyes' distance / the camera's), 3° at 60 cm.
A far target seen with one eye reads that lean the other way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numba import njit

from tracker.engines import ENGINES_DIR, load_engine_arrays
from tracker.fitting import FaceModel, FitState
from tracker.mesh import MESH_INPUT, MeshResult, unmirror_crop_x
from tracker.pose import MODEL_TO_CAMERA
from tracker.roi import crop_points_to_image
from tracker.smoothing import FaceSmoother
from tracker.types import Gaze

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
# How far an eye turns from straight ahead in its socket: about 50° at most (people turn the head to look
# further). A reading beyond it is a misreading, not a gaze: on multi_face a face in profile (head yaw -70°)
# read its eyes turned +75° back towards the camera for 40 frames.
EYE_RANGE_DEG = 50.0
_EYE_RANGE_COS = math.cos(math.radians(EYE_RANGE_DEG))
# The least the two eyes must count together (eye_weights times each reading's reliability) to give a gaze.
MIN_WEIGHT = 0.5
# Eye-in-head angles that ARKit's eyeLook weights reach 1 at. ARKit does not document them; these are
# about the range people turn their eyes before turning the head.
FULL_SIDEWAYS_DEG, FULL_UP_DEG, FULL_DOWN_DEG = 30.0, 25.0, 25.0
# Degrees per unit of the gaze's smoothing filter (yaw, pitch): a full eyeLook weight's turn, so that the
# angles are filtered as the weights would be.
_GAZE_UNITS = np.array([FULL_SIDEWAYS_DEG, FULL_UP_DEG])
LOOK_NAMES = ("eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeLookDownLeft",
              "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeLookDownRight")


def iris_points(mesh: MeshResult) -> np.ndarray:
    """The two iris centres (subject's right eye, then left) in image pixels: the crop's, averaged with the
    mirror crop's mapped back when the mesh ran that pass."""
    centres = mesh.iris_crop_points[:, 0]
    if mesh.mirror_iris_crop_points is not None:
        back = mesh.mirror_iris_crop_points[::-1, 0].copy()  # the mirror's crop-left iris is the subject's left
        # Mapped back as the landmarks are. The two passes then disagree by 0.7 crop px (median of 80 afw
        # faces; 0.3 px the other way with MESH_INPUT - x), but their average reads the gaze of helen_train
        # faces looking into the camera with less sideways bias (+0.7° against +3.7°).
        back[:, 0] = unmirror_crop_x(back[:, 0])
        centres = 0.5 * (centres + back)
    return crop_points_to_image(centres, mesh.roi, MESH_INPUT)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Lid gap over eye width of each eye (subject's right, then left) from the 68 landmarks."""
    lm = np.asarray(landmarks, np.float64)[36:48].tolist()  # floats: a dozen points, numpy calls would dominate
    out = np.empty(2)
    for k, ((outer, inner), lids) in enumerate(zip(EYE_CORNERS.tolist(), EYE_LIDS.tolist())):
        (ox, oy), (ix, iy) = lm[outer - 36], lm[inner - 36]
        gap = sum(math.dist(lm[a - 36], lm[b - 36]) for a, b in zip(*lids)) / len(lids[0])
        out[k] = gap / max(math.hypot(ox - ix, oy - iy), 1e-9)
    return out


def eye_weights(landmarks: np.ndarray, facing: np.ndarray | None = None) -> np.ndarray:
    """How much each eye's gaze counts (subject's right, then left): 0 shut, 1 open, ramping between SHUT
    and OPEN, times the share of its six landmarks that face the camera (``facing``, 68 bool) if given."""
    weights = np.clip((eye_openness(landmarks) - SHUT) / (OPEN - SHUT), 0.0, 1.0)
    if facing is not None:
        weights *= np.count_nonzero(np.reshape(facing[36:48], (2, 6)), axis=1) / 6.0
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
        data = load_engine_arrays(path, "gaze calibration", "refit it with `python tools/calibrate_gaze.py`")
        return cls(model, data["centre_offset"])

    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) the ray-sphere kernel now, not on the first face."""
        eye_readings(np.zeros((2, 2)), np.zeros((2, 3)), np.eye(3), np.array([0.0, 0.0, 60.0]),
                     np.array([640.0, 319.5, 239.5]))

    def eye_centres(self, state: FitState) -> np.ndarray:
        """The two eyeball centres (subject's right, then left) in model axes, cm, for the fit's identity."""
        if state.neutral is not None:  # the held identity's shape, built once by the fit
            return _centres(state.neutral[self.model.landmarks[EYE_CORNERS]], self.centre_offset)
        return eye_centres(self.model, state.identity, self.centre_offset)

    def estimate(self, iris_px: np.ndarray, landmarks: np.ndarray, state: FitState, camera: np.ndarray,
                 facing: np.ndarray | None = None) -> Gaze | None:
        """Gaze from the iris centres (image px), the 68 landmarks (how open each eye is) and the fit;
        ``facing`` (68 bool, optional) marks the landmarks that face the camera. Each eye counts by its
        :func:`eye_weights` times its reading's :func:`eye_readings` reliability. None when together they
        count less than MIN_WEIGHT (about one eye, half open or read at 45°): nearly shut or turned-away
        eyes, or irises at the rim of the ball, tell too little to move a held gaze. A reading turned further
        than EYE_RANGE_DEG from straight ahead counts 0."""
        weights = eye_weights(landmarks, facing).tolist()
        if not sum(weights) >= MIN_WEIGHT:
            return None
        centres = self.eye_centres(state)
        readings = eye_readings(iris_px, centres, state.rotation, state.translation, camera)
        # Model axes, relative to the midpoint of the two centres: the eyes and the camera (where
        # to_camera · X + translation = 0; to_camera is a rotation).
        middle = centres.mean(0)
        camera_at = -(state.rotation @ MODEL_TO_CAMERA).T @ state.translation - middle
        reach2 = float(camera_at @ camera_at)  # the squared distance of the sphere the lines of sight meet on
        total, fixation = 0.0, [0.0, 0.0, 0.0]  # the weighted sum of the eyes' points on that sphere
        for w, eye, (y, p, sure) in zip(weights, (centres - middle).tolist(), readings.tolist()):
            if math.isfinite(sure) and within_eye_range(y, p):
                sight = (math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y))
                along = sum(e * d for e, d in zip(eye, sight))
                # Where the line of sight from inside the sphere leaves it: |eye + s · sight|² = reach2, s > 0.
                s = math.sqrt(max(along * along - sum(e * e for e in eye) + reach2, 0.0)) - along
                fixation = [f + w * sure * (e + s * d) for f, e, d in zip(fixation, eye, sight)]
                total += w * sure
        if not total >= MIN_WEIGHT:
            return None
        return Gaze.from_direction(*fixation)


def within_eye_range(yaw: float | np.ndarray, pitch: float | np.ndarray) -> bool | np.ndarray:
    """Whether an eye turned by ``yaw`` and ``pitch`` (radians, in the head) is within EYE_RANGE_DEG of straight
    ahead: the cosine of its turn is cos(yaw)·cos(pitch). False for NaN angles."""
    return np.cos(yaw) * np.cos(pitch) >= _EYE_RANGE_COS


def eye_centres(model: FaceModel, identity: np.ndarray, centre_offset: np.ndarray) -> np.ndarray:
    """Eyeball centres (subject's right, then left; model cm) at ``centre_offset`` (outward, up, forward)
    from the midpoints of the eye corners of the face with this identity."""
    corners = model.landmarks[EYE_CORNERS]  # 2×2 indices into the model's points
    return _centres(model.mean[corners] + np.einsum("k,kijc->ijc", identity, model.identity[:, corners]),
                    centre_offset)


def _centres(corners: np.ndarray, centre_offset: np.ndarray) -> np.ndarray:
    """Eyeball centres from the two eyes' corners (2×2×3, model cm); model +x is the subject's left."""
    dx, dy, dz = centre_offset
    return corners.mean(1) + np.array([[-dx, dy, dz], [dx, dy, dz]])


def eye_readings(iris_px: np.ndarray, centres: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                 camera: np.ndarray, distance: float = IRIS_DISTANCE_CM) -> np.ndarray:
    """Each eye's (yaw, pitch), radians, eye-in-head, and how well that turn can be read.

    The camera ray through the eye's iris point meets the sphere of ``distance`` about its centre (nearest
    the camera; where the ray misses, its closest point). ``rotation`` and ``translation`` are the fit's: a
    model point X is at rotation · MODEL_TO_CAMERA · X + translation in camera axes (x right, y down,
    z forward, cm). The third column is the squared cosine of the angle between the eye's gaze and the
    direction back to the camera: an iris near the ball's rim as the camera sees it moves little for a large
    turn, so its reading's variance grows as 1 / cos². It is 1 for an eye looking into the camera, 0 at the
    rim (and where the ray misses the ball)."""
    to_camera = np.ascontiguousarray(rotation @ MODEL_TO_CAMERA, np.float64)
    return _eye_readings(np.ascontiguousarray(iris_px, np.float64), np.ascontiguousarray(centres, np.float64),
                         to_camera, np.asarray(translation, np.float64), np.asarray(camera, np.float64),
                         float(distance))


# fastmath without its no-NaN and no-inf flags: a NaN in must come out as a NaN angle, which the caller skips.
@njit(cache=True, fastmath={"contract", "arcp", "reassoc", "nsz"})
def _eye_readings(iris_px, centres, to_camera, translation, camera, distance):
    # float64 throughout: the angles come from differences of camera-space points tens of cm away.
    f, cx, cy = camera[0], camera[1], camera[2]
    out = np.empty((iris_px.shape[0], 3))
    for e in range(iris_px.shape[0]):
        c = to_camera @ centres[e] + translation  # the eyeball centre, camera axes
        ray = np.array([(iris_px[e, 0] - cx) / f, (iris_px[e, 1] - cy) / f, 1.0])
        ray /= np.sqrt(ray @ ray)
        along = ray @ c
        reach = along * along - c @ c + distance * distance
        s = along - np.sqrt(max(reach, 0.0))
        d = s * ray - c
        d /= np.sqrt(d @ d)
        head = to_camera.T @ d  # model axes: x the subject's left, y up, z out of the face
        out[e, 0] = np.arctan2(head[0], head[2])
        out[e, 1] = np.arctan2(head[1], np.sqrt(head[0] * head[0] + head[2] * head[2]))
        facing = -(d @ ray)
        out[e, 2] = facing * facing if facing > 0.0 else 0.0
    return out


# Each eyeLook weight's share of (sideways toward the subject's left, up, down), in LOOK_NAMES order.
_LOOK_TABLE = np.array([[-1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],   # Left eye: In, Out, Up, Down
                        [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1]],  # Right eye: its In is toward the left
                       np.float64)


def look_weights(gaze: Gaze | None) -> dict[str, float]:
    """The eight eyeLook weights of a gaze (both eyes turn together); all 0 without one."""
    if gaze is None:
        return dict.fromkeys(LOOK_NAMES, 0.0)
    turn = np.array([gaze.yaw / FULL_SIDEWAYS_DEG, gaze.pitch / FULL_UP_DEG, -gaze.pitch / FULL_DOWN_DEG])
    return dict(zip(LOOK_NAMES, np.clip(_LOOK_TABLE @ turn, 0.0, 1.0).tolist()))


def smooth_gaze(smoother: FaceSmoother, time_s: float, gaze: Gaze | None) -> Gaze | None:
    """``gaze`` through the face's smoother (its gaze filter, at the eyeLook weights' scale); called every
    frame, None while none has been read: the filter passes the gap through and starts on the first reading."""
    angles = np.array((gaze.yaw, gaze.pitch) if gaze is not None else (math.nan, math.nan)) / _GAZE_UNITS
    yaw, pitch = (smoother.gaze(angles, time_s) * _GAZE_UNITS).tolist()
    return Gaze(yaw=yaw, pitch=pitch) if math.isfinite(yaw + pitch) else None
