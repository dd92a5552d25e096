"""One Euro smoothing: no delay on steady motion, noise removed, rotations filtered on the sphere."""

import importlib.util
import inspect
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d

from tracker.pose import euler_to_matrix, matrix_to_quaternion, quaternion_to_matrix
from tracker.smoothing import (
    LANDMARK_PARAMS,
    ROTATION_PARAMS,
    STEADY_PARAMS,
    FaceSmoother,
    OneEuro,
    OneEuroParams,
    QuaternionOneEuro,
)

FPS = 30.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def jitter_tool():
    """tools/jitter.py, whose lag and jitter measures BENCHMARKS.md reports."""
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("jitter_tool", REPO / "tools" / "jitter.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["jitter_tool"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def head_motion(rng, frames, coords, extra=0):
    """Drifting, smooth head-like motion (a random walk of band-limited velocity), frames × coords."""
    velocity = gaussian_filter1d(rng.normal(0.0, 1.0, (frames + extra, coords)), 4.0, axis=0)
    return np.cumsum(velocity, axis=0) * 0.02


def angle_between(q1, q2):
    return float(2 * np.degrees(np.arccos(min(1.0, abs(float(np.dot(q1, q2)))))))


@pytest.mark.parametrize("params", [LANDMARK_PARAMS, OneEuroParams(5.0, 5.0, 0.5, 1)], ids=["default", "first-order"])
def test_constant_input_passes_exactly_and_a_ramp_lags_less_than_a_frame(params):
    f = OneEuro(*params)
    for k in range(60):
        assert np.array_equal(f(np.array([3.0, -2.0]), k / FPS), [3.0, -2.0])
    ramp = OneEuro(*params)
    v = 1.0  # one inter-ocular distance per second: a brisk head movement
    lags = []
    for k in range(120):
        t = k / FPS
        y = ramp(np.array([v * t]), t)[0]
        if t >= 1.5:  # after convergence (the speed estimate's 0.5 Hz low-pass has settled)
            lags.append((v * t - y) / v * FPS)  # frames
    # On a ramp the speed estimate converges to v, so the cutoff opens to min_cutoff + beta·v and each of
    # the `order` exponential stages with factor a lags by (1 - a) / a frames (default: 22 Hz, 2 × 0.22).
    cutoff = params.min_cutoff + params.beta * v
    a = 1.0 / (1.0 + FPS / (2 * np.pi * cutoff))
    assert abs(max(lags) - params.order * (1 - a) / a) < 0.02
    assert 0 <= min(lags) and max(lags) < 0.9


def test_second_order_removes_more_acceleration_at_the_same_ramp_lag():
    """Two stages in cascade against one, with cutoffs that give a ramp the same lag (0.96 frames):
    the second-order filter leaves less of white noise's frame-to-frame acceleration."""
    first = OneEuroParams(5.0, 0.0, 0.5, 1)
    a1 = 1.0 / (1.0 + FPS / (2 * np.pi * first.min_cutoff))
    a2 = 2.0 / (2.0 + (1 - a1) / a1)  # 2 (1 - a2) / a2 = (1 - a1) / a1
    second = OneEuroParams(FPS * a2 / ((1 - a2) * 2 * np.pi), 0.0, 0.5, 2)
    noise = np.random.default_rng(3).normal(0.0, 0.01, (600, 400))

    def acceleration_left(params):
        f = OneEuro(*params)
        out = np.stack([f(x, k / FPS) for k, x in enumerate(noise)])[30:]
        accel = lambda y: np.abs(y[2:] - 2 * y[1:-1] + y[:-2]).mean()
        return accel(out) / accel(noise[30:])

    first_left, second_left = acceleration_left(first), acceleration_left(second)
    assert second_left < 0.92 * first_left, (first_left, second_left)


def test_noise_on_a_still_point_is_removed_at_any_face_size():
    sigma = 0.01  # inter-ocular units: a pixel on a 100-pixel face, ten times our tracker's still noise
    ratios = []
    for iod_px in (40.0, 200.0):
        rng = np.random.default_rng(0)
        s = FaceSmoother()
        still = np.random.default_rng(9).uniform(0, 500, size=(68, 2))
        raw = still + rng.normal(0, sigma * iod_px, size=(300, 68, 2))
        out = np.array([s(k / FPS, raw[k], iod_px)[0] for k in range(300)])[30:]
        ratios.append((out - still).std() / (raw[30:] - still).std())
    # The defaults trade still-face smoothing for lag <= 1 frame (tracker/smoothing.py): ~0.6 is left.
    assert max(ratios) < 0.65
    # Filtering in inter-ocular units makes the result independent of the face's size in pixels.
    assert abs(ratios[0] - ratios[1]) < 1e-9


def test_clock_quirks_non_increasing_time_and_non_finite_values():
    f = OneEuro(*LANDMARK_PARAMS)
    f(np.array([0.0, 0.0]), 1.0)
    same_t = f(np.array([1.0, 1.0]), 1.0)  # a repeated timestamp: one 30 fps frame, not a reset
    g = OneEuro(*LANDMARK_PARAMS)
    g(np.array([0.0, 0.0]), 0.0)
    np.testing.assert_allclose(same_t, g(np.array([1.0, 1.0]), 1 / FPS))
    assert 0 < same_t[0] < 1
    out = f(np.array([np.nan, 1.0]), 1.0 + 1 / FPS)  # a non-finite element passes through ...
    assert np.isnan(out[0]) and np.isfinite(out[1])
    assert np.isfinite(f(np.array([1.0, 1.0]), 1.0 + 2 / FPS)).all()  # ... and does not poison the state


@pytest.mark.parametrize("order", [1, 2])
def test_an_element_first_seen_as_nan_starts_at_its_first_value(order):
    """A point missing (NaN) on a track's first frame is not NaN for the rest of the track."""
    f = OneEuro(5.0, 5.0, 0.5, order)
    assert np.isnan(f(np.array([np.nan, 2.0]), 0.0)[0])
    out = f(np.array([3.0, 2.0]), 1 / FPS)
    np.testing.assert_array_equal(out, [3.0, 2.0])  # its first value passes, as a first call's does
    later = f(np.array([4.0, 2.0]), 2 / FPS)
    assert 3.0 < later[0] < 4.0 and later[1] == 2.0


def test_second_order_is_two_first_order_filters_in_cascade():
    """With a fixed cutoff (beta 0) the second-order filter is exactly the first-order one applied twice,
    for points and for rotations (each stage steps along the geodesic)."""
    rng = np.random.default_rng(4)
    points = np.cumsum(rng.normal(0.0, 0.1, (60, 5)), axis=0)
    second, first_a, first_b = OneEuro(6.0, 0.0, 1.0, 2), OneEuro(6.0, 0.0, 1.0), OneEuro(6.0, 0.0, 1.0)
    for k, x in enumerate(points):
        np.testing.assert_allclose(second(x, k / FPS), first_b(first_a(x, k / FPS), k / FPS), atol=1e-12)
    qs = [matrix_to_quaternion(euler_to_matrix(*a)) for a in np.cumsum(rng.normal(0.0, 2.0, (60, 3)), axis=0)]
    second, first_a, first_b = (QuaternionOneEuro(4.0, 0.0, 1.0, 2), QuaternionOneEuro(4.0, 0.0, 1.0),
                                QuaternionOneEuro(4.0, 0.0, 1.0))
    for k, q in enumerate(qs):
        out = second(q, k / FPS)
        assert abs(abs(float(np.dot(out, first_b(first_a(q, k / FPS), k / FPS)))) - 1.0) < 1e-12


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
    f = QuaternionOneEuro(*ROTATION_PARAMS)
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
    g, previous = QuaternionOneEuro(*ROTATION_PARAMS), None
    for k in range(240):
        q = matrix_to_quaternion(euler_to_matrix(0, 0, 1.5 * k))  # 45°/s roll
        out = g(q, k / FPS)
        if previous is not None:
            assert angle_between(out, previous) < 3.0
            assert np.dot(out, previous) > 0.99  # the components themselves never flip sign
        previous = out
    assert angle_between(previous, q) < 5.0


def test_face_smoother_clips_expressions_and_resets_after_a_gap():
    s = FaceSmoother()
    lm = np.random.default_rng(3).uniform(0, 100, size=(68, 2))
    q = matrix_to_quaternion(np.eye(3))
    for k in range(20):
        # Out-of-range inputs (a solver overshooting its bounds) still come out in [0, 1].
        _, _, _, expr = s(k / FPS, lm, 40.0, q, np.zeros(3), np.full(52, 1.2 if k % 2 else -0.1))
        assert expr.min() >= 0 and expr.max() <= 1
    moved = lm + 25.0
    out_lm, out_q, _, _ = s(20 / FPS + 1.0, moved, 40.0, matrix_to_quaternion(euler_to_matrix(30, 0, 0)),
                            np.zeros(3), np.zeros(52))
    np.testing.assert_allclose(out_lm, moved)  # 1 s gap: the new input passes through
    np.testing.assert_allclose(quaternion_to_matrix(out_q), euler_to_matrix(30, 0, 0), atol=1e-9)


@pytest.mark.parametrize("delay", [0.0, 1.0, 2.5])
def test_lag_estimator_reads_a_known_delay(jitter_tool, delay):
    # A drifting track and the same track delayed by a known (possibly fractional) number of frames;
    # the raw one carries white tracker noise. The pooled cross-correlation peak must read the delay.
    rng = np.random.default_rng(int(10 * delay))
    frames, margin = 300, 20
    motion = head_motion(rng, frames, 40, extra=2 * margin)
    spline = CubicSpline(np.arange(frames + 2 * margin), motion)
    t = np.arange(margin, margin + frames, dtype=np.float64)
    raw = spline(t) + rng.normal(0.0, 0.005, (frames, 40))
    delayed = spline(t - delay)
    lag, per_coordinate = jitter_tool.segment_lag(raw, delayed)
    assert abs(lag - delay) < 0.15
    assert abs(np.median(per_coordinate) - delay) < 0.2
    # The track-level function (segments of one track id, frame-weighted) agrees.
    pooled, weights, _ = jitter_tool.lags(np.zeros(frames, dtype=int), raw.reshape(frames, 20, 2),
                                          delayed.reshape(frames, 20, 2))
    assert len(pooled) == 1 and weights[0] == frames and abs(pooled[0] - lag) < 1e-9


def noisy_head_track(seed: int, frames: int = 300, iod: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """68 points of a rigid face (inter-ocular distance ``iod`` px) moving with the head, and the same plus
    white noise of 1.5% of the inter-ocular distance (about a pixel): (clean, raw)."""
    rng = np.random.default_rng(seed)
    face = rng.uniform(-1.0, 1.0, (68, 2)) * iod
    head = head_motion(rng, frames, 3)  # x, y (IOD) and in-plane angle (rad)
    c, s = np.cos(head[:, 2]), np.sin(head[:, 2])
    clean = np.einsum("nij,pj->npi", np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1), face)
    clean += head[:, None, :2] * iod + 320.0
    return clean, clean + rng.normal(0.0, 0.015 * iod, clean.shape)


def smoothed_jitter_and_lag(jitter_tool, smoother, clean, raw, iod=60.0):
    """The measure BENCHMARKS.md reports, raw vs smoothed: (smoothed, jitter ratio, lag in frames)."""
    frames = len(raw)
    smooth = np.stack([smoother(k / FPS, raw[k], iod)[0] for k in range(frames)])
    track, scale = np.zeros(frames, dtype=int), np.full(frames, iod)
    raw_jitter, n = jitter_tool.jitter(raw, scale, track)
    smooth_jitter, _ = jitter_tool.jitter(smooth, scale, track)
    assert n == frames - 2
    lag, _, _ = jitter_tool.lags(track, clean, smooth)
    return smooth, smooth_jitter / raw_jitter, lag[0]


def test_default_smoother_cuts_jitter_of_noisy_head_motion_with_little_lag(jitter_tool):
    clean, raw = noisy_head_track(4)
    smooth, ratio, lag = smoothed_jitter_and_lag(jitter_tool, FaceSmoother(), clean, raw)
    assert ratio < 0.5
    # Smoothed is closer to the truth than raw, and late by about a frame at most.
    assert np.abs(smooth - clean)[30:].mean() < np.abs(raw - clean)[30:].mean()
    assert 0.0 <= lag <= 1.5


def test_steady_smoother_trades_more_lag_for_less_jitter(jitter_tool):
    """--steady: every filter's min_cutoff and beta halved, so less jitter than the default on the same
    noisy head motion, for more (bounded) lag; still closer to the truth than raw."""
    for name, params in STEADY_PARAMS.items():
        default = inspect.signature(FaceSmoother).parameters[name].default
        assert params == default._replace(min_cutoff=default.min_cutoff / 2, beta=default.beta / 2), name
    clean, raw = noisy_head_track(4)
    _, ratio, lag = smoothed_jitter_and_lag(jitter_tool, FaceSmoother(), clean, raw)
    steady, steady_ratio, steady_lag = smoothed_jitter_and_lag(jitter_tool, FaceSmoother(**STEADY_PARAMS), clean, raw)
    assert steady_ratio < 0.8 * ratio
    assert lag < steady_lag <= 3.0
    assert np.abs(steady - clean)[30:].mean() < np.abs(raw - clean)[30:].mean()


def test_linear_filter_design_trades_jitter_for_lag(jitter_tool):
    # The bound BENCHMARKS.md quotes: FIR filters least-squares designed on a track. On a moving face
    # with tracker noise, each keeps a still face still (taps sum to 1); within one target delay, a
    # heavier velocity match buys less lag with less jitter removed; and with lag under a frame the
    # best of them removes most of the (noise-dominated) jitter.
    rng = np.random.default_rng(7)
    frames, iod = 400, 60.0
    face = rng.uniform(-1.0, 1.0, (68, 2)) * iod
    face[36], face[45] = (-iod / 2, 0.0), (iod / 2, 0.0)
    clean = face[None] + head_motion(rng, frames, 2)[:, None, :] * iod + 320.0
    raw = clean + rng.normal(0.0, 0.015 * iod, clean.shape)
    nan = np.full((frames, 468, 2), np.nan)
    clip = jitter_tool.Clip("synthetic", FPS, np.arange(frames) / FPS, np.zeros(frames, dtype=int), raw, nan,
                            np.full((frames, 4), np.nan), np.full((frames, 3), np.nan),
                            np.full((frames, 52), np.nan), nan, np.full((frames, 68), np.nan),
                            np.full((frames, 2), np.nan))
    designs = jitter_tool.design_linear_filter([clip])
    assert len(designs) == len(jitter_tool.LINEAR_DELAYS) * len(jitter_tool.LINEAR_WEIGHTS)
    for h in designs:
        assert abs(h.sum() - 1.0) < 1e-9
    scores = [jitter_tool.score([clip], [(jitter_tool.linear_filter(clip, h), None, None, None)]) for h in designs]
    per_delay = len(jitter_tool.LINEAR_WEIGHTS)
    for d in range(len(jitter_tool.LINEAR_DELAYS)):
        run = scores[d * per_delay:(d + 1) * per_delay]  # weights ascending
        assert all(a.lag >= b.lag - 0.05 for a, b in itertools.pairwise(run))
        assert all(a.reduction >= b.reduction - 1.0 for a, b in itertools.pairwise(run))
    best, count = jitter_tool.linear_bound([clip])
    assert count == len(designs) and best is not None
    assert best.lag <= 1.0 and best.reduction > 80.0


@pytest.mark.parametrize("motion_px, noise_px", [(1.0, 0.0), (1.0, 0.6), (0.0, 0.6)])
def test_image_motion_share_tells_the_images_motion_from_landmark_noise(jitter_tool, motion_px, noise_px):
    # The share BENCHMARKS.md gives beside the jitter: a textured picture moved along a jerky path (each
    # frame's shift, turn and zoom drawn afresh, as with camera shake), landmarks that follow it with noise
    # of their own, and a second track from frame 45 on. The optical flow sees only the picture's motion
    # (and the sensor's noise), so the share it reads is the energy of the true acceleration over the raw
    # landmarks' (measured here from the known path): 1 for noiseless points, about
    # 2·motion²/(2·motion² + 6·noise²) = 0.48 for the mixed case, 0 for noise on a still picture.
    rng = np.random.default_rng(11)
    frames, side, cut = 90, 320, 45
    texture = gaussian_filter1d(gaussian_filter1d(rng.uniform(0, 255, (side, side)), 2.0, axis=0), 2.0, axis=1)
    texture = np.clip((texture - texture.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    shift = np.cumsum(rng.normal(0.0, motion_px, (frames, 2)), axis=0)
    turn = np.cumsum(rng.normal(0.0, 0.004 * motion_px, frames))  # radians
    zoom = np.exp(np.cumsum(rng.normal(0.0, 0.004 * motion_px, frames)))
    centre = np.array([side / 2, side / 2])
    moves = []
    for (dx, dy), angle, scale in zip(shift, turn, zoom):
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        linear = np.array([[c, -s], [s, c]])
        moves.append(np.column_stack([linear, centre + (dx, dy) - linear @ centre]))
    # Sensor noise on every frame: the flow has errors of its own, independent of the landmarks'.
    images = [np.clip(cv2.warpAffine(texture, m.astype(np.float32), (side, side), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT) + rng.normal(0.0, 3.0, (side, side)),
                      0, 255).astype(np.uint8) for m in moves]
    face = rng.uniform(-50.0, 50.0, (68, 2))
    face[36], face[45] = (-30.0, 0.0), (30.0, 0.0)
    clean = np.stack([(face + centre) @ m[:, :2].T + m[:, 2] for m in moves])
    raw = clean + rng.normal(0.0, noise_px, clean.shape) if noise_px else clean.copy()
    track = np.where(np.arange(frames) < cut, 0, 1)
    nan = np.full((frames, 468, 2), np.nan)
    clip = jitter_tool.Clip("synthetic", FPS, np.arange(frames) / FPS, track, raw, nan,
                            np.full((frames, 4), np.nan), np.full((frames, 3), np.nan),
                            np.full((frames, 52), np.nan), nan, np.full((frames, 68), np.nan),
                            np.full((frames, 2), np.nan))
    clip.flow = jitter_tool.image_flow(images, clip)
    fresh = np.isin(np.arange(frames), [0, cut])  # each track's first frame has no step into it
    assert np.isnan(clip.flow[fresh]).all() and np.isfinite(clip.flow[~fresh]).all()
    cross, energy = jitter_tool.image_motion_share(clip)
    middle = np.array([t for t in range(1, frames - 1) if track[t - 1] == track[t + 1]])
    accel = raw[middle + 1] - 2 * raw[middle] + raw[middle - 1]
    true_accel = clean[middle + 1] - 2 * clean[middle] + clean[middle - 1]
    truth = float((accel * true_accel).sum() / (accel**2).sum())
    assert abs(cross / energy - truth) < 0.05
    assert {(1.0, 0.0): 1.0, (1.0, 0.6): 0.48, (0.0, 0.6): 0.0}[(motion_px, noise_px)] == pytest.approx(truth, abs=0.1)
