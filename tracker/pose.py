"""Head-pose convention, in one place (DESIGN.md "Conventions").

Camera axes: x right, y down, z forward (away from the camera). Angles in
degrees, relative to looking straight into the camera:
  yaw   > 0: the subject turns towards their own left (nose moves to the image's right)
  pitch > 0: the subject looks up
  roll  > 0: the head tilts towards the subject's left shoulder (clockwise on screen)
R = R_roll · R_pitch · R_yaw, applied to the frontal face (yaw first).
The face model's own axes (ICT-FaceKit: x to the subject's left, y up, z out of
the face) are turned into camera axes by MODEL_TO_CAMERA before R applies.
"""

from __future__ import annotations

import numpy as np

# Frontal face, model axes -> camera axes: y up becomes y down, z out of the face points at the camera.
MODEL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (camera axes) of a head at these angles in degrees.

    Signs follow from the axes: turning to the subject's left moves the nose
    (pointing at -z) towards +x, a negative turn about +y; looking up moves it
    towards -y, a negative turn about +x; clockwise on screen is positive about +z.
    """
    y, p, r = np.radians([yaw, pitch, roll])
    return _rz(r) @ _rx(-p) @ _ry(-y)


def matrix_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation made by :func:`euler_to_matrix`.

    With R = Rz(r)·Rx(-p)·Ry(-y): R[2,1] = -sin p; R[2,0] = cos p·sin y; R[2,2] = cos p·cos y;
    R[0,1] = -sin r·cos p; R[1,1] = cos r·cos p. Pitch is taken in [-90°, 90°].
    """
    rot = np.asarray(rot, dtype=np.float64)
    pitch = np.arcsin(np.clip(-rot[2, 1], -1.0, 1.0))
    yaw = np.arctan2(rot[2, 0], rot[2, 2])
    roll = np.arctan2(-rot[0, 1], rot[1, 1])
    return tuple(float(v) for v in np.degrees([yaw, pitch, roll]))


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion [w, x, y, z] of a rotation matrix, with w >= 0."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
