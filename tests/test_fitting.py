"""The 3D fit recovers known pose, expression and identity from synthetic landmarks."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracker import fitting
from tracker.fitting import (
    IDENTITY_COMPONENTS,
    IDENTITY_FRAMES,
    MESH_FIT_POINTS,
    FaceFitter,
    FitState,
    camera_for,
    choose_contour_points,
    head_pose,
)
from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix, matrix_to_euler

# Shapes that move the 68 landmarks visibly (gaze, cheek puff and tongue do not).
OBSERVABLE = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp",
              "mouthFunnel", "browDownLeft", "mouthPucker", "eyeWideRight"]


@pytest.fixture(scope="module")
def fitter():
    return FaceFitter()


CAMERA = camera_for((640, 480), 640.0)


def synthetic(fitter, rng, yaw, pitch, roll, identity, active, depth=55.0, noise=1.0):
    """The fit's observation rows for the model at a known state, seen by CAMERA, plus pixel noise;
    jaw rows on the silhouette."""
    m = fitter.model
    expr = np.zeros(len(m.names))
    for name in active:
        expr[m.names.index(name)] = rng.uniform(0.2, 0.9)
    rot = euler_to_matrix(yaw, pitch, roll)
    shape = m.mean + np.tensordot(identity, m.identity, 1) + np.tensordot(expr, m.expression, 1)
    turned = shape @ (rot @ MODEL_TO_CAMERA).T
    chosen = choose_contour_points(turned, m.candidates, m.slide)
    tr = np.array([1.0, -2.0, depth])
    q = turned[chosen] + tr
    pts = CAMERA[0] * q[:, :2] / q[:, 2:3] + CAMERA[1:] + rng.normal(0, noise, size=(len(q), 2))
    return pts, FitState(rotation=rot, translation=tr, expression=expr, identity=identity)


def test_recovers_pose_and_expression_with_one_pixel_noise(fitter):
    rng = np.random.default_rng(1)
    identity = np.zeros(IDENTITY_COMPONENTS)
    identity[:10] = rng.normal(0, 0.5, 10)
    pose_err, expr_err, zero_err, off_read = [], [], [], []
    state = None
    # A track: identity converges over the first frames, later frames are scored.
    for frame in range(IDENTITY_FRAMES + 20):
        yaw, pitch, roll = rng.uniform(-40, 40), rng.uniform(-20, 20), rng.uniform(-15, 15)
        active = list(rng.choice(OBSERVABLE, size=3, replace=False))
        pts, truth = synthetic(fitter, rng, yaw, pitch, roll, identity, active)
        result = fitter.fit(pts, CAMERA, state=state, iterations=6 if frame < IDENTITY_FRAMES else 4)
        assert result.ok
        state = result.state
        if frame >= IDENTITY_FRAMES:
            got = np.array(matrix_to_euler(state.rotation))
            pose_err.append(np.abs(got - (yaw, pitch, roll)))
            # Scored on the shapes that are on: a fit reading all zeros would score 0.032 over all 52.
            on = [fitter.model.names.index(name) for name in active]
            expr_err.append(np.abs(state.expression[on] - truth.expression[on]).mean())
            zero_err.append(np.abs(truth.expression[on]).mean())
            off_read.append(np.delete(state.expression, on).mean())
    pose_err = np.array(pose_err)
    assert pose_err.mean(0).max() < 1.0, pose_err.mean(0)
    # Measured: 0.13 against 0.59 for reading zeros (the shapes weakly seen at 55 cm with 1 px noise err most).
    assert np.mean(expr_err) < 0.35 * np.mean(zero_err), (np.mean(expr_err), np.mean(zero_err))
    assert np.mean(off_read) < 0.08, np.mean(off_read)  # the shapes that are off read nearly off (measured 0.04)
    assert state.identity_frames == IDENTITY_FRAMES


def test_identity_converges_over_frames(fitter):
    # Scored where 68 landmarks can see it: the identity's 3D displacement of the landmark points.
    fixed = fitter.model.candidates[:, 0]

    def shape_error(alpha, truth):
        d = np.tensordot(alpha - truth, fitter.model.identity[:, fixed], 1)
        return float(np.sqrt((d**2).sum(1).mean()))

    rng = np.random.default_rng(2)
    identity = np.zeros(IDENTITY_COMPONENTS)
    identity[:8] = rng.normal(0, 0.8, 8)
    state, errors = None, []
    for _ in range(IDENTITY_FRAMES):
        pts, _ = synthetic(fitter, rng, rng.uniform(-30, 30), rng.uniform(-15, 15), rng.uniform(-10, 10), identity,
                           list(rng.choice(OBSERVABLE, size=3, replace=False)))
        state = fitter.fit(pts, CAMERA, state=state, iterations=6).state
        errors.append(shape_error(state.identity, identity))
    mean_face_error = shape_error(np.zeros(IDENTITY_COMPONENTS), identity)
    assert errors[-1] < 0.5 * mean_face_error
    assert errors[-1] < 0.85 * errors[0]  # averaging over frames beats any single frame
    # Held afterwards: more frames do not change it.
    held = state.identity.copy()
    pts, _ = synthetic(fitter, rng, 10, 0, 0, identity, ["jawOpen"])
    np.testing.assert_array_equal(fitter.fit(pts, CAMERA, state=state).state.identity, held)


def test_warm_start_tracks_a_moving_head(fitter):
    rng = np.random.default_rng(3)
    identity = np.zeros(IDENTITY_COMPONENTS)
    state = None
    for yaw in np.linspace(-50, 50, 41):
        pts, _ = synthetic(fitter, rng, yaw, 5.0, -5.0, identity, ["jawOpen"], noise=0.5)
        state = fitter.fit(pts, CAMERA, state=state).state
        assert abs(matrix_to_euler(state.rotation)[0] - yaw) < 2.0


@pytest.mark.parametrize("case", ["nan", "collinear", "three_points", "coincident"])
def test_degenerate_input_is_flagged_never_nan(fitter, case):
    rng = np.random.default_rng(4)
    pts, _ = synthetic(fitter, rng, 0, 0, 0, np.zeros(IDENTITY_COMPONENTS), [])
    weights = np.ones(len(pts))
    if case == "nan":
        pts[:] = np.nan
    elif case == "collinear":
        pts[:, 1] = 2.0 * pts[:, 0] + 1.0
    elif case == "three_points":
        weights[3:] = 0.0
    else:
        pts[:] = 100.0
    result = fitter.fit(pts, CAMERA, weights)
    assert not result.ok and not np.isfinite(result.rms)
    pose = head_pose(result.state)
    assert np.all(np.isfinite([pose.yaw, pose.pitch, pose.roll])) and np.all(np.isfinite(pose.quaternion))
    assert np.all(np.isfinite(result.state.expression))


def test_self_occlusion_marks_the_far_side(fitter):
    # Turned far to the subject's left, the left brow's end and mouth corner face away; the right ones do not.
    def occluded(yaw):
        pts, _ = synthetic(fitter, np.random.default_rng(2), yaw, 0.0, 0.0, np.zeros(IDENTITY_COMPONENTS), [])
        result = fitter.fit(pts, CAMERA)
        assert result.ok
        return result.self_occluded

    left = occluded(65.0)
    assert left[26] and left[54] and not left[17] and not left[48]
    mirrored = occluded(-65.0)
    assert mirrored[17] and mirrored[48] and not mirrored[26] and not mirrored[54]
    assert not occluded(0.0).any()


def test_depth_and_translation_are_recovered(fitter):
    rng = np.random.default_rng(5)
    pts, truth = synthetic(fitter, rng, 15, -5, 3, np.zeros(IDENTITY_COMPONENTS), ["jawOpen"], depth=70.0)
    result = fitter.fit(pts, CAMERA)
    np.testing.assert_allclose(head_pose(result.state).translation_mm, 10 * truth.translation, rtol=0.03, atol=5)
    assert head_pose(result.state).quaternion[0] > 0.9
    # The default camera assumes a focal length of the image width.
    np.testing.assert_allclose(camera_for((640, 480)), [640.0, 319.5, 239.5])


def with_depth(fitter, pts, state, noise, rng):
    """Observation rows plus the mesh rows' relative depth in pixels at the face's distance (+ noise)."""
    m = fitter.model
    turned = (m.mean + np.tensordot(state.identity, m.identity, 1)
              + np.tensordot(state.expression, m.expression, 1)) @ (state.rotation @ MODEL_TO_CAMERA).T
    rows = np.full((len(pts), 3), np.nan)
    rows[:, :2] = pts
    mesh_rows = slice(len(pts) - len(MESH_FIT_POINTS), len(pts))
    z = turned[m.candidates[mesh_rows, 0], 2] * CAMERA[0] / state.translation[2]
    rows[mesh_rows, 2] = z + 123.0 + rng.normal(0, noise, len(z))  # any offset: only relative depth counts
    return rows


def test_depth_rows_recover_pose_and_pull_pitch(fitter, monkeypatch):
    rng = np.random.default_rng(5)
    identity = np.zeros(IDENTITY_COMPONENTS)
    errors = []
    for _ in range(10):
        yaw, pitch, roll = rng.uniform(-30, 30), rng.uniform(-20, 20), rng.uniform(-10, 10)
        pts, truth = synthetic(fitter, rng, yaw, pitch, roll, identity, ["jawOpen"])
        result = fitter.fit(with_depth(fitter, pts, truth, 1.0, rng), CAMERA)
        assert result.ok
        errors.append(np.abs(np.array(matrix_to_euler(result.state.rotation)) - (yaw, pitch, roll)))
    assert np.mean(errors, 0).max() < 1.0
    # Depth that says the head is nodded 15° further: the fit follows it part way, more with more weight.
    pts, truth = synthetic(fitter, rng, 0.0, 0.0, 0.0, identity, [], noise=0.0)
    nodded = FitState(rotation=euler_to_matrix(0.0, 15.0, 0.0), translation=truth.translation,
                      expression=truth.expression, identity=identity)
    rows = with_depth(fitter, pts, nodded, 0.0, rng)
    pitches = []
    for weight in (0.0, 0.1, 1.0):
        monkeypatch.setattr(fitting, "DEPTH_WEIGHT", weight)
        pitches.append(matrix_to_euler(fitter.fit(rows, CAMERA).state.rotation)[1])
    assert abs(pitches[0]) < 0.5
    assert 0.5 < pitches[1] < pitches[2] < 15.0


WARM_UP_CHECK = """
import sys
import cv2
from numba.core.registry import CPUDispatcher
from tracker import fitting, gaze
from tracker.pipeline import FaceTracker, TrackerConfig

def compiled():
    return {f"{m.__name__}.{k}": len(v.signatures) for m in (fitting, gaze) for k, v in vars(m).items()
            if isinstance(v, CPUDispatcher)}

before = compiled()
tracker = FaceTracker(TrackerConfig(backend="onnxruntime"))
warm = compiled()
cap = cv2.VideoCapture(sys.argv[1])
for i in range(10):
    tracker.process(cap.read()[1], i, i / 30.0)
tracker.process(cv2.imread(sys.argv[2]), still=True)
print(before, warm, compiled(), sep="\\n")
"""


def test_warm_up_compiles_every_kernel_a_tracked_face_needs(talking_clip, afw_dir):
    """In a fresh process, building the tracker (which warms the fit and the gaze up) leaves nothing for its
    first faces to compile: the kernels' compiled signatures do not change while it tracks a clip and a still."""
    proc = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, str(talking_clip), str(afw_dir / "1051618982_1.jpg")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    before, warm, after = (ast.literal_eval(line) for line in proc.stdout.splitlines()[-3:])
    assert not any(before.values())  # nothing compiled at import
    assert warm["tracker.fitting._fit_rows"] >= 1 and warm["tracker.gaze._eye_readings"] >= 1
    assert after == warm


def test_expression_hint_is_a_prior_between_the_points_and_the_reading(fitter):
    """A zero hint weight is the plain fit; a hint at the truth helps; a wrong hint about a shape the points
    show (jawOpen) moves it towards the hint the more the heavier its weight, always between the two; a
    dominant weight follows any hint."""
    rng = np.random.default_rng(7)
    identity = np.zeros(IDENTITY_COMPONENTS)
    pts, truth = synthetic(fitter, rng, 10.0, -5.0, 3.0, identity, ["jawOpen", "eyeBlinkLeft", "browInnerUp"])
    plain = fitter.fit(pts, CAMERA, iterations=12).state.expression
    keep = fitter.hint_weight

    def hinted(weight, hint):
        fitter.hint_weight = weight
        return fitter.fit(pts, CAMERA, iterations=12, expression_hint=hint).state.expression

    try:
        assert np.array_equal(hinted(0.0, truth.expression), plain)
        assert (np.abs(hinted(fitting.HINT_WEIGHT, truth.expression) - truth.expression).mean()
                < np.abs(plain - truth.expression).mean())
        jaw = fitter.model.names.index("jawOpen")
        wrong = truth.expression.copy()
        wrong[jaw] = 0.0
        pulled = [hinted(w, wrong)[jaw] for w in (0.01, fitting.HINT_WEIGHT, 100.0)]
        assert plain[jaw] > pulled[0] > pulled[1] > pulled[2] >= 0.0
        assert plain[jaw] - pulled[0] < 0.25 * plain[jaw]  # a light hint leaves the jaw to the points
        target = rng.uniform(0, 1, len(fitter.model.names))
        assert np.abs(hinted(100.0, target) - target).max() < 0.05
    finally:
        fitter.hint_weight = keep


def test_damped_solve_matches_a_general_solver_and_refuses_an_indefinite_matrix():
    """The fit's Cholesky step solves (H + mu·diag(H + 1e-9)) x = g as LAPACK's general solver does,
    for Gauss-Newton matrices of the fit's size, and reports failure (never NaN) when the damped
    matrix is not positive definite or the step would not be finite."""
    rng = np.random.default_rng(3)
    for mu in (1e-7, 1e-3, 10.0):
        jac = rng.normal(size=(170, 58)) * rng.uniform(0.01, 100.0, 58)  # badly scaled columns, as in the fit
        h = jac.T @ jac
        h[7, :] = h[:, 7] = 0.0  # an expression held at its bound by the active set
        h[7, 7] = 1.0
        g = rng.normal(size=58)
        step, solved = fitting._solve_damped(h, mu, g)
        expected = np.linalg.solve(h + np.diag(mu * (np.diag(h) + 1e-9)), g)
        assert solved
        np.testing.assert_allclose(step, expected, rtol=1e-8, atol=1e-12 * np.abs(expected).max())
    indefinite = np.diag([1.0, -4.0, 2.0])
    for h, g in ((indefinite, np.ones(3)), (np.eye(3), np.array([1.0, np.nan, 0.0])),
                 (np.where(np.eye(3) > 0, np.nan, 0.0), np.ones(3))):
        step, solved = fitting._solve_damped(h, 1e-3, g)
        assert not solved and np.all(np.isfinite(step))


def test_orthonormalise_gives_the_polar_factor_of_the_svd():
    """The fit's LAPACK-free re-orthonormalisation returns U·Vᵀ of the SVD, as the fit did before:
    by the iteration itself for rotations with accumulated error (reflections too), and through the
    SVD fallback for a matrix too far from orthonormal for the iteration."""
    rng = np.random.default_rng(5)
    for scale in (1e-15, 1e-9, 1e-4, 0.05):
        for sign in (1.0, -1.0):
            rot = sign * euler_to_matrix(*rng.uniform(-80, 80, 3)) + rng.normal(0, scale, (3, 3))
            u, _, vt = np.linalg.svd(rot)
            polar, converged = fitting._polar_by_iteration(rot)
            assert converged
            np.testing.assert_allclose(polar, u @ vt, atol=1e-12)
            np.testing.assert_allclose(polar.T @ polar, np.eye(3), atol=1e-13)
            np.testing.assert_array_equal(fitting._orthonormalise(rot), polar)
    far = rng.normal(size=(3, 3))
    assert not fitting._polar_by_iteration(far)[1]
    u, _, vt = np.linalg.svd(far)
    np.testing.assert_allclose(fitting._orthonormalise(far), u @ vt, atol=1e-12)
    broken = np.eye(3)
    broken[1, 2] = np.nan
    assert not np.all(np.isfinite(fitting._orthonormalise(broken)))  # left for _usable_fit to refuse


def test_row_preparation_in_one_call_matches_its_steps(fitter):
    """_prepare_rows is _usable_input, then _depth_weights, then (warm start) the rows facing away
    at the previous pose down-weighted: the same weights as those steps one by one."""
    rng = np.random.default_rng(6)
    rot = euler_to_matrix(35.0, -10.0, 5.0)
    n = len(fitter._row_normals)
    obs = np.column_stack([rng.uniform(100, 500, (n, 2)), rng.normal(0, 20, n)])
    obs[3, 0] = np.nan  # an unusable row
    obs[-4:, 2] = np.nan  # rows without depth
    w = rng.uniform(0.2, 1.0, n)
    away = fitter._row_normals @ (rot[2] @ MODEL_TO_CAMERA) > 0.0
    assert away.any() and not away.all()
    for warm in (False, True):
        o1, w1 = obs.copy(), w.copy()
        norm, wd = fitting._prepare_rows(o1, w1, fitter._rigid_rows, fitter._row_normals, rot, warm, 0.1,
                                         fitting.DEPTH_WEIGHT, *fitting.EYE_ROWS)
        o2, w2 = obs.copy(), w.copy()
        expected_norm = fitting._usable_input(o2, w2, *fitting.EYE_ROWS)
        expected_wd = fitting._depth_weights(o2, w2, fitter._rigid_rows, fitting.DEPTH_WEIGHT)
        if warm:
            w2[away] *= 0.1
            expected_wd[away] *= 0.1
        assert norm == expected_norm > 0.0 and w1[3] == 0.0
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(wd, expected_wd)
        np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(fitting._facing_away(fitter._row_normals, rot), away)


def test_expression_hint_reads_nan_as_zero_and_is_clipped(fitter):
    b = fitter.hint_weight
    total, target = fitting._hint_prior(np.array([np.nan, -0.5, 0.25, 2.0, np.inf] + [0.5] * 47), fitter.expr_prior, b)
    np.testing.assert_allclose(total, fitter.expr_prior + b)
    np.testing.assert_allclose(target[:5], b * np.array([0.0, 0.0, 0.25, 1.0, 1.0]) / (fitter.expr_prior + b))
    # Without a hint the prior is the ridge towards 0 alone: the same kernel at weight 0.
    total, target = fitting._hint_prior(np.zeros(52), fitter.expr_prior, 0.0)
    assert np.all(total == fitter.expr_prior) and np.all(target == 0.0)
    rows = np.random.default_rng(8).uniform(100, 500, (len(fitter._row_normals), 2))
    for wrong in (np.zeros(10), np.zeros(60), 0.5):  # the kernel has no bounds checks: refuse, never read past
        with pytest.raises(ValueError, match="52 weights"):
            fitter.fit(rows, CAMERA, expression_hint=wrong)


def test_fit_refuses_rows_or_weights_of_another_shape(fitter):
    n = len(fitter._row_normals)
    rows = np.random.default_rng(9).uniform(100, 500, (n, 3))
    assert fitter.fit(rows, CAMERA, np.ones(n)).ok
    for wrong_rows, wrong_weights in ((rows[:-1], None), (np.vstack([rows, rows]), None), (rows[:, :1], None),
                                      (rows[:, 0], None), (rows, np.ones(n - 1)), (rows, np.ones((n, 2)))):
        with pytest.raises(ValueError, match="observation rows"):
            fitter.fit(wrong_rows, CAMERA, wrong_weights)


def test_kernels_refuse_a_shape_major_basis(fitter):
    m = fitter.model
    with pytest.raises(ValueError, match="point by point"):
        fitting.identity_shape(m.mean, m.identity, np.zeros(IDENTITY_COMPONENTS))
    np.testing.assert_allclose(fitting.identity_shape(m.mean, m.identity_by_point, np.ones(IDENTITY_COMPONENTS)),
                               m.mean + m.identity.sum(0))


def test_affine_pose_recovers_a_weak_perspective_camera():
    # image px = s·(R·B)[:2]·X + t for model points X: the rotation comes back exactly, the depth from f / s.
    for yaw, pitch, roll in ((30.0, -10.0, 5.0), (-55.0, 20.0, -15.0), (0.0, 0.0, 0.0)):
        rot = euler_to_matrix(yaw, pitch, roll)
        scale, t = 12.0, np.array([300.0, 260.0])
        affine = np.concatenate([scale * (rot @ MODEL_TO_CAMERA)[:2], t[:, None]], 1)
        got_rot, got_t = fitting.affine_pose(affine, CAMERA)
        assert np.allclose(matrix_to_euler(got_rot), (yaw, pitch, roll), atol=1e-6)
        assert np.isclose(got_t[2], CAMERA[0] / scale)
        assert np.allclose(got_t[:2] * CAMERA[0] / got_t[2] + CAMERA[1:], t)


def test_fit_starts_from_a_given_camera(fitter, monkeypatch):
    # A first frame at 50° yaw started from the right camera lands on the truth without the points' own
    # affine fit; a camera that is not finite or degenerate falls back to that fit.
    rng = np.random.default_rng(7)
    pts, truth = synthetic(fitter, rng, 50.0, 10.0, -5.0, np.zeros(IDENTITY_COMPONENTS), ["jawOpen"])
    scale = CAMERA[0] / truth.translation[2]
    start = np.concatenate([scale * (truth.rotation @ MODEL_TO_CAMERA)[:2],
                            (CAMERA[1:] + scale * truth.translation[:2])[:, None]], 1)
    calls = []
    original = fitting.initial_pose
    monkeypatch.setattr(fitting, "initial_pose", lambda *a: calls.append(1) or original(*a))
    for camera, used_points in ((start, False), (np.full((2, 4), np.nan), True), (np.zeros((2, 4)), True)):
        calls.clear()
        result = fitter.fit(pts, CAMERA, initial_camera=camera)
        assert result.ok
        assert bool(calls) == used_points
        assert np.abs(np.array(matrix_to_euler(result.state.rotation)) - (50.0, 10.0, -5.0)).max() < 1.5


def test_fit_jacobian_matches_finite_differences_of_its_residuals(fitter):
    """The Jacobian the fit steps with against central differences of its own residuals, column by column
    (rotation increment, translation, expressions, identity; contour points held), with point and depth
    rows weighted unevenly; and the residuals' squares plus the priors are the cost its steps are judged by."""
    m = fitter.model
    rng = np.random.default_rng(12)
    identity = rng.normal(0, 0.5, IDENTITY_COMPONENTS)
    pts, truth = synthetic(fitter, rng, 25.0, -10.0, 5.0, identity, OBSERVABLE)
    obs = fitting._padded_rows(with_depth(fitter, pts, truth, 2.0, rng))
    w = rng.uniform(0.3, 1.0, len(obs))
    norm, wd = fitting._prepare_rows(obs, w, fitter._rigid_rows, fitter._row_normals, truth.rotation, False, 0.1,
                                     fitting.DEPTH_WEIGHT, *fitting.EYE_ROWS)
    sw, dw = np.sqrt(w), np.sqrt(wd)
    depth_rows = np.nonzero(dw > 0.0)[0]
    assert norm > 0.0 and len(depth_rows) >= 10
    n_exp, n_id = len(m.names), IDENTITY_COMPONENTS
    flip = np.array([1.0, -1.0, -1.0])
    # Away from the truth, so that the residuals are not all noise.
    rot0 = euler_to_matrix(22.0, -7.0, 8.0)
    tr0 = truth.translation + np.array([0.4, -0.3, 2.0])
    expr0 = np.clip(truth.expression + rng.uniform(0.05, 0.2, n_exp), 0.0, 1.0)
    alpha0 = identity + rng.normal(0, 0.2, n_id)
    chosen = fitting._contour(fitting.identity_shape(m.mean, m.identity_by_point, alpha0), rot0 * flip,
                              m.candidates, m.slide)

    def residuals(theta):
        rb = (fitting._rodrigues(theta[:3]) @ rot0) * flip  # a left increment of the rotation
        neutral = fitting.identity_shape(m.mean, m.identity_by_point, theta[6 + n_exp:])
        x = fitting._landmark_shape(neutral, m.expression_by_point, theta[6:6 + n_exp], chosen)
        xd = fitting._landmark_shape(m.mean, m.expression_by_point, np.zeros(n_exp), chosen)
        jt = np.zeros((6 + n_exp + n_id, 2 * len(obs) + len(depth_rows)), np.float32)
        res = np.zeros(jt.shape[1], np.float32)
        fitting._residuals_and_jacobian(obs, sw, dw, wd, depth_rows, x, xd, rb, tr0 + theta[3:6], CAMERA, norm,
                                        m.expression_by_point, m.identity_by_point, chosen, n_id, jt, res)
        return res.astype(np.float64), jt.astype(np.float64), rb, x, xd

    theta0 = np.concatenate([np.zeros(3), np.zeros(3), expr0, alpha0])
    res0, jt, rb, x, xd = residuals(theta0)
    eps = 1e-3
    numeric = np.empty_like(jt)
    for k in range(len(theta0)):
        step = np.zeros_like(theta0)
        step[k] = eps
        numeric[k] = (residuals(theta0 + step)[0] - residuals(theta0 - step)[0]) / (2 * eps)
    scale = np.abs(numeric).max(axis=1, keepdims=True)
    assert np.all(scale[:6] > 1e-3)  # every pose column moves the residuals
    np.testing.assert_allclose(jt, numeric, atol=1e-4, rtol=0)
    assert np.all(np.abs(jt - numeric) <= 1e-3 * scale + 2e-5)

    prior, target = fitting._hint_prior(rng.uniform(0, 1, n_exp), fitter.expr_prior, 0.5)
    cost = fitting._cost(obs, sw, dw, x, xd, rb, tr0, CAMERA, norm, expr0, prior, target, alpha0,
                         fitter.id_prior, n_id)
    expected = (res0 ** 2).sum() + (prior * (expr0 - target) ** 2).sum() + fitter.id_prior * (alpha0 ** 2).sum()
    assert cost == pytest.approx(expected, rel=1e-5)


def test_normal_equations_are_the_jacobian_products():
    """The fit's written-out JᵀJ and Jᵀr (float32 sums, blocked, symmetric, depth rows for the pose columns
    only) against NumPy's float64 products, for a Jacobian shaped as the fit builds it."""
    from tracker.fitting import _normal_equations

    rng = np.random.default_rng(5)
    n_par, point_rows, depth_rows = 58, 150, 20
    jt = rng.normal(size=(n_par, point_rows + depth_rows)).astype(np.float32)
    jt[6:, point_rows:] = 0.0  # depth rows move only the pose
    res = rng.normal(size=point_rows + depth_rows).astype(np.float32)
    h, g = _normal_equations(jt, res, point_rows)
    j = jt.T.astype(np.float64)
    np.testing.assert_allclose(h, j.T @ j, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g, j.T @ res.astype(np.float64), rtol=1e-5, atol=1e-4)
    assert np.array_equal(h, h.T)


def test_strided_inputs_fit_as_their_copies_without_another_compilation(fitter):
    # Views (a column slice, every other weight) are made contiguous before the kernel: the same result, and
    # no second compiled version of the kernel in the middle of a track.
    rng = np.random.default_rng(10)
    pts, _ = synthetic(fitter, rng, 20.0, 5.0, 0.0, np.zeros(IDENTITY_COMPONENTS), ["jawOpen"])
    wide = np.column_stack([pts, rng.normal(size=(len(pts), 2))])
    weights = np.repeat(rng.uniform(0.5, 1.0, len(pts)), 2)
    hint = np.repeat(rng.uniform(0.0, 0.5, 52), 2)
    state = fitter.fit(pts, CAMERA).state
    compiled = len(fitting._fit_rows.signatures)
    strided = fitter.fit(wide[:, :2], CAMERA, weights[::2], state=state, expression_hint=hint[::2])
    copied = fitter.fit(pts.copy(), CAMERA, weights[::2].copy(), state=state, expression_hint=hint[::2].copy())
    assert len(fitting._fit_rows.signatures) == compiled
    np.testing.assert_array_equal(strided.state.expression, copied.state.expression)
    np.testing.assert_array_equal(strided.state.rotation, copied.state.rotation)


def test_a_fit_that_cannot_use_its_rows_keeps_the_previous_state_and_says_so(fitter):
    """Rows the fit cannot use (lost or absurd points) leave the track's pose and expression as they were
    and mark the face `fit_ok: false` in the output; a new track with no usable rows has no fit at all."""
    from tracker.fitting import head_pose
    from tracker.types import FaceResult

    rng = np.random.default_rng(11)
    pts, _ = synthetic(fitter, rng, 15.0, -5.0, 2.0, np.zeros(IDENTITY_COMPONENTS), ["jawOpen"])
    good = fitter.fit(pts, CAMERA)
    assert good.ok
    for rows in (np.full_like(pts, np.nan), np.full_like(pts, 1e30)):
        failed = fitter.fit(rows, CAMERA, state=good.state)
        assert not failed.ok and failed.state is good.state and not failed.self_occluded.any()
        assert failed.rms == np.inf
    assert not fitter.fit(np.full_like(pts, np.nan), CAMERA).ok
    face = FaceResult(id=1, bbox=np.zeros(4), score=0.9, landmarks=np.zeros((68, 2)), mesh=None,
                      pose=head_pose(good.state), fit_ok=False)
    assert face.to_record()["fit_ok"] is False
    face.fit_ok = True
    assert "fit_ok" not in face.to_record()  # written only when it fails, as README says
