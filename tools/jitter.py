#!/usr/bin/env python3
"""Jitter and lag of our landmarks, raw and smoothed, beside MediaPipe FaceMesh's on the same frames.

Each clip is decoded once; our tracker (ONNX Runtime, one face) and MediaPipe
FaceMesh (tracking mode, one face, refine_landmarks=True: our mesh network) run on every frame. Our
raw tracks are then smoothed offline with tracker.smoothing.FaceSmoother, one
per track id, exactly as the pipeline calls it (media time, inter-ocular scale).

Jitter: mean over frames and points of the frame-to-frame acceleration
||x[t+1] - 2 x[t] + x[t-1]||, each divided by that frame's inter-ocular
distance (68 points: 36-45 of our raw landmarks, the same normaliser for raw
and smoothed; 468-point meshes: mesh points 33-263 of that mesh). Only triples
of consecutive frames of one track count.

Lag (the issue's "cross-correlation delay of the smoothed vs the raw track",
read literally: ONE cross-correlation per track segment): for each segment
(consecutive frames of one track id, >= 40 frames), every coordinate's raw and
smoothed tracks are differenced (velocities: this detrends the slow head drift)
and band-limited by the same zero-phase Gaussian (sigma 3 frames), means
removed; their cross-correlation functions are summed over all coordinates,
and the peak of that one function, sub-frame by a parabola through it, is the
segment's lag. Every lag is scored on the same frames (a fixed window), so
lags near 0 get no more products than others. Reported: the frame-weighted
mean of segment lags (per clip, and over all clips). Why velocities: position
tracks of a drifting head have a broad, flat correlation peak whose parabolic
fit wanders (on synthetic random-walk tracks, detrended positions read a
1-frame delay as 0.2-0.8 frames); raw velocities carry the tracker's white
noise, which pins the peak near 0 whatever the filter does, hence the common
Gaussian, which leaves the relative delay untouched. tests/test_smoothing.py
checks that delays of 0, 1 and 2.5 frames of such tracks read within 0.15.
A filter is not a pure delay: on an exponential filter with group delay 1
frame this estimator reads ~0.9 frames.

Secondary: the median over all coordinates (and segments) of each
coordinate's own peak, which counts a barely-moving coordinate like a moving
one.

A bound for the landmark target: causal linear (FIR) filters least-squares designed
on the clips' own raw tracks (design_linear_filter), the best one with lag <= 1
frame reported beside ours: what any linear filter of that history could remove.

How much of the raw jitter is the image's own motion: pyramidal Lucas-Kanade
optical flow carries each raw landmark of frame t-1 to frame t (image_flow), an independent
measurement of the same motion that shares none of the network's noise. The
share is the cross-energy of the two accelerations over the landmarks' own
(image_motion_share): 1 when the raw jitter is all motion the image shows
(camera shake, a jerky frame rate), 0 when it is all the network's noise. Only
the rest is noise a filter may remove without leaving the image behind.

Results go to BENCHMARKS.md (section "smoothing") unless --no-write. --grid
also scores a small grid of parameters per part (how the defaults were
chosen). About a minute for the 13 default clips on 2 cores, no frame cap
(--grid adds a few minutes).

    python tools/jitter.py
    python tools/jitter.py --clips ../shared/data/video/talking_d3.mp4 --max-frames 200 --no-write
    python tools/jitter.py --grid --no-write --cache /tmp/jitter_tracks.npz
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from landmark_data import SHARED_DATA
from report import file_to_write, import_mediapipe, positive_int, publish

from tracker.gaze import LOOK_NAMES, look_weights, smooth_gaze
from tracker.smoothing import (
    EXPRESSION_PARAMS,
    LANDMARK_PARAMS,
    ROTATION_PARAMS,
    STEADY_PARAMS,
    TRANSLATION_PARAMS,
    FaceSmoother,
    OneEuroParams,
)
from tracker.types import ARKIT_BLENDSHAPES, Gaze

EYES68 = (36, 45)  # outer eye corners, iBUG 68
EYES468 = (33, 263)  # outer eye corners, MediaPipe mesh
DEFAULT_CLIPS = sorted((SHARED_DATA / "video").glob("talking_*.mp4"))
# Zero-phase band limit (frames) applied to both velocity tracks before correlating: on synthetic
# tracks (smooth motion + white noise through a known exponential filter) sigma 3 recovers the
# filter's true delay within ~15%, where sigma 1.5 reads 25-40% low once noise is present.
LAG_SIGMA = 3.0
MAX_LAG = 10  # frames searched either side
STATIC_SIGMA = 0.01  # IOD: the still-point noise of tests/test_smoothing.py
# Lucas-Kanade settings of image_flow: a 21-px window on a 4-level pyramid follows a face moving tens of
# pixels a frame at 512 px; 20 iterations or 0.01 px.
FLOW_LK = {"winSize": (21, 21), "maxLevel": 3,
           "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)}
DEFAULTS = {"landmarks": LANDMARK_PARAMS, "rotation": ROTATION_PARAMS, "translation": TRANSLATION_PARAMS,
            "expression": EXPRESSION_PARAMS}
PARAM_NAMES = {"landmarks": "landmark_params", "rotation": "rotation_params", "translation": "translation_params",
               "expression": "expression_params"}
# Per part, blocks of (min_cutoff Hz values, beta values, d_cutoff Hz values, order); beta in Hz per (unit/s):
# IOD, radians (rotation), mm, weight. A second-order filter (two low-passes in cascade) lags a ramp by
# 2(1 - a)/a frames at factor a, so it needs about twice the cutoff of a first-order one for the same lag.
GRID = {
    "landmarks": (((0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0), (2.0, 5.0, 10.0, 20.0), (0.5, 1.0), 1),
                  ((10.0, 11.0, 12.0, 13.0, 14.0), (0.0, 2.0, 3.0, 5.0, 7.0, 10.0, 12.0, 15.0), (0.5,), 2)),
    "rotation": (((0.5, 1.0, 2.0, 3.0, 5.0), (2.0, 5.0, 10.0, 20.0), (0.5, 1.0), 1),
                 ((6.0, 7.0, 8.0, 9.0, 10.0), (0.0, 2.0, 5.0, 10.0), (0.5,), 2)),
    "translation": (((0.5, 1.0, 2.0, 3.0, 5.0), (0.02, 0.05, 0.1, 0.2), (0.5, 1.0), 1),
                    ((8.0, 9.0, 10.0, 11.0, 12.0), (0.0, 0.01, 0.02, 0.05), (0.5,), 2)),
    "expression": (((0.5, 1.0, 2.0, 3.0), (2.0, 5.0, 10.0), (0.5, 1.0, 2.0, 3.0), 1),),
}
# The grid's best keeps this much pooled lag at most: a margin under the 1 frame, since a change
# anywhere upstream (a retrained network) moves the raw tracks and with them the lag by a few hundredths.
LAG_LIMIT = 0.95
# Landmark settings shown beside the defaults in the report: what more jitter removal costs in lag.
# The first row is the first-order default before the second-order one; the last is the most any setting
# of the grid removes within 1 frame (it lags fast motion: tracker/smoothing.py).
TRADE_OFF = (OneEuroParams(5.0, 5.0, 0.5), OneEuroParams(0.5, 5.0, 1.0), OneEuroParams(3.0, 5.0, 0.25),
             OneEuroParams(12.0, 0.0, 0.5, 2))


def describe(p: OneEuroParams, unit: str = "") -> str:
    """'12 Hz, 1 per IOD/s, 1 Hz, second order' style label of a filter setting."""
    beta = f"{p.beta:g} per {unit}" if unit else f"{p.beta:g}"
    return f"{p.min_cutoff:g} Hz, {beta}, {p.d_cutoff:g} Hz" + (", second order" if p.order == 2 else "")


@dataclass
class Clip:
    """Raw per-frame tracks of one clip; NaN where there is no face."""

    name: str
    fps: float
    time: np.ndarray  # N media seconds
    track: np.ndarray  # N int: our track id, -1 when no face
    lm: np.ndarray  # N×68×2 our raw landmarks (px)
    mesh: np.ndarray  # N×468×2 our raw mesh (px)
    quat: np.ndarray  # N×4 [w, x, y, z]
    trans: np.ndarray  # N×3 mm
    expr: np.ndarray  # N×52
    mp_mesh: np.ndarray  # N×468×2 MediaPipe mesh (px)
    conf: np.ndarray  # N×68 our landmark confidence (NaN where the tracker gives none)
    gaze: np.ndarray  # N×2 our raw gaze, degrees (NaN before the eyes are read)
    flow: np.ndarray | None = None  # N×68×2 px: image_flow of the raw landmarks into each frame (None: not measured)


def read_frames(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, float(fps)


def track_clip(path: Path, max_frames: int | None, bar: tqdm) -> Clip:
    import mediapipe as mp

    from tracker.pipeline import FaceTracker, TrackerConfig

    frames, fps = read_frames(path, max_frames)
    n = len(frames)
    nan = np.nan
    clip = Clip(path.name, fps, np.arange(n) / fps, -np.ones(n, dtype=np.int64), np.full((n, 68, 2), nan),
                np.full((n, 468, 2), nan), np.full((n, 4), nan), np.full((n, 3), nan), np.full((n, 52), nan),
                np.full((n, 468, 2), nan), np.full((n, 68), nan), np.full((n, 2), nan))
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1, smooth=False))
    mp_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    for i, image in enumerate(frames):
        result = tracker.process(image, i, float(clip.time[i]), str(path))
        if result.faces:
            face = result.faces[0]
            clip.track[i] = face.id
            clip.lm[i] = face.landmarks
            clip.mesh[i] = face.mesh.points[:, :2]
            if face.landmark_confidence is not None:
                clip.conf[i] = face.landmark_confidence
            if face.pose is not None:
                clip.quat[i] = face.pose.quaternion
                clip.trans[i] = face.pose.translation_mm
            if face.blendshapes is not None:
                clip.expr[i] = [face.blendshapes[name] for name in ARKIT_BLENDSHAPES]
            if face.gaze is not None:
                clip.gaze[i] = (face.gaze.yaw, face.gaze.pitch)
        res = mp_mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if res.multi_face_landmarks:
            h, w = image.shape[:2]
            pts = res.multi_face_landmarks[0].landmark
            clip.mp_mesh[i] = [(p.x * w, p.y * h) for p in pts[:468]]  # the irises follow
        bar.update(1)
    mp_mesh.close()
    clip.flow = image_flow(frames, clip)
    return clip


def image_flow(frames: list[np.ndarray], clip: Clip) -> np.ndarray:
    """Where the image itself carries each raw landmark: Lucas-Kanade optical flow of frame t−1's raw landmarks
    from frame t−1 to frame t, N×68×2 px; NaN at a track's first frame and where the flow loses a point. A point
    counts whenever the flow reports it found (no error threshold or forward-backward check): a jaw point's
    window also takes in the background, so its flow is the noisiest."""
    flow = np.full(clip.lm.shape, np.nan)
    previous = None
    for t, image in enumerate(frames):
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if (t and clip.track[t] >= 0 and clip.track[t] == clip.track[t - 1] and np.isfinite(clip.lm[t - 1]).all()):
            start = clip.lm[t - 1].astype(np.float32).reshape(-1, 1, 2)
            end, found, _ = cv2.calcOpticalFlowPyrLK(previous, grey, start, None, **FLOW_LK)
            step = (end - start).reshape(-1, 2).astype(np.float64)
            step[found.ravel() == 0] = np.nan
            flow[t] = step
        previous = grey
    return flow


def image_motion_share(clip: Clip) -> tuple[float, float]:
    """(Σ a·f, Σ |a|²) over the clip's usable triples and points: a the raw landmarks' acceleration, f the
    image flow's (image_flow's step into t+1 less its step into t), both over the IOD. Their ratio is the
    share of the raw acceleration's energy that the image's motion accounts for: noise in either one, being
    independent of the other's, drops out of the cross term."""
    if clip.flow is None:
        return 0.0, 0.0
    scale = iod(clip.lm, EYES68)
    ok = np.isfinite(clip.lm).all(axis=(1, 2)) & np.isfinite(scale) & (scale > 0)
    t = valid_triples(clip.track, ok)
    accel = (clip.lm[t + 1] - 2 * clip.lm[t] + clip.lm[t - 1]) / scale[t, None, None]
    flow_accel = (clip.flow[t + 1] - clip.flow[t]) / scale[t, None, None]
    seen = np.isfinite(flow_accel).all(axis=-1)
    return float((accel * flow_accel).sum(axis=-1)[seen].sum()), float((accel**2).sum(axis=-1)[seen].sum())


def smooth_clip(clip: Clip, params: dict[str, OneEuroParams] | None = None) -> tuple[np.ndarray, ...]:
    """Our tracks through FaceSmoother, one per track id, frames in order (as the pipeline runs it).

    ``params`` overrides the defaults of some parts ("landmarks", "rotation", "translation", "expression").
    """
    lm, quat, trans, expr = (np.full_like(a, np.nan) for a in (clip.lm, clip.quat, clip.trans, clip.expr))
    kwargs = {PARAM_NAMES[part]: value for part, value in (params or {}).items()}
    smoother, current = None, -1
    for i in np.flatnonzero(clip.track >= 0):
        if clip.track[i] != current:
            smoother, current = FaceSmoother(**kwargs), clip.track[i]
        scale = float(np.linalg.norm(clip.lm[i, EYES68[1]] - clip.lm[i, EYES68[0]]))
        has_pose = bool(np.isfinite(clip.quat[i]).all())
        # The same call as tracker.pipeline._smooth.
        out = smoother(float(clip.time[i]), clip.lm[i], scale, clip.quat[i] if has_pose else None,
                       clip.trans[i] if has_pose else None,
                       clip.expr[i] if np.isfinite(clip.expr[i]).all() else None,
                       clip.conf[i] if np.isfinite(clip.conf[i]).all() else None)
        for dst, value in zip((lm, quat, trans, expr), out):
            if value is not None:
                dst[i] = value
        if np.isfinite(clip.expr[i]).all():
            # As tracker.pipeline._smooth: the eyeLook weights are made from the gaze smoothed on its own.
            raw = Gaze(*clip.gaze[i]) if np.isfinite(clip.gaze[i]).all() else None
            gaze = smooth_gaze(smoother, float(clip.time[i]), raw)
            looks = look_weights(gaze)
            expr[i, GAZE_COLUMNS] = [looks[name] for name in np.array(ARKIT_BLENDSHAPES)[GAZE_COLUMNS]]
    return lm, quat, trans, expr


def valid_triples(track: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Indices t (middle frames) where t-1, t, t+1 are all usable and of one track."""
    t = np.arange(1, len(track) - 1)
    same = (track[t - 1] == track[t]) & (track[t + 1] == track[t]) & (track[t] >= 0)
    return t[same & ok[t - 1] & ok[t] & ok[t + 1]]


def jitter(points: np.ndarray, scale: np.ndarray, track: np.ndarray) -> tuple[float, int]:
    """Sum over valid triples of the mean per-point acceleration / scale, and the triple count.

    points: N×P×D (P points of D coordinates); scale: N (the normaliser of each frame).
    """
    ok = np.isfinite(points).all(axis=(1, 2)) & np.isfinite(scale) & (scale > 0)
    t = valid_triples(track, ok)
    if len(t) == 0:
        return 0.0, 0
    acc = np.linalg.norm(points[t + 1] - 2 * points[t] + points[t - 1], axis=-1).mean(axis=1) / scale[t]
    return float(acc.sum()), len(t)


def segments(track: np.ndarray, ok: np.ndarray, min_len: int) -> list[np.ndarray]:
    """Runs of consecutive usable frames of one track, at least min_len long."""
    runs, start = [], None
    for i in range(len(track) + 1):
        good = i < len(track) and ok[i] and track[i] >= 0 and (start is None or track[i] == track[start])
        if good and start is None:
            start = i
        elif not good and start is not None:
            if i - start >= min_len:
                runs.append(np.arange(start, i))
            start = i if i < len(track) and ok[i] and track[i] >= 0 else None
    return runs


def _gaussian_zero_phase(x: np.ndarray, sigma: float) -> np.ndarray:
    """Centred (zero-phase) Gaussian smoothing along axis 0 of an N×K array."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(r, r), (0, 0)], mode="edge")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def cross_correlation(raw: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """(2·MAX_LAG+1)×K: cc[k] = sum over t of raw[t] · smooth[t + k], per column, means removed.

    Positive k: the smoothed track is late. The sum runs over the same frames t (MAX_LAG from
    either end) for every k, so every lag is scored on as many products: summing over the whole
    overlap instead gives lags near 0 more terms and, on drifting tracks, pulls the peak towards 0
    (a 1-frame delay of a random walk then reads 0.2-0.8 frames).
    """
    raw = raw - raw.mean(0)
    smooth = smooth - smooth.mean(0)
    n = len(raw)
    if n <= 2 * MAX_LAG:
        raise ValueError(f"cross_correlation needs more than {2 * MAX_LAG} frames, got {n}")
    window = raw[MAX_LAG:n - MAX_LAG]
    return np.stack([(window * smooth[MAX_LAG + k:n - MAX_LAG + k]).sum(0) for k in range(-MAX_LAG, MAX_LAG + 1)])


def peak(cc: np.ndarray) -> np.ndarray:
    """Per column of a cross-correlation: the lag (frames) of its maximum, sub-frame by a parabola."""
    lags = np.arange(-MAX_LAG, MAX_LAG + 1)
    best = np.clip(cc.argmax(0), 1, len(lags) - 2)
    cols = np.arange(cc.shape[1])
    y0, y1, y2 = cc[best - 1, cols], cc[best, cols], cc[best + 1, cols]
    curvature = y0 - 2 * y1 + y2
    frac = np.where(curvature < 0, 0.5 * (y0 - y2) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return lags[best] + np.clip(frac, -0.5, 0.5)


def segment_lag(raw: np.ndarray, smooth: np.ndarray, sigma: float = LAG_SIGMA) -> tuple[float, np.ndarray]:
    """Delay (frames) of ``smooth`` behind ``raw``, two N×K tracks of one segment (K coordinates).

    Both tracks are differenced (velocities: this removes the drift) and band-limited by the same
    zero-phase Gaussian; the per-coordinate cross-correlations are summed into ONE function, whose
    peak (parabolic sub-frame interpolation) is the segment's lag. Also returns each coordinate's
    own peak (coordinates that never move are left out).
    """
    r = _gaussian_zero_phase(np.diff(raw, axis=0), sigma)
    s = _gaussian_zero_phase(np.diff(smooth, axis=0), sigma)
    cc = cross_correlation(r, s)
    moving = (r.std(0) > 0) & (s.std(0) > 0)  # a coordinate that never moves has no lag to measure
    pooled = float(peak(cc[:, moving].sum(1)[:, None])[0]) if moving.any() else float("nan")
    return pooled, peak(cc[:, moving])


def lags(track: np.ndarray, raw: np.ndarray, smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track segment (≥ 4·MAX_LAG usable frames) of N×P×D tracks: (pooled lag, frames), and all
    per-coordinate lags. Segments are cut where the track id changes or a frame is missing."""
    ok = np.isfinite(raw).all(axis=(1, 2)) & np.isfinite(smooth).all(axis=(1, 2))
    pooled, weights, per = [], [], [np.zeros(0)]
    for seg in segments(track, ok, min_len=4 * MAX_LAG):
        lag, coords = segment_lag(raw[seg].reshape(len(seg), -1), smooth[seg].reshape(len(seg), -1))
        if np.isfinite(lag):
            pooled.append(lag)
            weights.append(len(seg))
        per.append(coords)
    return np.array(pooled), np.array(weights, dtype=np.float64), np.concatenate(per)


def iod(points: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    return np.linalg.norm(points[:, pair[1]] - points[:, pair[0]], axis=-1)


def rotvec_deg(quat: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """N×4 [w, x, y, z] → N×1×3 rotation vectors (degrees) of ref⁻¹·q, NaN rows kept.

    Relative to a reference orientation of the clip, so the vectors stay far from the ±180° wrap
    whatever the camera convention; q and −q give the same vector.
    """
    out = np.full((len(quat), 1, 3), np.nan)
    ok = np.isfinite(quat).all(axis=1)
    if ok.any():
        from scipy.spatial.transform import Rotation

        def rot(q: np.ndarray) -> Rotation:
            return Rotation.from_quat(np.c_[q[:, 1:], q[:, :1]])

        out[ok, 0] = np.degrees((rot(ref[None]).inv() * rot(quat[ok])).as_rotvec())
    return out


# Each part: its raw and smoothed tracks as N×P×D, the per-frame normaliser, and its unit.
# "expression" and "gaze" are the same filter's output: the 44 weights the 3D fit reads, and the 8 eyeLook
# weights read from the irises, whose saccades are real and fast motion.
PART_UNITS = {"landmarks": "IOD", "rotation": "deg", "expression": "weight", "gaze": "weight", "translation": "mm"}
BETA_UNITS = {"landmarks": "IOD/s", "rotation": "rad/s", "expression": "weight/s", "gaze": "weight/s",
              "translation": "mm/s"}
PART_INDEX = {"landmarks": 0, "rotation": 1, "translation": 2, "expression": 3, "gaze": 3}
GAZE_COLUMNS = np.isin(ARKIT_BLENDSHAPES, LOOK_NAMES)
PART_FILTER = {"gaze": "expression"}  # the parts without a filter of their own


def part_tracks(clip: Clip, smoothed: tuple[np.ndarray, ...], part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = smoothed[PART_INDEX[part]]
    n = len(clip.time)
    if part == "landmarks":
        return clip.lm, out, iod(clip.lm, EYES68)  # the raw IOD for both, so only the points differ
    if part == "rotation":
        finite = np.isfinite(clip.quat).all(axis=1)
        ref = clip.quat[np.argmax(finite)] if finite.any() else np.array([1.0, 0, 0, 0])
        return rotvec_deg(clip.quat, ref), rotvec_deg(out, ref), np.ones(n)
    if part == "translation":
        return clip.trans[:, None, :], out[:, None, :], np.ones(n)
    columns = GAZE_COLUMNS if part == "gaze" else ~GAZE_COLUMNS
    return clip.expr[:, columns, None], out[:, columns, None], np.ones(n)


@dataclass
class Score:
    raw: float  # mean acceleration per point, part units
    smooth: float
    lag: float  # frames: per segment, the peak of the cross-correlation pooled over coordinates; frame-weighted mean
    lag_median: float  # frames: median over coordinates (and segments) of each one's own peak
    lag_frames: float  # frames in the segments the lag was measured on

    @property
    def reduction(self) -> float:
        return 100 * (1 - self.smooth / self.raw) if self.raw > 0 else float("nan")


def score(clips: list[Clip], smoothed: list[tuple[np.ndarray, ...]], part: str = "landmarks") -> Score:
    """Pooled over clips: jitter sums and triple counts add up; segment lags average weighted by frames."""
    tot = np.zeros(3)
    seg_lags, seg_frames, per = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
    for clip, sm in zip(clips, smoothed):
        raw, smooth, scale = part_tracks(clip, sm, part)
        raw_sum, count = jitter(raw, scale, clip.track)
        smooth_sum, _ = jitter(smooth, scale, clip.track)
        tot += (raw_sum, smooth_sum, count)
        pooled, weights, coords = lags(clip.track, raw, smooth)
        seg_lags.append(pooled)
        seg_frames.append(weights)
        per.append(coords)
    lag, w, p = np.concatenate(seg_lags), np.concatenate(seg_frames), np.concatenate(per)
    return Score(tot[0] / max(tot[2], 1), tot[1] / max(tot[2], 1),
                 float(np.average(lag, weights=w)) if w.sum() > 0 else float("nan"),
                 float(np.median(p)) if len(p) else float("nan"), float(w.sum()))


def save_cache(path: Path, clips: list[Clip]) -> None:
    data = {}
    for k, c in enumerate(clips):
        for f in Clip.__dataclass_fields__:
            if getattr(c, f) is not None:
                data[f"{k}/{f}"] = np.asarray(getattr(c, f))
    np.savez_compressed(path, **data)


def load_cache(path: Path) -> list[Clip]:
    d = np.load(path)
    count = 1 + max(int(key.split("/")[0]) for key in d.files)
    clips = []
    for k in range(count):
        fields = {f: d[f"{k}/{f}"] for f in Clip.__dataclass_fields__ if f"{k}/{f}" in d.files}
        fields.setdefault("conf", np.full(fields["lm"].shape[:2], np.nan))  # caches from before confidence
        fields.setdefault("gaze", np.full((len(fields["time"]), 2), np.nan))  # caches from before the gaze
        fields["name"], fields["fps"] = str(fields["name"]), float(fields["fps"])
        clips.append(Clip(**fields))
    return clips


def oracle_reduction(clips: list[Clip], sigma: float) -> float:
    """Landmark jitter removed (%) by a non-causal zero-phase Gaussian: what real motion leaves to take."""
    tot = np.zeros(2)
    for clip in clips:
        ok = np.isfinite(clip.lm).all(axis=(1, 2))
        ref = np.full_like(clip.lm, np.nan)
        for seg in segments(clip.track, ok, 1):
            ref[seg] = _gaussian_zero_phase(clip.lm[seg].reshape(len(seg), -1), sigma).reshape(len(seg), 68, 2)
        scale = iod(clip.lm, EYES68)
        tot += (jitter(clip.lm, scale, clip.track)[0], jitter(ref, scale, clip.track)[0])
    return 100 * (1 - tot[1] / tot[0])


LINEAR_TAPS = 12  # frames of history of the linear filters in linear_bound (more changed nothing)
LINEAR_DELAYS = (0.3, 0.6, 0.9)  # frames: target delays of the band-limited velocity match
LINEAR_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # weight of that match against the acceleration, in trace units


def _delayed(x: np.ndarray, k: int) -> np.ndarray:
    """x[t - k] along axis 0, the first row repeated before the start."""
    return x if k == 0 else np.concatenate([np.repeat(x[:1], k, axis=0), x[:len(x) - k]])


def linear_filter(clip: Clip, h: np.ndarray) -> np.ndarray:
    """Our landmarks through the causal FIR filter ``h`` (h[k] weighs frame t - k), per track segment."""
    out = np.full_like(clip.lm, np.nan)
    for seg in segments(clip.track, np.isfinite(clip.lm).all(axis=(1, 2)), 1):
        x = clip.lm[seg]
        out[seg] = sum(hk * _delayed(x, k) for k, hk in enumerate(h))
    return out


def design_linear_filter(clips: list[Clip], taps: int = LINEAR_TAPS) -> list[np.ndarray]:
    """Causal FIR landmark filters fitted to these tracks, one per (delay, weight) of the grid above.

    Each minimises, over the IOD-normalised landmark tracks, the mean squared acceleration of the
    output plus weight × the squared mismatch between the output's velocity and the raw velocity
    delayed by ``delay`` frames, both band-limited as the lag measure does; subject to sum(h) = 1
    (a still face stays where it is). A quadratic problem: one linear solve per filter.
    """
    acc, vel, cross = np.zeros((taps, taps)), np.zeros((taps, taps)), np.zeros((taps + 2, taps))
    for clip in clips:
        ok = np.isfinite(clip.lm).all(axis=(1, 2))
        scale = iod(clip.lm, EYES68)
        for seg in segments(clip.track, ok, 4 * MAX_LAG):
            x = (clip.lm[seg] / np.median(scale[seg])).reshape(len(seg), -1)
            a = x[2:] - 2 * x[1:-1] + x[:-2]  # the acceleration of a filtered track is the filtered acceleration
            rows = np.stack([_delayed(a, k) for k in range(taps)], -1)[taps:].reshape(-1, taps)
            acc += rows.T @ rows
            v = _gaussian_zero_phase(np.diff(x, axis=0), LAG_SIGMA)
            rows = np.stack([_delayed(v, k) for k in range(taps + 2)], -1)[taps:].reshape(-1, taps + 2)
            vel += rows[:, :taps].T @ rows[:, :taps]
            cross += rows.T @ rows[:, :taps]
    unit = np.trace(acc) / np.trace(vel)
    ones = np.ones(taps)
    filters = []
    for delay in LINEAR_DELAYS:
        k, f = int(delay), delay - int(delay)
        target = (1 - f) * cross[k] + f * cross[k + 1]
        for weight in LINEAR_WEIGHTS:
            w = weight * unit
            inv = np.linalg.inv(acc + w * vel)
            h0 = inv @ (w * target)  # the unconstrained minimum, then the sum(h) = 1 correction
            filters.append(h0 + inv @ ones * (1.0 - ones @ h0) / (ones @ inv @ ones))
    return filters


def linear_bound(clips: list[Clip]) -> tuple[Score | None, int]:
    """The most landmark jitter a causal linear filter removes with pooled lag ≤ 1 frame, among filters
    designed on these very tracks (design_linear_filter): an optimistic bound, as it is scored on what
    it was fitted to. Returns its score (None if no design kept the lag within 1 frame) and the count."""
    designs = design_linear_filter(clips)
    scores = [score(clips, [(linear_filter(c, h), None, None, None) for c in clips]) for h in designs]
    fit = [s for s in scores if s.lag <= 1.0]
    return (max(fit, key=lambda s: s.reduction) if fit else None), len(designs)


def static_ratio(params: OneEuroParams, sigma: float = STATIC_SIGMA, frames: int = 300) -> float:
    """Output std / input std for still points with white noise of ``sigma`` (IOD), after 1 s to settle."""
    rng = np.random.default_rng(0)
    x = sigma * rng.standard_normal((frames, 200, 2))
    smoother = FaceSmoother(landmark_params=params)
    y = np.stack([smoother(i / 30.0, x[i], 1.0)[0] for i in range(frames)])
    return float(y[30:].std() / x[30:].std())


def run_grid(clips: list[Clip]) -> tuple[list[str], dict[str, OneEuroParams]]:
    """Score each part's grid with the other parts at their defaults.

    Best = the largest jitter reduction with lag ≤ LAG_LIMIT. Returns table rows and the best per part.
    """
    rows, best = [], {}
    combos = [(part, OneEuroParams(m, b, d, order)) for part, blocks in GRID.items()
              for cutoffs, betas, dcs, order in blocks for m in cutoffs for b in betas for d in dcs]
    results: dict[str, list[tuple[OneEuroParams, Score, float]]] = {part: [] for part in GRID}
    for part, params in tqdm(combos, desc="grid", unit="set"):
        sc = score(clips, [smooth_clip(c, {part: params}) for c in clips], part)
        results[part].append((params, sc, static_ratio(params) if part == "landmarks" else float("nan")))
    for part, res in results.items():
        still = part == "landmarks"
        rows += ["", f"{part} (beta in Hz per {BETA_UNITS[part]}):", "",
                 "| min_cutoff Hz | beta | d_cutoff Hz | order | jitter reduction | lag (pooled) "
                 "| lag (median per coordinate) |" + (" still-point noise left |" if still else ""),
                 "|---|---|---|---|---|---|---|" + ("---|" if still else "")]
        for pr, sc, st in res:
            rows.append(f"| {pr.min_cutoff:g} | {pr.beta:g} | {pr.d_cutoff:g} | {pr.order} | {sc.reduction:.1f}% | "
                        f"{sc.lag:.2f} | {sc.lag_median:.2f} |" + (f" {st:.2f} |" if still else ""))
        fit = [r for r in res if r[1].lag <= LAG_LIMIT]
        if fit:
            pr, sc, _ = max(fit, key=lambda r: r[1].reduction)
            best[part] = pr
            rows.append(f"\nBest with lag ≤ {LAG_LIMIT:g}: {describe(pr)} ({sc.reduction:.1f}% less jitter, lag "
                        f"{sc.lag:.2f} frames). Default: {describe(DEFAULTS[part])} (tracker/smoothing.py says why).")
    return rows, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument("--max-frames", type=positive_int, default=None, help="frames per clip (default: all)")
    parser.add_argument("--grid", action="store_true", help="also score a grid of filter parameters per part")
    parser.add_argument("--cache", type=file_to_write, default=None,
                        help="raw tracks file: loaded if it exists, else written (for repeated --grid runs)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if not args.clips:  # --clips takes one or more: only the default, the shared clips, can be empty
        print(f"error: the shared clips were not found (expected talking_*.mp4 in {SHARED_DATA / 'video'})",
              file=sys.stderr)
        return 2
    missing = [c for c in args.clips if not c.is_file()]
    if missing:
        print(f"error: clip(s) not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if args.cache is not None and args.cache.is_file():
        clips = load_cache(args.cache)
        print(f"raw tracks from {args.cache} (delete it to re-track)")
    else:
        import_mediapipe()  # tracking runs MediaPipe's FaceMesh beside ours
        total = sum(min(int(cv2.VideoCapture(str(c)).get(cv2.CAP_PROP_FRAME_COUNT)), args.max_frames or 10**9)
                    for c in args.clips)
        with tqdm(total=total, desc="tracking", unit="frame") as bar:
            clips = [track_clip(c, args.max_frames, bar) for c in args.clips]
        if args.cache is not None:
            save_cache(args.cache, clips)
    unmeasured = [c for c in clips if c.flow is None]  # a cache from before the flow
    for clip in tqdm(unmeasured, desc="image flow", unit="clip"):
        path = next((p for p in args.clips if p.name == clip.name), None)
        if path is None:
            print(f"error: {args.cache} holds {clip.name}, which --clips does not list; delete the cache to re-track",
                  file=sys.stderr)
            return 2
        clip.flow = image_flow(read_frames(path, len(clip.time))[0], clip)
    if unmeasured and args.cache is not None:
        save_cache(args.cache, clips)

    smoothed = [smooth_clip(c) for c in clips]
    rows = [("| clip | frames | ours raw (68) | ours smoothed (68) | reduction | lag, frames (pooled) "
             "| lag (median per coordinate) | image's share of the raw jitter | ours raw (468) | MediaPipe (468) |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    oracle = oracle_reduction(clips, 1.0)
    bound, designs = linear_bound(clips)
    sums = np.zeros(7)  # ours468, n_ours468, mp468, n_mp468, image-motion cross-energy, raw energy, noise-free sum
    reductions, shares = [], []
    for clip, sm in zip(clips, smoothed):
        one = score([clip], [sm])
        _, n = jitter(clip.lm, iod(clip.lm, EYES68), clip.track)
        o468, no = jitter(clip.mesh, iod(clip.mesh, EYES468), clip.track)
        # MediaPipe has no track ids: one track while it sees a face.
        mp_track = np.where(np.isfinite(clip.mp_mesh).all(axis=(1, 2)), 0, -1)
        m468, nm = jitter(clip.mp_mesh, iod(clip.mp_mesh, EYES468), mp_track)
        cross, energy = image_motion_share(clip)
        # Without the network's noise the clip's RMS acceleration would be √share of the raw one; its mean
        # acceleration is taken to scale alike, to pool it as the jitter is.
        noise_free = one.raw * n * np.sqrt(np.clip(cross / energy, 0.0, 1.0)) if energy > 0 else np.nan
        sums += (o468, no, m468, nm, cross, energy, noise_free)
        image = f"{cross / energy:.2f}" if energy > 0 else "—"
        reductions.append(one.reduction)
        shares.append((one.raw * n, clip.name))
        lag = f"{one.lag:.2f} | {one.lag_median:.2f}" if one.lag_frames else "— | —"
        rows.append(f"| {clip.name} | {len(clip.time)} | {one.raw:.4f} | {one.smooth:.4f} | {one.reduction:.0f}% | "
                    f"{lag} | {image} | {o468 / max(no, 1):.4f} | {m468 / max(nm, 1):.4f} |")
    parts = {part: score(clips, smoothed, part) for part in PART_UNITS}
    lm = parts["landmarks"]
    frames = sum(len(c.time) for c in clips)
    ours468, mp468 = sums[0] / max(sums[1], 1), sums[2] / max(sums[3], 1)
    image_share = sums[4] / sums[5] if sums[5] > 0 else float("nan")
    noise_free_cut = 1 - sums[6] / (lm.raw * sums[1]) if sums[5] > 0 else float("nan")
    rows.append(f"| **all** | {frames} | **{lm.raw:.4f}** | **{lm.smooth:.4f}** | **{lm.reduction:.0f}%** | "
                f"**{lm.lag:.2f}** | {lm.lag_median:.2f} | **{image_share:.2f}** | **{ours468:.4f}** | "
                f"**{mp468:.4f}** |")
    part_rows = [("| part | jitter unit | raw jitter | smoothed | reduction | lag (pooled) | lag (median per coordinate) "
                  "| defaults: min_cutoff, beta, d_cutoff (order) |"), "|---|---|---|---|---|---|---|---|"]
    for part, sc in parts.items():
        part_rows.append(f"| {part} | {PART_UNITS[part]} | {sc.raw:.4f} | {sc.smooth:.4f} | {sc.reduction:.0f}% | "
                         f"{sc.lag:.2f} | {sc.lag_median:.2f} | "
                         f"{describe(DEFAULTS[PART_FILTER.get(part, part)], BETA_UNITS[part])} |")
    steady_rows = [part_rows[0].replace("defaults:", "--steady:"), part_rows[1]]
    steady = [smooth_clip(c, {part: STEADY_PARAMS[name] for part, name in PARAM_NAMES.items()}) for c in clips]
    for part, unit in PART_UNITS.items():
        sc = score(clips, steady, part)
        steady_rows.append(f"| {part} | {unit} | {sc.raw:.4f} | {sc.smooth:.4f} | {sc.reduction:.0f}% | "
                           f"{sc.lag:.2f} | {sc.lag_median:.2f} | "
                           f"{describe(STEADY_PARAMS[PARAM_NAMES[PART_FILTER.get(part, part)]], BETA_UNITS[part])} |")
    trade_rows = [("| landmarks: min_cutoff, beta, d_cutoff (order) | jitter reduction | lag (pooled) "
                   "| lag (median per coordinate) |"), "|---|---|---|---|"]
    for p in (*TRADE_OFF, LANDMARK_PARAMS):
        sc = lm if p == LANDMARK_PARAMS else score(clips, [smooth_clip(c, {"landmarks": p}) for c in clips])
        label = describe(p) + (" (default)" if p == LANDMARK_PARAMS else "")
        trade_rows.append(f"| {label} | {sc.reduction:.0f}% | {sc.lag:.2f} | {sc.lag_median:.2f} |")
    total_raw = sum(v for v, _ in shares)
    top = ", ".join(f"{name} {100 * v / total_raw:.0f}%" for v, name in sorted(shares, reverse=True)[:3])
    command = "python tools/jitter.py" + (f" --max-frames {args.max_frames}" if args.max_frames else "")
    if args.clips != DEFAULT_CLIPS:
        command += " --clips " + " ".join(str(c) for c in args.clips)
    met = "met" if lm.reduction >= 60 and lm.lag <= 1 else "not met"
    body = [
        (f"{len(clips)} clips, {frames} frames, one face, tracking mode, every frame. Jitter: mean frame-to-frame "
         "acceleration ||x[t+1] − 2x[t] + x[t−1]|| per point, in inter-ocular distances (68 points: our raw "
         "landmarks 36–45, the same normaliser for raw and smoothed; 468-point meshes: points 33–263 of that "
         "mesh), pooled over all frames. Smoothed = tracker.smoothing.FaceSmoother with its defaults, causal, "
         "one per track, on media time, with the tracker's landmark confidence."),
        "",
        *rows,
        "",
        (f"**Landmark jitter −{lm.reduction:.0f}%** pooled over all frames (target ≥ 60%; median over clips "
         f"−{np.median(reductions):.0f}%), **lag {lm.lag:.2f} frames** (target ≤ 1); target {met}. "
         "Lag (pooled): per track segment, ONE cross-correlation of smoothed against raw, summed over all "
         "the segment's coordinates, of velocities (differencing detrends the head's drift) band-limited by "
         f"the same zero-phase Gaussian (σ {LAG_SIGMA:g} frames), means removed; its peak, parabolic sub-frame; "
         "then the frame-weighted mean over segments and clips. Lag (median per coordinate), secondary: "
         "each coordinate's own peak, median over coordinates and segments. The estimator reads pure "
         "delays of 0, 1 and 2.5 frames of synthetic drifting tracks within 0.15 frame (tests/test_smoothing.py)."),
        "",
        ("What more landmark smoothing costs (same clips and measures; in the tuning grid behind the defaults, "
         "tracker/smoothing.py, no landmark setting of either order reached −60% within 1 frame of lag):"),
        "",
        *trade_rows,
        "",
        (f"The pooled figure is dominated by a few clips (share of the raw jitter: {top}). Part of the raw "
         "'jitter' is real motion, which no filter with ≤ 1 frame of lag may remove: a non-causal zero-phase "
         f"Gaussian of σ 1 frame (no lag at all) removes {oracle:.0f}% of it. "
         + (f"Causal linear filters of {LINEAR_TAPS} frames, least-squares designed on these very tracks "
            "(design_linear_filter: the least acceleration for a given match of the band-limited velocity; "
            "optimistic, as each is scored on what it was fitted to): the best of "
            f"{designs} with pooled lag ≤ 1 frame removes {bound.reduction:.0f}% at {bound.lag:.2f} frames. "
            if bound is not None else "")
         + (f"Most of that motion is in the picture: the optical flow of the raw landmarks (image_flow, Lucas-Kanade, "
            "a measurement that shares none of the network's noise) accounts for "
            f"{100 * image_share:.0f}% of the raw acceleration's energy, pooled (the table's share column; the "
            "energy is dominated by the clips that move most). Were every bit of the network's noise removed and "
            "none of the picture's motion, each clip's root-mean-square acceleration would fall by 1 − √share; "
            f"pooled as the jitter is, that is a {100 * noise_free_cut:.0f}% reduction: on these clips the "
            "target asks a filter to smooth away motion the picture shows (a shaking camera, frames repeated "
            "and then skipped), which it can only do by trailing it. "
            if np.isfinite(image_share) else "")
         + "Our raw 468-point mesh comes "
         "from the same face-mesh network as MediaPipe's and jitters alike; smoothing is applied to the 68 "
         "points (and pose, weights), so MediaPipe's column compares with our raw 468 column."),
        "",
        ("All smoothed parts (same jitter and lag definitions, in each part's unit; rotation as rotation "
         "vectors in degrees relative to the clip's first pose, filtered as quaternions; expression: the 44 "
         "weights the 3D fit reads, gaze: the 8 eyeLook weights read from the irises, through the same filter; "
         "the eyes' saccades are real motion, and fast):"),
        "",
        *part_rows,
        "",
        ("With `--steady` (tracker.smoothing.STEADY_PARAMS: every part's min_cutoff and beta halved, for avatars "
         "that would rather trail a little than shake), the same clips and measures:"),
        "",
        *steady_rows,
        "",
        f"Command: `{command}`",
    ]
    if args.grid:
        grid_rows, _ = run_grid(clips)
        body += ["", ("Parameter grid (how the defaults were chosen; each part's filter is independent of the "
                      f"others; best = most jitter removed with pooled lag ≤ {LAG_LIMIT:g} frames):"), *grid_rows,
                 "", f"Command: `{command} --grid`"]
    text = "\n".join(body)
    publish("smoothing", text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
