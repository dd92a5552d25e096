"""The blendshape calibration (tracker/expression.py) and the tool that fits it (tools/calibrate_expression.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tracker.engines import BackendError
from tracker.expression import ExpressionCalibration, calibrate, far_side, side_of
from tracker.fitting import FaceModel

REPO = Path(__file__).resolve().parent.parent
KEY_SHAPES = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp")


def load_tool():
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("calibrate_expression", REPO / "tools" / "calibrate_expression.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_far_side_follows_the_pose_convention():
    # A face turned to its own left (yaw > 0) turns its left side away from the camera.
    sides = np.array([side_of(n) for n in ("mouthSmileLeft", "mouthSmileRight", "jawOpen")], np.float64)
    assert sides.tolist() == [1, -1, 0]
    np.testing.assert_allclose(far_side(sides, 30.0), [30 / 45, 0, 0])
    np.testing.assert_allclose(far_side(sides, -45.0), [0, 1, 0])
    np.testing.assert_allclose(far_side(sides, np.array([0.0, 90.0])), [[0, 0, 0], [2, 0, 0]])


def test_fit_recovers_a_known_pull_towards_the_prior():
    """Tracked weights made from true ones by a known shrinkage (stronger on the side turned away), plus
    noise: the tool's fit finds the map that undoes it, shared by the Left and Right shapes."""
    tool = load_tool()
    names = FaceModel.load().names
    rng = np.random.default_rng(3)
    n = 3000
    truth = rng.uniform(0, 1, (n, 6))
    truth[rng.uniform(size=(n, 6)) < 0.3] = 0.0  # shapes off part of the time, as in the renders
    yaw = rng.uniform(-60, 60, n)
    sides = np.array([side_of(k) for k in KEY_SHAPES], np.float64)
    far = far_side(sides, yaw)
    a, b, c, d = 1.2, -0.05, 0.3, -0.02  # the map to recover: tracked = its inverse, so truth = map(tracked)
    tracked = (truth - b - far * d) / (a + far * c) + rng.normal(0, 0.01, truth.shape)
    calibration = tool.fit_calibration(names, tracked, truth, yaw)
    for k, name in enumerate(KEY_SHAPES):
        got = calibration.coefficients[names.index(name)]
        if sides[k]:
            np.testing.assert_allclose(got, [a, b, c, d], atol=0.04)
        else:  # no side: the far terms are not fitted
            np.testing.assert_allclose(got, [a, b, 0.0, 0.0], atol=0.03)
            assert got[2] == got[3] == 0.0
    after = calibrate(tracked, far, calibration.coefficients[[names.index(k) for k in KEY_SHAPES]])
    assert np.abs(after - truth).mean() < 0.5 * np.abs(tracked - truth).mean()
    untouched = [i for i, name in enumerate(names) if name not in KEY_SHAPES]
    np.testing.assert_array_equal(calibration.coefficients[untouched], [[1.0, 0.0, 0.0, 0.0]] * len(untouched))


def test_identity_changes_nothing_and_save_load_round_trips(tmp_path):
    names = FaceModel.load().names
    weights = np.random.default_rng(0).uniform(0, 1, len(names))
    np.testing.assert_array_equal(ExpressionCalibration.identity(names).apply(weights, 37.0), weights)
    coefficients = np.tile([1.1, -0.02, 0.2, 0.01], (len(names), 1))
    path = tmp_path / "calibration.npz"
    ExpressionCalibration(names, coefficients).save(path)
    loaded = ExpressionCalibration.load(names, path)
    np.testing.assert_array_equal(loaded.coefficients, coefficients)
    left = names.index("mouthSmileLeft")
    # yaw 45°: the left side is fully turned away, far = 1
    assert loaded.apply(weights, 45.0)[left] == pytest.approx(min(1.0, 1.3 * weights[left] - 0.01))


def test_load_refuses_a_missing_or_mismatched_file(tmp_path):
    names = FaceModel.load().names
    with pytest.raises(BackendError, match="calibrate_expression.py"):
        ExpressionCalibration.load(names, tmp_path / "absent.npz")
    ExpressionCalibration.identity(names[::-1]).save(tmp_path / "other.npz")
    with pytest.raises(BackendError, match="does not match"):
        ExpressionCalibration.load(names, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="52×4"):
        ExpressionCalibration(names, np.ones((len(names), 3)))


def test_shipped_calibration_is_monotone_and_keeps_a_neutral_face_neutral():
    names = FaceModel.load().names
    calibration = ExpressionCalibration.load(names)
    w = np.linspace(0, 1, 101)
    for yaw in (-60.0, -30.0, 0.0, 30.0, 60.0):
        out = np.array([calibration.apply(np.full(len(names), v), yaw) for v in w])
        assert (np.diff(out, axis=0) >= 0).all(), yaw  # a stronger reading never reads weaker
        assert out[0].max() <= 0.02, yaw  # nothing is invented on a neutral face
        assert out[-1, [names.index(k) for k in KEY_SHAPES]].min() >= 0.95, yaw  # a full reading stays full
    untouched = [i for i, name in enumerate(names) if name not in KEY_SHAPES]
    np.testing.assert_array_equal(calibration.coefficients[untouched], [[1.0, 0.0, 0.0, 0.0]] * len(untouched))
