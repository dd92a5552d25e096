"""Fitting the 3D face model to the tracker's points: head pose, expression and identity.

Camera: a pinhole, p = f · (q_x, q_y) / q_z + c with q = R · B · X + T, B the
model-to-camera axis flip (tracker/pose.py), the principal point at the image
centre and the focal length given, or assumed to be the image width (~53° field
of view). Why not weak perspective (scaled orthographic), the usual choice: on
ICT renders at webcam distances (45-70 cm) it overestimated yaw by 16% (MAE
5.5°), because the far half of a turned face is foreshortened by perspective as
well as by the turn; with the same renders at 4× the focal length (nearly
orthographic) the error fell to 2.6°. A pinhole with a roughly right focal
length removes most of that, and gives depth directly.

Solver: Levenberg-Marquardt in Numba over a rotation increment (axis-angle,
applied on the left), 3D translation, 52 expression weights bounded to [0, 1]
(active set: weights at a bound pushed outwards are held) with a small ridge
prior and a pull towards the refiner's image-based reading of each weight
(HINT_WEIGHT; the points alone follow blinks, smiles and brows weakly), and —
for a track's first frames only — identity coefficients with a ridge prior.
Identity is averaged over those frames and then held. Each iteration the jaw
contour points slide to the candidate on the face's silhouette for the current
pose (RDR's sliding contour), so a turned head does not drag the jaw onto the
cheek. Residuals are divided by the observed
outer-eye-corner distance, so the priors mean the same at every face size.

Observations: the 17 jaw landmarks, the 8 eyelid landmarks of the 68 (they follow
a blink further than the mesh's own lids), and face-mesh points; for the mesh's
rigid points also its relative depth z (DEPTH_WEIGHT), which fixes the 2D points'
under-reading of pitch (gain 0.75 → about 0.9 on rendered stills, 0.95 on clips).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  Numba runs the kernels' @ and np.linalg in SciPy's BLAS and LAPACK
from numba import njit

from tracker.backends import ENGINES_DIR
from tracker.engines import load_engine_arrays
from tracker.jit_cache import ensure_writable_cache
from tracker.pose import MODEL_TO_CAMERA, matrix_to_euler, matrix_to_quaternion
from tracker.types import Pose

ensure_writable_cache()  # before the kernels below are decorated: Numba looks for its cache folder then

MODEL_FILE = "face_model.npz"
OFFSETS_FILE = "landmark_offsets.npz"
IDENTITY_COMPONENTS = 40  # the leading ICT identity components; the rest add little at 68 points
IDENTITY_FRAMES = 30  # frames a track spends estimating identity before holding it


# MediaPipe mesh points the fit observes (besides the 17 jaw landmarks): eye and lip contours,
# brows, nose and rigid cheek/forehead points. Direct network outputs, denser and steadier
# than the 68 mapped landmarks; the mesh's own face-oval points are left out because at a
# turn they do not follow the silhouette.
MESH_FIT_POINTS = np.array([
    33, 133,  # subject's right eye corners
    263, 362,  # left eye corners
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips
    70, 105, 107, 55, 65, 300, 334, 336, 285, 295,  # brows
    1, 4, 6, 168, 98, 327, 2, 19,  # nose
    10, 151, 50, 280, 123, 352, 205, 425,  # forehead and cheeks
])
# iBUG landmarks the fit observes besides the jaw: the eyelids (upper 37, 38 / 43, 44; lower 41, 40 /
# 47, 46). The mesh's own lids close only about a quarter of the way on a closed eye; the refined
# 68 points follow a blink much further (tools/evaluate_renders.py), so blinks are fitted to them.
# Weight of the mesh's relative depth (z) rows next to its x, y rows. The 2D points alone under-read
# pitch (gain about 0.75 on renders): a nod moves points mostly in depth, which the mesh network
# estimates too. Only the rigid points' depth is used (eye corners, nose, forehead, cheeks), against
# the mean face's, so depth informs the pose only: on lips and brows it moved expressions the wrong
# way, and through identity it skewed jawOpen. Chosen on training renders (seeds < 1000): on stills
# (tools/tune_fit_weights.py depth, seeds 500-649) the worst-axis pose MAE is 3.10° at 0.1, 2.69° at
# 0.2, 2.58° at 0.3; on 18 tracked clips (tools/tune_fit_weights.py depth --clips) it is
# 2.51° at 0.1, 2.50° at 0.2, 2.59° at 0.3, and yaw rises with the weight (2.15°, 2.38°, 2.56°). 0.2 is
# the best on the clips, where the tracker runs, and better than 0.1 on stills. It was 0.1 until the
# expression reading led the fit (that pull costs some pitch on stills).
DEPTH_WEIGHT = 0.2
# Weight of the prior pulling each expression towards the refiner's image-based reading of it (the
# refiner's expression output, engines/REFINER.md), in the units of the residuals (squared
# inter-ocular distances) like the ridge prior of 1e-3 beside it. Chosen on renders held out from the
# expression head's training (tools/tune_fit_weights.py hint): with the current head, key-blendshape MAE
# 0.202 without the hint, 0.087 at 0.1, 0.072 at 1, the best of its grid (the head before the L1 term: 0.087
# at 1, 0.085 at 10 and above); 1 is the smallest weight within 0.005 of the best, so the points keep some
# say on real faces, which the head never saw.
HINT_WEIGHT = 1.0
DEPTH_POINTS = np.array([33, 133, 263, 362, 1, 4, 6, 168, 98, 327, 2, 19, 10, 151, 50, 280, 123, 352, 205, 425])
LID_LANDMARKS = np.array([37, 38, 41, 40, 43, 44, 47, 46])
JAW_ROWS = 17  # observation rows 0-16 are the jaw landmarks; the lids, then the mesh points follow
LANDMARK_ROWS = np.concatenate([np.arange(JAW_ROWS), LID_LANDMARKS])
# Rows of the outer eye corners (mesh 33 and 263): the residual scale.
EYE_ROWS = (len(LANDMARK_ROWS) + int(np.nonzero(MESH_FIT_POINTS == 33)[0][0]),
            len(LANDMARK_ROWS) + int(np.nonzero(MESH_FIT_POINTS == 263)[0][0]))


@dataclass
class FaceModel:
    """The reduced face model, restricted to the points the fit uses.

    The fit observes "rows": the 17 jaw landmarks, each sliding along its contour
    candidates, then the 8 eyelid landmarks (LID_LANDMARKS), then the MESH_FIT_POINTS of the face mesh.
    """

    names: list[str]  # 52 ARKit names
    mean: np.ndarray  # F×3 cm, model axes
    identity: np.ndarray  # K×F×3
    expression: np.ndarray  # 52×F×3
    normals: np.ndarray  # F×3 neutral-face normals, smoothed (for visibility)
    candidates: np.ndarray  # R×C indices into the F points (-1 padded); jaw rows list the contour candidates
    slide: np.ndarray  # R int8: -1 pick min camera x (subject's right jaw), +1 max x (left jaw), 0 fixed
    landmarks: np.ndarray  # 68 indices into the F points: the iBUG landmarks (outputs, visibility)
    mesh468_tris: np.ndarray | None = None
    # The bases point by point (F×K×3, F×52×3) for the fit's kernels, which read one point's
    # coefficients at a time: a point's block is then a few contiguous cache lines
    # (tools/bench_fit.py: 0.146 -> 0.121 ms per fit against the shape-major layout).
    identity_by_point: np.ndarray = field(init=False, repr=False)
    expression_by_point: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.identity_by_point = np.ascontiguousarray(self.identity.transpose(1, 0, 2))
        self.expression_by_point = np.ascontiguousarray(self.expression.transpose(1, 0, 2))

    @classmethod
    def load(cls, path: Path | None = None, offsets: Path | None = ENGINES_DIR / OFFSETS_FILE) -> FaceModel:
        """Load the reduced model; ``offsets`` (None to skip) moves each observed point to where our
        detector puts it (tools/calibrate_landmarks.py)."""
        path = path or ENGINES_DIR / MODEL_FILE
        d = load_engine_arrays(path, "face model", "rebuild it with `python tools/build_face_model.py`")
        lm68, contour, mesh = d["lm68"].astype(np.int64), d["contour"].astype(np.int64), d["mesh468"].astype(np.int64)
        rows = [[int(lm68[k]), *(int(p) for p in contour[k] if p >= 0 and p != lm68[k])] for k in range(JAW_ROWS)]
        rows += [[int(lm68[k])] for k in LID_LANDMARKS]
        rows += [[int(mesh[j])] for j in MESH_FIT_POINTS]
        used = np.unique(np.concatenate([lm68, *[np.array(r) for r in rows]]))
        remap = -np.ones(len(d["mean"]), dtype=np.int64)
        remap[used] = np.arange(len(used))
        mean = d["mean"].astype(np.float64)
        if offsets is not None:
            moved = load_engine_arrays(offsets, "landmark offsets", "recompute them with "
                                       "`python tools/calibrate_landmarks.py`")["offsets"]
            mean = mean + point_offsets(moved, rows, len(mean))
        candidates = -np.ones((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        slide = np.zeros(len(rows), dtype=np.int8)
        for i, row in enumerate(rows):
            candidates[i, : len(row)] = remap[row]
            if i < JAW_ROWS and i != 8 and len(row) > 1:  # the chin (8) stays put
                slide[i] = -1 if i < 8 else 1
        return cls(
            names=[str(n) for n in d["arkit_names"]],
            mean=mean[used],
            identity=np.ascontiguousarray(d["id_basis"][:IDENTITY_COMPONENTS, used], dtype=np.float64),
            expression=np.ascontiguousarray(d["exp_basis"][:, used], dtype=np.float64),
            normals=_smoothed_normals(d["mean"], d["normals"], used),
            candidates=candidates,
            slide=slide,
            landmarks=remap[lm68],
            mesh468_tris=d.get("mesh468_tris"),
        )


def point_offsets(row_offsets: np.ndarray, rows: list[list[int]], n_points: int) -> np.ndarray:
    """Per-point 3D offsets from per-row ones (a jaw row moves all its contour candidates),
    averaged where rows share a point."""
    total = np.zeros((n_points, 3))
    count = np.zeros(n_points)
    for offset, row in zip(row_offsets, rows):
        for p in row:
            total[p] += offset
            count[p] += 1
    return total / np.maximum(count, 1)[:, None]


def _smoothed_normals(points: np.ndarray, normals: np.ndarray, used: np.ndarray, radius_cm: float = 1.5):
    """Normals averaged over all model points within ``radius_cm``, for visibility.

    Point normals follow fine geometry (an eye corner's points into the socket, as
    ICT has no eyeballs); visibility is about the surface around a landmark.
    """
    pts = points.astype(np.float64)
    out = np.empty((len(used), 3))
    for i, p in enumerate(used):
        near = np.sum((pts - pts[p]) ** 2, axis=1) <= radius_cm**2
        n = normals[near].astype(np.float64).sum(0)
        out[i] = n / max(np.linalg.norm(n), 1e-12)
    return out


@dataclass
class FitState:
    """What one track carries from frame to frame."""

    rotation: np.ndarray  # 3×3, camera axes
    translation: np.ndarray  # 3, cm: the model origin in the camera frame
    expression: np.ndarray  # 52
    identity: np.ndarray  # K
    identity_sum: np.ndarray = field(default_factory=lambda: np.zeros(IDENTITY_COMPONENTS))
    identity_frames: int = 0
    neutral: np.ndarray | None = None  # identity_shape of the held identity, built once when it is held


@dataclass
class FitResult:
    state: FitState
    rms: float  # residual RMS over weighted landmarks, in inter-ocular units
    ok: bool  # False for degenerate input: the values are the previous (or neutral) ones
    self_occluded: np.ndarray  # 68 bool: the landmark's surface faces away from the camera


@njit(cache=True, fastmath=True)
def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    r = np.eye(3)
    if theta < 1e-12:
        return r
    k = w / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return r + np.sin(theta) * kx + (1.0 - np.cos(theta)) * _matmul3(kx, kx)


@njit(cache=True, fastmath=True)
def _matmul3(a, b):
    """a · b for 3×3 matrices, written out: a BLAS call costs more than the arithmetic, most when its
    code has left the caches (the networks run between two fits)."""
    out = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j]
    return out


@njit(cache=True, fastmath=True)
def identity_shape(mean, id_basis, alpha):
    """Neutral shape of a person: mean plus identity, at every fitting point (``id_basis`` point by
    point, F×K×3)."""
    if id_basis.shape[0] != mean.shape[0]:
        raise ValueError("identity_shape takes the identity basis point by point (FaceModel.identity_by_point)")
    x = mean.copy()
    for p in range(mean.shape[0]):
        for k in range(id_basis.shape[1]):
            ak = alpha[k]
            if ak != 0.0:
                x[p, 0] += ak * id_basis[p, k, 0]
                x[p, 1] += ak * id_basis[p, k, 1]
                x[p, 2] += ak * id_basis[p, k, 2]
    return x


@njit(cache=True, fastmath=True)
def choose_contour_points(cam, candidates, slide):
    """Per landmark, the fitting point used now: the silhouette candidate for sliding jaw points."""
    n = candidates.shape[0]
    chosen = np.empty(n, dtype=np.int64)
    for i in range(n):
        best = candidates[i, 0]
        if slide[i] != 0:
            bx = cam[best, 0] * slide[i]
            for c in range(1, candidates.shape[1]):
                p = candidates[i, c]
                if p < 0:
                    break
                if cam[p, 0] * slide[i] > bx:
                    bx = cam[p, 0] * slide[i]
                    best = p
        chosen[i] = best
    return chosen


@njit(cache=True, fastmath=True)
def _landmark_shape(neutral, exp_basis, expr, chosen):
    """3D positions of the chosen points with expression: only these 68 are needed per step."""
    n = chosen.shape[0]
    x = np.empty((n, 3))
    for i in range(n):
        p = chosen[i]
        x0, x1, x2 = neutral[p, 0], neutral[p, 1], neutral[p, 2]
        for j in range(exp_basis.shape[1]):
            e = expr[j]
            if e != 0.0:
                x0 += e * exp_basis[p, j, 0]
                x1 += e * exp_basis[p, j, 1]
                x2 += e * exp_basis[p, j, 2]
        x[i, 0], x[i, 1], x[i, 2] = x0, x1, x2
    return x


@njit(cache=True, fastmath=True)
def _contour(neutral, rb, candidates, slide):
    # The silhouette is chosen on the neutral shape: expressions barely move the jaw outline sideways.
    cam = np.empty((neutral.shape[0], 1))
    for p in range(neutral.shape[0]):
        cam[p, 0] = rb[0, 0] * neutral[p, 0] + rb[0, 1] * neutral[p, 1] + rb[0, 2] * neutral[p, 2]
    return choose_contour_points(cam, candidates, slide)


@njit(cache=True, fastmath=True)
def _cost(obs, sw, dw, x, xd, rb, tr, cam, norm, expr, expr_prior, expr_target, alpha, id_prior, n_id):
    f, cx, cy = cam[0], cam[1], cam[2]
    c = 0.0
    for i in range(obs.shape[0]):
        qx = rb[0, 0] * x[i, 0] + rb[0, 1] * x[i, 1] + rb[0, 2] * x[i, 2] + tr[0]
        qy = rb[1, 0] * x[i, 0] + rb[1, 1] * x[i, 1] + rb[1, 2] * x[i, 2] + tr[1]
        qz = rb[2, 0] * x[i, 0] + rb[2, 1] * x[i, 1] + rb[2, 2] * x[i, 2] + tr[2]
        ru = sw[i] * (f * qx / qz + cx - obs[i, 0]) / norm
        rv = sw[i] * (f * qy / qz + cy - obs[i, 1]) / norm
        c += ru * ru + rv * rv
    # Relative depth rows: the mean face's camera depths (rigid points), in pixels at the face's
    # distance, against the mesh's own depths, both about their weighted means.
    m_y, m_z, sum_w = 0.0, 0.0, 0.0
    for i in range(obs.shape[0]):
        if dw[i] > 0.0:
            wi = dw[i] * dw[i]
            m_y += wi * (rb[2, 0] * xd[i, 0] + rb[2, 1] * xd[i, 1] + rb[2, 2] * xd[i, 2])
            m_z += wi * obs[i, 2]
            sum_w += wi
    if sum_w > 0.0:
        m_y /= sum_w
        m_z /= sum_w
        scale = f / tr[2]
        for i in range(obs.shape[0]):
            if dw[i] > 0.0:
                y2 = rb[2, 0] * xd[i, 0] + rb[2, 1] * xd[i, 1] + rb[2, 2] * xd[i, 2]
                rz = dw[i] * (scale * (y2 - m_y) - (obs[i, 2] - m_z)) / norm
                c += rz * rz
    for j in range(expr.shape[0]):
        d = expr[j] - expr_target[j]
        c += expr_prior[j] * d * d
    for k in range(n_id):
        c += id_prior * alpha[k] * alpha[k]
    return c


@njit(cache=True, fastmath=True)
def fit_landmarks(obs, w, wd, mean, id_basis, exp_basis, candidates, slide, rot, tr, cam, expr, alpha, neutral,
                  fit_identity, iterations, expr_prior, expr_target, id_prior, norm):
    """Levenberg-Marquardt fit of the model to 2D points through a pinhole camera
    ``cam`` = (focal, cx, cy); returns (rot, translation_cm, expr, alpha, cost).

    ``obs`` is N×3: image x, y and a relative depth in pixels (the face mesh's z), used by the
    rows with depth weight ``wd`` > 0 (about the weighted mean depth, so only its shape counts).
    ``id_basis`` (F×K×3) and ``exp_basis`` (F×52×3) are the bases point by point
    (FaceModel.identity_by_point, expression_by_point).
    ``neutral`` is identity_shape(mean, id_basis, alpha), passed in so a held identity is not rebuilt.
    Expression j has the prior expr_prior[j] · (expr[j] − expr_target[j])².
    """
    if id_basis.shape[0] != mean.shape[0] or exp_basis.shape[0] != mean.shape[0] or expr_prior.shape[0] != exp_basis.shape[1]:
        raise ValueError("fit_landmarks takes the bases point by point (FaceModel.*_by_point) and one prior per expression")
    n_pts = obs.shape[0]
    n_exp = exp_basis.shape[1]
    n_id = id_basis.shape[1] if fit_identity else 0
    n_par = 6 + n_exp + n_id
    flip = np.array([1.0, -1.0, -1.0])
    sw = np.sqrt(w)
    dw = np.sqrt(wd)
    depth_rows = np.nonzero(dw > 0.0)[0]
    n_depth = depth_rows.shape[0]
    rot = rot.copy()
    tr = tr.copy()
    expr = expr.copy()
    alpha = alpha.copy()
    mu = 1e-3
    rb = rot * flip  # R · B: B flips the model's y and z columns
    chosen = _contour(neutral, rb, candidates, slide)
    x = _landmark_shape(neutral, exp_basis, expr, chosen)
    # Depth rows compare the mean face's depths (rigid points: only the pose moves them).
    xd = _landmark_shape(mean, exp_basis, np.zeros(n_exp), chosen)
    cost = _cost(obs, sw, dw, x, xd, rb, tr, cam, norm, expr, expr_prior, expr_target, alpha, id_prior, n_id)
    # The Jacobian in float32, stored transposed (jt = Jᵀ, a parameter's column contiguous): JᵀJ and Jᵀr,
    # the costliest products of an iteration, take half the time and cache (their sums are good to about
    # 1e-6; the step is solved and its cost checked in float64). See _normal_equations.
    jt = np.zeros((n_par, 2 * n_pts + n_depth), dtype=np.float32)
    res = np.zeros(2 * n_pts + n_depth, dtype=np.float32)
    for _ in range(iterations):
        # Weighted residuals and Jacobian rows, then H = JᵀJ and g = Jᵀr.
        _residuals_and_jacobian(obs, sw, dw, wd, depth_rows, x, xd, rb, tr, cam, norm, exp_basis, id_basis, chosen,
                                n_id, jt, res)
        h, g = _normal_equations(jt, res, 2 * n_pts)
        for j in range(n_exp):
            h[6 + j, 6 + j] += expr_prior[j]
            g[6 + j] += expr_prior[j] * (expr[j] - expr_target[j])
        for k in range(n_id):
            h[6 + n_exp + k, 6 + n_exp + k] += id_prior
            g[6 + n_exp + k] += id_prior * alpha[k]
        # Active set: an expression at a bound that the gradient pushes outwards is held there.
        for j in range(n_exp):
            if (expr[j] <= 0.0 and g[6 + j] > 0.0) or (expr[j] >= 1.0 and g[6 + j] < 0.0):
                h[6 + j, :] = 0.0
                h[:, 6 + j] = 0.0
                h[6 + j, 6 + j] = 1.0
                g[6 + j] = 0.0
        improved = False
        converged = False
        for _attempt in range(4):
            step, solved = _solve_damped(h, mu, -g)  # it checks the step is finite: fastmath here cannot
            new_tr = tr + step[3:6]
            if not solved or new_tr[2] <= 1.0:  # the face stays in front of the camera
                mu *= 10.0
                continue
            new_rot = _matmul3(_rodrigues(step[0:3]), rot)
            new_expr = np.minimum(np.maximum(expr + step[6:6 + n_exp], 0.0), 1.0)
            new_alpha = alpha.copy()
            for k in range(n_id):
                new_alpha[k] += step[6 + n_exp + k]
            new_neutral = identity_shape(mean, id_basis, new_alpha) if n_id > 0 else neutral
            new_rb = new_rot * flip
            new_chosen = _contour(new_neutral, new_rb, candidates, slide)
            new_x = _landmark_shape(new_neutral, exp_basis, new_expr, new_chosen)
            new_cost = _cost(obs, sw, dw, new_x, xd, new_rb, new_tr, cam, norm, new_expr, expr_prior, expr_target,
                             new_alpha, id_prior, n_id)
            if new_cost <= cost:
                converged = cost - new_cost < 1e-7 * cost  # no further gain worth an iteration
                rot, tr, expr, alpha = new_rot, new_tr, new_expr, new_alpha
                neutral, rb, chosen, x, cost = new_neutral, new_rb, new_chosen, new_x, new_cost
                mu = max(mu * 0.3, 1e-7)
                improved = True
                break
            mu *= 10.0
        if not improved or converged:
            break
    return _orthonormalise(rot), tr, expr, alpha, cost


@njit(cache=True, fastmath=True)
def _residuals_and_jacobian(obs, sw, dw, wd, depth_rows, x, xd, rb, tr, cam, norm, exp_basis, id_basis, chosen,
                            n_id, jt, res):
    """The fit's weighted residuals and their Jacobian, written into ``res`` and ``jt`` (= Jᵀ, float32):
    two rows per point (u, v), then the depth rows (``depth_rows``, the rows with depth weight), over the
    parameters: a left rotation increment ω, the translation, the expressions, then ``n_id`` identity
    coefficients. ``x`` holds the chosen points with expression (_landmark_shape), ``xd`` the mean face's.
    The squared residuals plus the priors are _cost. Only the pose columns of the depth rows are written:
    the others are zero, and the caller hands ``jt`` in zeroed."""
    n_pts = obs.shape[0]
    n_exp = exp_basis.shape[1]
    n_depth = depth_rows.shape[0]
    f = cam[0]
    sum_wd = 0.0
    for i in depth_rows:
        sum_wd += wd[i]
    for i in range(n_pts):
        # Written out: a 3×3 product per point through BLAS costs more than the arithmetic.
        y0 = rb[0, 0] * x[i, 0] + rb[0, 1] * x[i, 1] + rb[0, 2] * x[i, 2]
        y1 = rb[1, 0] * x[i, 0] + rb[1, 1] * x[i, 1] + rb[1, 2] * x[i, 2]
        y2 = rb[2, 0] * x[i, 0] + rb[2, 1] * x[i, 1] + rb[2, 2] * x[i, 2]
        qx, qy, qz = y0 + tr[0], y1 + tr[1], y2 + tr[2]
        pi = chosen[i]
        g_ = sw[i] / norm * f / qz
        # d(u, v)/dq for u = f qx/qz: rows [1, 0, -qx/qz] and [0, 1, -qy/qz], times f/qz.
        du = (g_, 0.0, -g_ * qx / qz)
        dv = (0.0, g_, -g_ * qy / qz)
        res[2 * i] = sw[i] * (f * qx / qz + cam[1] - obs[i, 0]) / norm
        res[2 * i + 1] = sw[i] * (f * qy / qz + cam[2] - obs[i, 1]) / norm
        for a in range(2):
            row = 2 * i + a
            d = du if a == 0 else dv
            # dq/dω for a left rotation increment is -[y]x.
            jt[0, row] = d[1] * (-y2) + d[2] * y1
            jt[1, row] = d[0] * y2 + d[2] * (-y0)
            jt[2, row] = d[0] * (-y1) + d[1] * y0
            jt[3, row] = d[0]
            jt[4, row] = d[1]
            jt[5, row] = d[2]
            # dq/dcoefficient = R·B·basis: fold d·(R·B) once per row.
            r0 = d[0] * rb[0, 0] + d[1] * rb[1, 0] + d[2] * rb[2, 0]
            r1 = d[0] * rb[0, 1] + d[1] * rb[1, 1] + d[2] * rb[2, 1]
            r2 = d[0] * rb[0, 2] + d[1] * rb[1, 2] + d[2] * rb[2, 2]
            for j in range(n_exp):
                jt[6 + j, row] = r0 * exp_basis[pi, j, 0] + r1 * exp_basis[pi, j, 1] + r2 * exp_basis[pi, j, 2]
            for k in range(n_id):
                jt[6 + n_exp + k, row] = r0 * id_basis[pi, k, 0] + r1 * id_basis[pi, k, 1] + r2 * id_basis[pi, k, 2]
    if n_depth > 0:
        # Depth rows: residual dw·(s·(y2 − ȳ2) − (z − z̄))/norm with s = f/t_z and y2 the mean face's
        # camera depth at the row, which only the rotation moves (dy2/dω = (y1, −y0, 0)). The weighted
        # means make every row depend on all of them, so their derivatives come off each row.
        scale = f / tr[2]
        m_y = m_z = m_d0 = m_d1 = 0.0
        for r in range(n_depth):
            i = depth_rows[r]
            y0 = rb[0, 0] * xd[i, 0] + rb[0, 1] * xd[i, 1] + rb[0, 2] * xd[i, 2]
            y1 = rb[1, 0] * xd[i, 0] + rb[1, 1] * xd[i, 1] + rb[1, 2] * xd[i, 2]
            y2 = rb[2, 0] * xd[i, 0] + rb[2, 1] * xd[i, 1] + rb[2, 2] * xd[i, 2]
            m_y += wd[i] * y2
            m_z += wd[i] * obs[i, 2]
            m_d0 += wd[i] * y1
            m_d1 -= wd[i] * y0
        m_y /= sum_wd
        m_z /= sum_wd
        m_d0 /= sum_wd
        m_d1 /= sum_wd
        for r in range(n_depth):
            i = depth_rows[r]
            row = 2 * n_pts + r
            y0 = rb[0, 0] * xd[i, 0] + rb[0, 1] * xd[i, 1] + rb[0, 2] * xd[i, 2]
            y1 = rb[1, 0] * xd[i, 0] + rb[1, 1] * xd[i, 1] + rb[1, 2] * xd[i, 2]
            y2 = rb[2, 0] * xd[i, 0] + rb[2, 1] * xd[i, 1] + rb[2, 2] * xd[i, 2]
            g_ = dw[i] / norm
            res[row] = g_ * (scale * (y2 - m_y) - (obs[i, 2] - m_z))
            jt[0, row] = g_ * scale * (y1 - m_d0)
            jt[1, row] = g_ * scale * (-y0 - m_d1)
            jt[5, row] = -g_ * scale / tr[2] * (y2 - m_y)  # s = f/t_z


@njit(cache=True, fastmath=True)
def _normal_equations(jt, res, point_rows):
    """H = JᵀJ and g = Jᵀr (float64) from the float32 Jacobian stored transposed (``jt`` = Jᵀ): float32
    dot products of contiguous columns, four of H's entries per pass over a column, half of H (it is
    symmetric), and the rows from ``point_rows`` on (the depth rows, which only the 6 pose parameters
    move) only for the pose columns. Written out because BLAS gains nothing at this size (58 × 170) on the
    one thread the tracker gives it (tracker.pipeline.one_blas_thread): scratch timings of the product alone read
    63 µs for BLAS on one thread (31 µs on two), 28 µs for a plain loop and 19-25 µs for this one."""
    n, m = jt.shape
    h = np.empty((n, n))
    g = np.empty(n)
    for a in range(n):
        ja = jt[a]
        sg = 0.0
        for k in range(m):
            sg += ja[k] * res[k]
        g[a] = sg
        rows = m if a < 6 else point_rows  # for b <= a, column a >= 6 is zero on the depth rows
        b = 0
        while b + 3 <= a:
            j0, j1, j2, j3 = jt[b], jt[b + 1], jt[b + 2], jt[b + 3]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for k in range(rows):
                x = ja[k]
                s0 += x * j0[k]
                s1 += x * j1[k]
                s2 += x * j2[k]
                s3 += x * j3[k]
            h[a, b] = h[b, a] = s0
            h[a, b + 1] = h[b + 1, a] = s1
            h[a, b + 2] = h[b + 2, a] = s2
            h[a, b + 3] = h[b + 3, a] = s3
            b += 4
        while b <= a:
            jb = jt[b]
            s = np.float32(0.0)
            for k in range(rows):
                s += ja[k] * jb[k]
            h[a, b] = h[b, a] = s
            b += 1
    return h, g


# Fast-math without its no-NaN / no-inf assumptions, so that the checks below stay sound (as fast here).
_FINITE_SAFE_FASTMATH = {"contract", "arcp", "reassoc", "nsz"}


@njit(cache=True, fastmath=_FINITE_SAFE_FASTMATH)
def _polar_by_iteration(r):
    """Björck's iteration R ← R·(3I − RᵀR)/2 towards the polar factor of ``r`` (U·Vᵀ of its SVD),
    quadratic from a near-orthonormal start: (the factor, True), or (_, False) when ``r`` is too far
    from orthonormal (or not finite) for it. From max |RᵀR − I| < 0.5 it takes at most 6 steps; the
    fit's rotations, off by rounding only, take one."""
    x = r.copy()
    for _ in range(8):
        e = _matmul3(x.T, x)
        err = 0.0
        for i in range(3):
            for j in range(3):
                err = max(err, abs(e[i, j] - (1.0 if i == j else 0.0)))
        if err < 1e-14:
            return x, True
        if not err < 0.5:
            break
        x = _matmul3(x, 1.5 * np.eye(3) - 0.5 * e)
    return x, False


@njit(cache=True, fastmath=_FINITE_SAFE_FASTMATH)
def _orthonormalise(r):
    """The nearest orthonormal matrix to ``r`` (its polar factor): many small left increments
    accumulate rounding. From a near-orthonormal start, as here, _polar_by_iteration reaches it without
    LAPACK, whose SVD costs ~45 µs when the networks have just run (cold caches) against ~3 µs when
    warm; the SVD remains the fallback. A non-finite ``r`` comes back as it is, for _usable_fit to
    refuse (the SVD would raise)."""
    if not np.all(np.isfinite(r)):
        return r.copy()
    x, converged = _polar_by_iteration(r)
    if converged:
        return x
    u_, _, vt = np.linalg.svd(r)
    return u_ @ vt


@njit(cache=True, fastmath=_FINITE_SAFE_FASTMATH)
def _solve_damped(h, mu, g):
    """Solve (H + mu·diag(H + 1e-9)) x = g by Cholesky, (x, True); (_, False) if that matrix is not
    positive definite or the step is not finite. H = JᵀJ plus priors is symmetric, so this takes about
    half of LAPACK's general solver's time at this size (58 unknowns), and the solve runs up to 4 times
    an iteration."""
    n = h.shape[0]
    low = np.zeros((n, n))
    for j in range(n):
        s = h[j, j] + mu * (h[j, j] + 1e-9)
        for k in range(j):
            s -= low[j, k] * low[j, k]
        if not s > 1e-300:
            return np.zeros(n), False
        d = np.sqrt(s)
        low[j, j] = d
        for i in range(j + 1, n):
            s = h[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            low[i, j] = s / d
    y = np.empty(n)
    for i in range(n):
        s = g[i]
        for k in range(i):
            s -= low[i, k] * y[k]
        y[i] = s / low[i, i]
    x = np.empty(n)
    for i in range(n - 1, -1, -1):
        s = y[i]
        for k in range(i + 1, n):
            s -= low[k, i] * x[k]
        x[i] = s / low[i, i]
    if not np.all(np.isfinite(x)):
        return np.zeros(n), False
    return x, True


def initial_pose(obs: np.ndarray, w: np.ndarray, model_points: np.ndarray,
                 camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose from a linear affine-camera fit (no warm start available): rotation and a 3D translation
    whose depth makes the affine scale agree with the focal length."""
    m = w > 0
    x = model_points[m]
    a_rows = np.hstack([x, np.ones((len(x), 1))])
    sol, *_ = np.linalg.lstsq(a_rows * np.sqrt(w[m])[:, None], obs[m, :2] * np.sqrt(w[m])[:, None], rcond=None)
    return affine_pose(sol.T, camera)


def affine_pose(affine: np.ndarray, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and 3D translation of an affine camera (2×4, image px = A·X + t for model points X in
    model axes, cm): the nearest rotation to A's rows, and the depth at which its scale and the focal
    length agree. NaN for a degenerate camera (a row of A near zero)."""
    n0, n1 = np.linalg.norm(affine[0, :3]), np.linalg.norm(affine[1, :3])
    if not min(n0, n1) > 1e-9:
        return np.full((3, 3), np.nan), np.full(3, np.nan)
    s = 0.5 * (n0 + n1)
    r0, r1 = affine[0, :3] / n0, affine[1, :3] / n1
    rb = np.stack([r0, r1, np.cross(r0, r1)])
    u, _, vt = np.linalg.svd(rb)
    rb = u @ vt
    if np.linalg.det(rb) < 0:  # a mirror solution; flip the depth axis
        rb[2] *= -1
    f, cx, cy = camera
    depth = f / s
    return rb @ MODEL_TO_CAMERA, np.array([(affine[0, 3] - cx) * depth / f, (affine[1, 3] - cy) * depth / f, depth])


def camera_for(image_size: tuple[int, int], focal_px: float | None = None) -> np.ndarray:
    """(focal, cx, cy): principal point at the image centre; focal assumed the image width if not given."""
    w, h = image_size
    return np.array([focal_px or float(w), 0.5 * (w - 1), 0.5 * (h - 1)])


class FaceFitter:
    def __init__(self, model: FaceModel | None = None, expr_prior: float = 1e-3, id_prior: float = 3e-4,
                 occluded_weight: float = 0.1, hint_weight: float = HINT_WEIGHT) -> None:
        self.model = model or FaceModel.load()
        self.expr_prior = expr_prior
        self.hint_weight = hint_weight
        self.id_prior = id_prior
        self.occluded_weight = occluded_weight
        self._row_points = self.model.candidates[:, 0]
        self._rigid_rows = np.concatenate([np.zeros(len(LANDMARK_ROWS), bool), np.isin(MESH_FIT_POINTS, DEPTH_POINTS)])
        # Normals gathered once: the fit runs every frame, and its Python side costs as much as a solve.
        self._row_normals = self.model.normals[self._row_points]
        self._row_normals[:JAW_ROWS] = 0.0  # jaw rows sit on the silhouette: never facing away
        self._landmark_normals = self.model.normals[self.model.landmarks]
        self._landmark_normals[:JAW_ROWS] = 0.0

    def warm_up(self) -> None:
        """Run the Numba kernels once on the mean face seen frontally (with depth rows), so that their
        compilation or cache load happens here and not on a track's first frame."""
        camera = camera_for((640, 480))
        points = self.model.mean[self._row_points] @ MODEL_TO_CAMERA.T + np.array([0.0, 0.0, 60.0])
        rows = np.full((len(points), 3), np.nan)
        rows[:, :2] = camera[0] * points[:, :2] / points[:, 2:3] + camera[1:]
        rows[self._rigid_rows, 2] = points[self._rigid_rows, 2] * camera[0] / 60.0
        state = self.fit(rows, camera).state
        self.fit(rows, camera, state=state, expression_hint=np.zeros(len(self.model.names)))

    def neutral_state(self) -> FitState:
        return FitState(rotation=np.eye(3), translation=np.array([0.0, 0.0, 60.0]),
                        expression=np.zeros(len(self.model.names)), identity=np.zeros(IDENTITY_COMPONENTS))

    @staticmethod
    def observations(landmarks: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        """The fit's observation rows from the 68 landmarks and the 468 mesh points: x, y in image
        pixels and, for the mesh rows when the mesh has it, the mesh's relative depth z (NaN otherwise)."""
        mesh = np.asarray(mesh, dtype=np.float64)
        rows = np.full((len(LANDMARK_ROWS) + len(MESH_FIT_POINTS), 3), np.nan)
        rows[:len(LANDMARK_ROWS), :2] = np.asarray(landmarks)[LANDMARK_ROWS, :2]
        rows[len(LANDMARK_ROWS):, :mesh.shape[1]] = mesh[MESH_FIT_POINTS, :3]
        return rows

    def fit(self, observations: np.ndarray, camera: np.ndarray, weights: np.ndarray | None = None,
            state: FitState | None = None, iterations: int = 2,
            expression_hint: np.ndarray | None = None, initial_camera: np.ndarray | None = None) -> FitResult:
        """Fit to the observation rows (see :meth:`observations`), pixels, seen by ``camera``
        (:func:`camera_for`); ``state`` warm-starts from the track's previous frame.

        ``expression_hint`` (52 weights in [0, 1], the refiner's reading of the face's image) pulls
        each expression towards it with ``hint_weight``: the result lies between what the points alone
        give and the hint, nearer the hint the heavier the weight (at HINT_WEIGHT the hint leads, even for
        the jaw, which the points show well).

        Without ``state``, the fit starts from ``initial_camera`` when given and usable: a 2×4 affine
        camera, image px = A·X + t for the model's points X (model axes, cm), such as the refiner's 3D
        branch gives; otherwise from an affine fit to the observations."""
        mdl = self.model
        # Contiguous, as the kernel was compiled for: a strided view would compile another version mid-track.
        given = np.ascontiguousarray(observations, dtype=np.float64)
        w = np.ones(len(given)) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        n_rows = len(self._row_points)
        if given.ndim != 2 or given.shape[0] != n_rows or given.shape[1] < 2 or w.shape != (n_rows,):
            # The kernels have no bounds checks: refuse, never read past.
            raise ValueError(f"fit takes {n_rows} observation rows of x, y (and depth) and one weight per row "
                             f"(FaceFitter.observations), got shapes {given.shape} and {w.shape}")
        n_exp = len(mdl.names)
        if expression_hint is None or self.hint_weight <= 0.0:
            hint, hint_weight = np.zeros(n_exp), 0.0  # weight 0: the prior is the ridge towards 0 alone
        else:
            hint, hint_weight = np.ascontiguousarray(expression_hint, dtype=np.float64), self.hint_weight
            if hint.shape != (n_exp,):
                raise ValueError(f"expression_hint must hold {n_exp} weights, got shape {hint.shape}")
        previous = state or self.neutral_state()
        if state is None:
            start = self._start_pose(given, w, camera, initial_camera)
            if start is None:
                return self._unfit(previous)
            rot, tr = start
            iterations = max(iterations, 12)
        else:
            rot, tr = state.rotation, state.translation
        fit_identity = previous.identity_frames < IDENTITY_FRAMES
        neutral = previous.neutral
        if neutral is None:
            neutral = identity_shape(mdl.mean, mdl.identity_by_point, previous.identity)
        # One call into Numba for the whole fit: from Python, each call costs microseconds when the
        # networks have just run (about 0.025 ms a frame for the five calls this replaced).
        ok, rot, tr, expr, alpha, rms, away = _fit_rows(
            given, w, self._rigid_rows, self._row_normals, self._landmark_normals, state is not None,
            self.occluded_weight, DEPTH_WEIGHT, EYE_ROWS[0], EYE_ROWS[1], mdl.mean, mdl.identity_by_point,
            mdl.expression_by_point, mdl.candidates, mdl.slide, rot, tr, camera, previous.expression,
            previous.identity, neutral, fit_identity, iterations, hint, self.expr_prior, hint_weight, self.id_prior)
        if not ok:
            return self._unfit(previous)
        identity_sum, identity_frames = previous.identity_sum, previous.identity_frames
        if fit_identity:
            identity_sum = identity_sum + alpha
            identity_frames += 1
            alpha = identity_sum / identity_frames
            if identity_frames == IDENTITY_FRAMES:
                neutral = identity_shape(mdl.mean, mdl.identity_by_point, alpha)
        held = neutral if identity_frames >= IDENTITY_FRAMES else None
        new = FitState(rotation=rot, translation=tr, expression=expr, identity=alpha,
                       identity_sum=identity_sum, identity_frames=identity_frames, neutral=held)
        return FitResult(state=new, rms=rms, ok=True, self_occluded=away)

    def _start_pose(self, given: np.ndarray, w: np.ndarray, camera: np.ndarray,
                    initial_camera: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """A track's first pose: from ``initial_camera`` when given and usable, else from an affine fit
        to the usable rows; None when the rows are degenerate."""
        obs, w = _padded_rows(given), w.copy()
        norm, _ = _prepare_rows(obs, w, self._rigid_rows, self._row_normals, np.eye(3), False,
                                self.occluded_weight, DEPTH_WEIGHT, *EYE_ROWS)
        if norm == 0.0:
            return None
        start = None if initial_camera is None else affine_pose(np.asarray(initial_camera, np.float64), camera)
        if start is None or not (np.all(np.isfinite(start[0])) and np.all(np.isfinite(start[1]))):
            start = initial_pose(obs, w, self.model.mean[self._row_points], camera)
        return start

    def _unfit(self, previous: FitState) -> FitResult:
        return FitResult(state=previous, rms=float("inf"), ok=False, self_occluded=np.zeros(68, dtype=bool))


@njit(cache=True, fastmath=True)
def _facing_away(normals, rotation):
    """Which of these model normals point away from the camera (camera z is forward) at ``rotation``."""
    view = np.zeros(3)
    for j in range(3):
        for k in range(3):
            view[j] += rotation[2, k] * MODEL_TO_CAMERA[k, j]
    away = np.empty(normals.shape[0], dtype=np.bool_)
    for i in range(normals.shape[0]):
        away[i] = normals[i, 0] * view[0] + normals[i, 1] * view[1] + normals[i, 2] * view[2] > 0.0
    return away


@njit(cache=True, fastmath=False)
def _fit_rows(given, weights, rigid, row_normals, landmark_normals, warm, down_weight, depth_weight, eye_right,
              eye_left, mean, id_basis, exp_basis, candidates, slide, rot, tr, cam, expr, alpha, neutral, fit_identity,
              iterations, hint, ridge, hint_weight, id_prior):
    """FaceFitter.fit's work between Python's start and its bookkeeping: the rows (_padded_rows,
    _prepare_rows), the expression prior (_hint_prior), the fit (fit_landmarks) and its checks.
    Returns (usable, rot, tr, expr, alpha, residual RMS, landmarks facing away); the inputs back with
    usable False for degenerate rows or an unusable result. fastmath off: it must see NaN."""
    obs = _padded_rows(given)
    w = weights.copy()
    norm, wd = _prepare_rows(obs, w, rigid, row_normals, rot, warm, down_weight, depth_weight, eye_right, eye_left)
    if norm == 0.0:
        return False, rot, tr, expr, alpha, np.inf, np.zeros(landmark_normals.shape[0], np.bool_)
    prior, target = _hint_prior(hint, ridge, hint_weight)
    new_rot, new_tr, new_expr, new_alpha, cost = fit_landmarks(
        obs, w, wd, mean, id_basis, exp_basis, candidates, slide, rot, tr, cam, expr, alpha, neutral, fit_identity,
        iterations, prior, target, id_prior, norm)
    if not _usable_fit(cost, new_rot, new_tr):
        return False, rot, tr, expr, alpha, np.inf, np.zeros(landmark_normals.shape[0], np.bool_)
    rms = np.sqrt(cost / max(w.sum(), 1e-9))
    return True, new_rot, new_tr, new_expr, new_alpha, rms, _facing_away(landmark_normals, new_rot)


@njit(cache=True, fastmath=False)
def _padded_rows(given):
    """The observation rows as N×3 (x, y, depth), NaN where ``given`` has fewer columns."""
    obs = np.full((given.shape[0], 3), np.nan)
    for i in range(given.shape[0]):
        for c in range(min(given.shape[1], 3)):
            obs[i, c] = given[i, c]
    return obs


@njit(cache=True, fastmath=False)
def _prepare_rows(obs, w, rigid, normals, rotation, warm, down_weight, depth_weight, eye_right, eye_left):
    """The fit's row weights: unusable rows zeroed (_usable_input), the depth weights (_depth_weights),
    and with a ``warm`` start the rows facing away at ``rotation`` times ``down_weight``. Returns (scale, depth
    weights); scale 0.0 for degenerate input. fastmath off: it must see NaN."""
    norm = _usable_input(obs, w, eye_right, eye_left)
    if norm == 0.0:
        return 0.0, np.zeros(w.shape[0])
    wd = _depth_weights(obs, w, rigid, depth_weight)
    if warm:
        away = _facing_away(normals, rotation)
        for i in range(w.shape[0]):
            if away[i]:
                w[i] *= down_weight
                wd[i] *= down_weight
    return norm, wd


@njit(cache=True, fastmath=False)
def _depth_weights(obs, w, rigid, depth_weight):
    """Depth weights of the rows (``depth_weight`` · w on rigid rows with a finite depth and some
    weight; none at all when fewer than 3 rows have depth); zeroes the depth of the others in place.
    fastmath off: it must see NaN."""
    wd = np.zeros(w.shape[0])
    count = 0
    for i in range(w.shape[0]):
        if rigid[i] and w[i] > 0.0 and np.isfinite(obs[i, 2]):
            wd[i] = depth_weight * w[i]
            count += 1
        else:
            obs[i, 2] = 0.0
    if count < 3:
        wd[:] = 0.0
    return wd


@njit(cache=True, fastmath=False)
def _hint_prior(hint, ridge, weight):
    """Per-shape prior weight and target of the ridge towards 0 plus the pull towards the hint:
    a·x² + b·(x − h)² = (a + b)·(x − b·h / (a + b))² + const; a NaN hint reads as 0, the rest is
    clipped to [0, 1]. fastmath off: it must see NaN."""
    n = hint.shape[0]
    total = np.full(n, ridge + weight)
    target = np.empty(n)
    for j in range(n):
        h = hint[j]
        if np.isnan(h):
            h = 0.0
        target[j] = weight * min(max(h, 0.0), 1.0) / (ridge + weight)
    return total, target


@njit(cache=True, fastmath=False)
def _usable_fit(cost, rot, tr):
    """A fit's result is usable: all finite, the face in front of the camera. fastmath off: it must see NaN."""
    return np.isfinite(cost) and np.all(np.isfinite(rot)) and np.all(np.isfinite(tr)) and tr[2] > 0.0


def head_pose(state: FitState) -> Pose:
    """Pose record of a fit (translation: the model origin, in mm, camera frame)."""
    yaw, pitch, roll = matrix_to_euler(state.rotation)
    return Pose(yaw=yaw, pitch=pitch, roll=roll, quaternion=matrix_to_quaternion(state.rotation),
                translation_mm=10.0 * state.translation, rotation=state.rotation.copy())  # the fit's own stays its


@njit(cache=True, fastmath=False)
def _usable_input(obs, w, eye_right, eye_left):
    """Zero unusable points' weights (in place) and return the residual scale, or 0.0 if the input is degenerate.

    Degenerate: fewer than 6 usable points, or points (near-)collinear or coincident,
    judged by the eigenvalues of their 2×2 scatter. The scale is the outer-eye-corner
    distance (rows eye_right, eye_left), else the points' RMS spread. fastmath off: it must see NaN.
    """
    n = 0
    mx = my = 0.0
    for i in range(obs.shape[0]):
        if not (np.isfinite(obs[i, 0]) and np.isfinite(obs[i, 1]) and np.isfinite(w[i])) or w[i] <= 0.0:
            w[i] = 0.0
            obs[i, 0] = obs[i, 1] = 0.0
            continue
        n += 1
        mx += obs[i, 0]
        my += obs[i, 1]
    if n < 6:
        return 0.0
    mx /= n
    my /= n
    sxx = syy = sxy = 0.0
    for i in range(obs.shape[0]):
        if w[i] > 0.0:
            dx, dy = obs[i, 0] - mx, obs[i, 1] - my
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
    half_trace, det = 0.5 * (sxx + syy), sxx * syy - sxy * sxy
    root = np.sqrt(max(half_trace * half_trace - det, 0.0))
    largest, smallest = half_trace + root, half_trace - root
    if largest < 1e-12 or smallest < 1e-6 * largest:
        return 0.0
    if w[eye_right] > 0.0 and w[eye_left] > 0.0:
        norm = np.sqrt((obs[eye_right, 0] - obs[eye_left, 0]) ** 2 + (obs[eye_right, 1] - obs[eye_left, 1]) ** 2)
        if norm > 1e-3:
            return norm
    return np.sqrt(largest / n)
