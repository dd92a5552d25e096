"""One Euro smoothing: no delay on steady motion, noise removed, rotations filtered on the sphere."""

import numpy as np

from tracker.pose import euler_to_matrix, matrix_to_quaternion, quaternion_to_matrix
from tracker.smoothing import LANDMARK_PARAMS, FaceSmoother, OneEuro, QuaternionOneEuro

FPS = 30.0


def angle_between(q1, q2):
    return float(2 * np.degrees(np.arccos(min(1.0, abs(float(np.dot(q1, q2)))))))


def test_constant_input_passes_exactly_and_a_ramp_lags_less_than_a_frame():
    f = OneEuro(*LANDMARK_PARAMS)
    for k in range(60):
        assert np.array_equal(f(np.array([3.0, -2.0]), k / FPS), [3.0, -2.0])
    ramp = OneEuro(*LANDMARK_PARAMS)
    v = 1.0  # one inter-ocular distance per second: a brisk head movement
    lags = []
    for k in range(90):
        t = k / FPS
        y = ramp(np.array([v * t]), t)[0]
        if t >= 1.0:  # after convergence
            lags.append((v * t - y) / v)
    # The speed opens the cutoff to min_cutoff + beta·v = 11 Hz: about 0.5 frame of lag, under one frame.
    assert 0 <= max(lags) < 1.0 / FPS


def test_noise_on_a_still_point_is_removed():
    rng = np.random.default_rng(0)
    f = OneEuro(*LANDMARK_PARAMS)
    sigma = 0.01  # inter-ocular units: a pixel or two on a webcam face
    out = np.array([f(rng.normal(0, sigma, size=68), k / FPS) for k in range(300)])[30:]
    assert out.std() < 0.5 * sigma


def test_lower_confidence_smooths_more():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, size=(300, 1))
    sure, doubtful = OneEuro(*LANDMARK_PARAMS), OneEuro(*LANDMARK_PARAMS)
    a = np.array([sure(x, k / FPS, confidence=1.0) for k, x in enumerate(noise)])[30:]
    b = np.array([doubtful(x, k / FPS, confidence=0.2) for k, x in enumerate(noise)])[30:]
    assert b.std() < 0.8 * a.std()


def test_quaternion_filter_denoises_stays_unit_and_ignores_the_sign():
    rng = np.random.default_rng(2)
    truth = matrix_to_quaternion(euler_to_matrix(20, -10, 5))
    f = QuaternionOneEuro(1.0, 1.0)
    raw_err, smooth_err = [], []
    for k in range(200):
        noisy = matrix_to_quaternion(euler_to_matrix(20 + rng.normal(0, 1), -10 + rng.normal(0, 1), 5))
        sign = -1.0 if k % 7 == 3 else 1.0  # q and -q are the same rotation
        out = f(sign * noisy, k / FPS)
        assert abs(np.linalg.norm(out) - 1) < 1e-9
        if k > 30:
            raw_err.append(angle_between(noisy, truth))
            smooth_err.append(angle_between(out, truth))
    assert np.mean(smooth_err) < 0.6 * np.mean(raw_err)
    # A steady turn through a full circle (w changes sign on the way) never jumps.
    g, previous = QuaternionOneEuro(1.0, 1.0), None
    for k in range(240):
        q = matrix_to_quaternion(euler_to_matrix(0, 0, 1.5 * k))  # 45°/s roll
        out = g(q, k / FPS)
        if previous is not None:
            assert angle_between(out, previous) < 3.0
        previous = out
    assert angle_between(previous, q) < 5.0


def test_face_smoother_clips_expressions_and_resets_after_a_gap():
    s = FaceSmoother()
    lm = np.random.default_rng(3).uniform(0, 100, size=(68, 2))
    q = matrix_to_quaternion(np.eye(3))
    for k in range(20):
        _, _, _, expr = s(k / FPS, lm, 40.0, q, np.zeros(3), np.full(52, 1.0 if k % 2 else 0.0))
        assert expr.min() >= 0 and expr.max() <= 1
    moved = lm + 25.0
    out_lm, out_q, _, _ = s(20 / FPS + 1.0, moved, 40.0, matrix_to_quaternion(euler_to_matrix(30, 0, 0)),
                            np.zeros(3), np.zeros(52))
    np.testing.assert_allclose(out_lm, moved)  # 1 s gap: the new input passes through
    np.testing.assert_allclose(quaternion_to_matrix(out_q), euler_to_matrix(30, 0, 0), atol=1e-9)
