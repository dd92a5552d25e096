"""Fitting the 3D face model to 68 landmarks: head pose, expression and identity.

Camera: weak perspective (scaled orthographic), p = s · (R · B · X)[:2] + t,
with B the model-to-camera axis flip (tracker/pose.py). Why not a pinhole with
a focal length: at webcam distances (≥ 40 cm) the face's depth is a few percent
of its distance, the focal length is unknown and poorly constrained by 68
noisy points, and scale and depth trade off against focal length; weak
perspective keeps 6 well-conditioned pose unknowns and a linear translation.
Depth for ``translation_mm`` then follows from an assumed focal length.

Solver: Levenberg-Marquardt in Numba over a rotation increment (axis-angle,
applied on the left), 2D translation, scale, 52 expression weights bounded to
[0, 1] (active set: weights at a bound pushed outwards are held) with a small
ridge prior, and — for a track's first frames only — identity coefficients
with a ridge prior. Identity is averaged over those frames and then held.
Each iteration the jaw contour landmarks slide to the candidate on the face's
silhouette for the current pose (RDR's sliding contour), so a turned head
does not drag the jaw onto the cheek. Residuals are divided by the observed
inter-ocular distance, so the priors mean the same at every face size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from tracker.backends import ENGINES_DIR, BackendError
from tracker.pose import MODEL_TO_CAMERA, matrix_to_euler, matrix_to_quaternion
from tracker.types import Pose

MODEL_FILE = "face_model.npz"
# Landmarks whose contour candidates slide: the jaw, subject's right (0-7) and left (9-16).
RIGHT_JAW, LEFT_JAW = range(8), range(9, 17)
IDENTITY_COMPONENTS = 40  # the leading ICT identity components; the rest add little at 68 points
IDENTITY_FRAMES = 30  # frames a track spends estimating identity before holding it


@dataclass
class FaceModel:
    """The reduced face model, restricted to the points the fit uses."""

    names: list[str]  # 52 ARKit names
    mean: np.ndarray  # F×3 cm, model axes
    identity: np.ndarray  # K×F×3
    expression: np.ndarray  # 52×F×3
    normals: np.ndarray  # F×3 neutral-face normals
    candidates: np.ndarray  # 68×C indices into the F points (-1 padded); jaw rows list the contour candidates
    slide: np.ndarray  # 68 int8: -1 pick min camera x (subject's right jaw), +1 max x (left jaw), 0 fixed
    eye_distance_cm: float
    mesh468_tris: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> FaceModel:
        path = path or ENGINES_DIR / MODEL_FILE
        if not path.is_file():
            raise BackendError(f"face model {path} is missing; rebuild it with `python tools/build_face_model.py`")
        d = np.load(path)
        lm68, contour = d["lm68"].astype(np.int64), d["contour"].astype(np.int64)
        used = np.unique(np.concatenate([lm68, contour[contour >= 0]]))
        remap = -np.ones(len(d["mean"]), dtype=np.int64)
        remap[used] = np.arange(len(used))
        width = max(1, contour.shape[1])
        candidates = -np.ones((68, width), dtype=np.int64)
        candidates[:, 0] = remap[lm68]
        slide = np.zeros(68, dtype=np.int8)
        for k in [*RIGHT_JAW, *LEFT_JAW]:
            row = contour[k][contour[k] >= 0]
            if len(row):
                candidates[k, : len(row)] = remap[row]
                slide[k] = -1 if k in RIGHT_JAW else 1
        mean = d["mean"][used].astype(np.float64)
        return cls(
            names=[str(n) for n in d["arkit_names"]],
            mean=mean,
            identity=np.ascontiguousarray(d["id_basis"][:IDENTITY_COMPONENTS, used], dtype=np.float64),
            expression=np.ascontiguousarray(d["exp_basis"][:, used], dtype=np.float64),
            normals=_smoothed_normals(d["mean"], d["normals"], used),
            candidates=candidates,
            slide=slide,
            eye_distance_cm=float(np.linalg.norm(mean[remap[lm68[36]]] - mean[remap[lm68[45]]])),
            mesh468_tris=d["mesh468_tris"] if "mesh468_tris" in d.files else None,
        )


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
    scale: float  # pixels per cm
    translation: np.ndarray  # 2, pixels: the image position of the model origin
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
    projected: np.ndarray  # 68×2 model landmarks in the image


@njit(cache=True, fastmath=True)
def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    r = np.eye(3)
    if theta < 1e-12:
        return r
    k = w / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return r + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)


@njit(cache=True, fastmath=True)
def identity_shape(mean, id_basis, alpha):
    """Neutral shape of a person: mean plus identity, at every fitting point."""
    x = mean.copy()
    for k in range(id_basis.shape[0]):
        ak = alpha[k]
        if ak != 0.0:
            for p in range(mean.shape[0]):
                x[p, 0] += ak * id_basis[k, p, 0]
                x[p, 1] += ak * id_basis[k, p, 1]
                x[p, 2] += ak * id_basis[k, p, 2]
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
        for j in range(exp_basis.shape[0]):
            e = expr[j]
            if e != 0.0:
                x0 += e * exp_basis[j, p, 0]
                x1 += e * exp_basis[j, p, 1]
                x2 += e * exp_basis[j, p, 2]
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
def _cost(obs, sw, x, rb, s, t, norm, expr, expr_prior, alpha, id_prior, n_id):
    c = 0.0
    for i in range(obs.shape[0]):
        for a in range(2):
            r = sw[i] * (s * (rb[a, 0] * x[i, 0] + rb[a, 1] * x[i, 1] + rb[a, 2] * x[i, 2]) + t[a] - obs[i, a]) / norm
            c += r * r
    for j in range(expr.shape[0]):
        c += expr_prior * expr[j] * expr[j]
    for k in range(n_id):
        c += id_prior * alpha[k] * alpha[k]
    return c


@njit(cache=True, fastmath=True)
def fit_landmarks(obs, w, mean, id_basis, exp_basis, candidates, slide, rot, s, t, expr, alpha, neutral,
                  fit_identity, iterations, expr_prior, id_prior, norm):
    """Levenberg-Marquardt fit of the model to 2D landmarks; returns (rot, s, t, expr, alpha, cost).

    ``neutral`` is identity_shape(mean, id_basis, alpha), passed in so a held identity is not rebuilt.
    """
    n_pts = obs.shape[0]
    n_exp = exp_basis.shape[0]
    n_id = id_basis.shape[0] if fit_identity else 0
    n_par = 6 + n_exp + n_id
    flip = np.array([1.0, -1.0, -1.0])
    sw = np.sqrt(w)
    rot = rot.copy()
    t = t.copy()
    expr = expr.copy()
    alpha = alpha.copy()
    mu = 1e-3
    rb = rot * flip  # R · B: B flips the model's y and z columns
    chosen = _contour(neutral, rb, candidates, slide)
    x = _landmark_shape(neutral, exp_basis, expr, chosen)
    cost = _cost(obs, sw, x, rb, s, t, norm, expr, expr_prior, alpha, id_prior, n_id)
    jac = np.zeros((2 * n_pts, n_par))
    res = np.zeros(2 * n_pts)
    for _ in range(iterations):
        # Weighted residuals and Jacobian rows; H = JᵀJ and g = Jᵀr go to BLAS.
        for i in range(n_pts):
            # Written out: a 3×3 product per point through BLAS costs more than the arithmetic.
            y = np.empty(3)
            for a in range(3):
                y[a] = rb[a, 0] * x[i, 0] + rb[a, 1] * x[i, 1] + rb[a, 2] * x[i, 2]
            pi = chosen[i]
            f = sw[i] / norm
            for a in range(2):
                row = 2 * i + a
                res[row] = f * (s * y[a] + t[a] - obs[i, a])
                # d(R y)/dω for a left increment is -[y]x: rows 0 and 1 of it.
                if a == 0:
                    jac[row, 0] = 0.0
                    jac[row, 1] = f * s * y[2]
                    jac[row, 2] = -f * s * y[1]
                else:
                    jac[row, 0] = -f * s * y[2]
                    jac[row, 1] = 0.0
                    jac[row, 2] = f * s * y[0]
                jac[row, 3] = f if a == 0 else 0.0
                jac[row, 4] = f if a == 1 else 0.0
                jac[row, 5] = f * y[a]
                fs = f * s
                r0, r1, r2 = fs * rb[a, 0], fs * rb[a, 1], fs * rb[a, 2]
                for j in range(n_exp):
                    jac[row, 6 + j] = r0 * exp_basis[j, pi, 0] + r1 * exp_basis[j, pi, 1] + r2 * exp_basis[j, pi, 2]
                for k in range(n_id):
                    jac[row, 6 + n_exp + k] = r0 * id_basis[k, pi, 0] + r1 * id_basis[k, pi, 1] + r2 * id_basis[k, pi, 2]
        h = jac.T @ jac
        g = jac.T @ res
        for j in range(n_exp):
            h[6 + j, 6 + j] += expr_prior
            g[6 + j] += expr_prior * expr[j]
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
            a_mat = h.copy()
            for u in range(n_par):
                a_mat[u, u] += mu * (h[u, u] + 1e-9)
            step = -np.linalg.solve(a_mat, g)
            new_s = s + step[5]
            if not np.all(np.isfinite(step)) or new_s <= 0.0:
                mu *= 10.0
                continue
            new_rot = _rodrigues(step[0:3]) @ rot
            new_t = t + step[3:5]
            new_expr = np.minimum(np.maximum(expr + step[6:6 + n_exp], 0.0), 1.0)
            new_alpha = alpha.copy()
            for k in range(n_id):
                new_alpha[k] += step[6 + n_exp + k]
            new_neutral = identity_shape(mean, id_basis, new_alpha) if n_id > 0 else neutral
            new_rb = new_rot * flip
            new_chosen = _contour(new_neutral, new_rb, candidates, slide)
            new_x = _landmark_shape(new_neutral, exp_basis, new_expr, new_chosen)
            new_cost = _cost(obs, sw, new_x, new_rb, new_s, new_t, norm, new_expr, expr_prior, new_alpha,
                             id_prior, n_id)
            if new_cost <= cost:
                converged = cost - new_cost < 1e-7 * cost  # no further gain worth an iteration
                rot, t, s, expr, alpha = new_rot, new_t, new_s, new_expr, new_alpha
                neutral, rb, chosen, x, cost = new_neutral, new_rb, new_chosen, new_x, new_cost
                mu = max(mu * 0.3, 1e-7)
                improved = True
                break
            mu *= 10.0
        if not improved or converged:
            break
    # Re-orthonormalise: many small left increments accumulate rounding.
    u_, _, vt = np.linalg.svd(rot)
    rot = u_ @ vt
    return rot, s, t, expr, alpha, cost


def initial_pose(obs: np.ndarray, w: np.ndarray, model_points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Weak-perspective pose from a linear affine-camera fit (no warm start available)."""
    m = w > 0
    x = model_points[m]
    a_rows = np.hstack([x, np.ones((len(x), 1))])
    sol, *_ = np.linalg.lstsq(a_rows * np.sqrt(w[m])[:, None], obs[m] * np.sqrt(w[m])[:, None], rcond=None)
    affine = sol[:3].T  # 2×3: s · (R·B)[:2]
    t = sol[3]
    n0, n1 = np.linalg.norm(affine[0]), np.linalg.norm(affine[1])
    s = 0.5 * (n0 + n1)
    r0, r1 = affine[0] / n0, affine[1] / n1
    rb = np.stack([r0, r1, np.cross(r0, r1)])
    u, _, vt = np.linalg.svd(rb)
    rb = u @ vt
    if np.linalg.det(rb) < 0:  # a mirror solution; flip the depth axis
        rb[2] *= -1
    return rb @ MODEL_TO_CAMERA, float(s), t


class FaceFitter:
    def __init__(self, model: FaceModel | None = None, expr_prior: float = 1e-3, id_prior: float = 3e-4,
                 occluded_weight: float = 0.1) -> None:
        self.model = model or FaceModel.load()
        self.expr_prior = expr_prior
        self.id_prior = id_prior
        self.occluded_weight = occluded_weight
        self._fixed = self.model.candidates[:, 0]

    def neutral_state(self) -> FitState:
        return FitState(rotation=np.eye(3), scale=1.0, translation=np.zeros(2),
                        expression=np.zeros(len(self.model.names)), identity=np.zeros(IDENTITY_COMPONENTS))

    def self_occluded(self, rotation: np.ndarray) -> np.ndarray:
        """Landmarks whose neutral-face normal points away from the camera (camera z is forward)."""
        normals_cam = self.model.normals[self._fixed] @ (rotation @ MODEL_TO_CAMERA).T
        occluded = normals_cam[:, 2] > 0.0
        occluded[self.model.slide != 0] = False  # contour points sit on the silhouette by construction
        return occluded

    def fit(self, landmarks: np.ndarray, weights: np.ndarray | None = None, state: FitState | None = None,
            iterations: int = 2) -> FitResult:
        """Fit to 68×2 landmarks (pixels). ``state`` warm-starts from the track's previous frame."""
        mdl = self.model
        obs = np.array(landmarks, dtype=np.float64)
        w = np.ones(68) if weights is None else np.array(weights, dtype=np.float64)
        previous = state or self.neutral_state()
        norm = _usable_input(obs, w)
        if norm == 0.0:
            return self._unfit(previous)
        fit_identity = previous.identity_frames < IDENTITY_FRAMES
        if state is None:
            base = mdl.mean[self._fixed]
            rot, s, t = initial_pose(obs, w, base)
            iterations = max(iterations, 12)
        else:
            rot, s, t = state.rotation, state.scale, state.translation
            w = w * np.where(self.self_occluded(rot), self.occluded_weight, 1.0)
        neutral = previous.neutral
        if neutral is None:
            neutral = identity_shape(mdl.mean, mdl.identity, previous.identity)
        rot, s, t, expr, alpha, cost = fit_landmarks(
            obs, w, mdl.mean, mdl.identity, mdl.expression, mdl.candidates, mdl.slide, rot, s, t,
            previous.expression, previous.identity, neutral, fit_identity, iterations, self.expr_prior,
            self.id_prior, norm)
        if not (np.isfinite(cost) and np.all(np.isfinite(rot)) and s > 0):
            return self._unfit(previous)
        identity_sum, identity_frames = previous.identity_sum, previous.identity_frames
        if fit_identity:
            identity_sum = identity_sum + alpha
            identity_frames += 1
            alpha = identity_sum / identity_frames
            if identity_frames == IDENTITY_FRAMES:
                neutral = identity_shape(mdl.mean, mdl.identity, alpha)
        held = neutral if identity_frames >= IDENTITY_FRAMES else None
        new = FitState(rotation=rot, scale=float(s), translation=t, expression=expr, identity=alpha,
                       identity_sum=identity_sum, identity_frames=identity_frames, neutral=held)
        return FitResult(state=new, rms=float(np.sqrt(cost / max(w.sum(), 1e-9))), ok=True,
                         self_occluded=self.self_occluded(rot), projected=self.project(new))

    def project(self, state: FitState) -> np.ndarray:
        """The model's 68 landmarks (fixed, not slid) in the image under ``state``."""
        mdl = self.model
        neutral = state.neutral
        if neutral is None:
            neutral = identity_shape(mdl.mean, mdl.identity, state.identity)
        shape = _landmark_shape(neutral, mdl.expression, state.expression, self._fixed)
        return state.scale * (shape @ (state.rotation @ MODEL_TO_CAMERA).T)[:, :2] + state.translation

    def _unfit(self, previous: FitState) -> FitResult:
        return FitResult(state=previous, rms=float("inf"), ok=False, self_occluded=np.zeros(68, dtype=bool),
                         projected=self.project(previous))


def head_pose(state: FitState, image_size: tuple[int, int], focal_px: float | None = None) -> Pose:
    """Pose record of a fit; depth from ``focal_px`` (default: the image width, a ~53° field of view)."""
    w, h = image_size
    f = focal_px or float(w)
    yaw, pitch, roll = matrix_to_euler(state.rotation)
    # Weak perspective: s = f / depth (pixels per cm), so depth = f / s cm, and x = (u - cx) · depth / f.
    depth_mm = 10.0 * f / state.scale
    tx = (state.translation[0] - 0.5 * (w - 1)) * 10.0 / state.scale
    ty = (state.translation[1] - 0.5 * (h - 1)) * 10.0 / state.scale
    return Pose(yaw=yaw, pitch=pitch, roll=roll, quaternion=matrix_to_quaternion(state.rotation),
                translation_mm=np.array([tx, ty, depth_mm]), rotation=state.rotation)


@njit(cache=True, fastmath=False)
def _usable_input(obs, w):
    """Zero unusable points' weights (in place) and return the residual scale, or 0.0 if the input is degenerate.

    Degenerate: fewer than 6 usable points, or points (near-)collinear or coincident,
    judged by the eigenvalues of their 2×2 scatter. The scale is the outer-eye-corner
    distance, else half the points' extent. fastmath off: it must see NaN.
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
    if w[36] > 0.0 and w[45] > 0.0:
        norm = np.sqrt((obs[36, 0] - obs[45, 0]) ** 2 + (obs[36, 1] - obs[45, 1]) ** 2)
        if norm > 1e-3:
            return norm
    return np.sqrt(largest / n)
