"""The pose convention of DESIGN.md, checked on what a camera sees."""

import numpy as np
import pytest

from tracker.pose import (
    MODEL_TO_CAMERA,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_to_matrix,
)

NOSE = np.array([0.0, 0.0, 1.0])  # model axes: out of the face
HEAD_TOP = np.array([0.0, 1.0, 0.0])  # model axes: up


def seen(rot: np.ndarray, v: np.ndarray) -> np.ndarray:
    return rot @ MODEL_TO_CAMERA @ v


def test_signs_match_what_the_image_shows():
    assert seen(euler_to_matrix(20, 0, 0), NOSE)[0] > 0.3  # turn to own left: nose to image right
    assert seen(euler_to_matrix(0, 20, 0), NOSE)[1] < -0.3  # look up: nose to image top (y down)
    top = seen(euler_to_matrix(0, 0, 20), HEAD_TOP)
    assert top[0] > 0.3  # tilt to own left shoulder: head top moves to image right (clockwise)
    frontal = seen(np.eye(3), NOSE)
    assert frontal[2] < 0  # a frontal nose points at the camera


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, -10, 5), (-60, 25, -20), (80, 40, 170), (-120, -70, 10)])
def test_euler_round_trip_and_quaternion(angles):
    rot = euler_to_matrix(*angles)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    yaw, pitch, roll = matrix_to_euler(rot)
    np.testing.assert_allclose(euler_to_matrix(yaw, pitch, roll), rot, atol=1e-9)
    if abs(angles[1]) < 90 and abs(angles[0]) <= 90:
        np.testing.assert_allclose((yaw, pitch, roll), angles, atol=1e-9)
    q = matrix_to_quaternion(rot)
    assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    np.testing.assert_allclose(quaternion_to_matrix(q), rot, atol=1e-9)


def test_yaw_is_applied_first():
    # R = R_roll · R_pitch · R_yaw: composing single-axis rotations in that order gives the same matrix.
    composed = euler_to_matrix(0, 0, 15) @ euler_to_matrix(0, 25, 0) @ euler_to_matrix(35, 0, 0)
    np.testing.assert_allclose(euler_to_matrix(35, 25, 15), composed, atol=1e-12)
