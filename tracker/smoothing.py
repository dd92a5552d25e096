"""Zero-look-ahead temporal smoothing: One Euro filters on landmarks, pose and expression.

The One Euro filter (Casiraghi, Roussel, Vogel, CHI 2012) is an exponential
low-pass whose cutoff rises with the signal's speed:

    cutoff = min_cutoff + beta · |dx/dt, itself low-passed at d_cutoff|

so a still face is smoothed hard (jitter removed) and a moving one lightly
(little lag). It is causal: each output uses only the current and past frames,
so it adds no latency beyond the filter's own (small, speed-dependent) lag.

Order. The paper's filter is one first-order low-pass; ``order=2`` runs two in
cascade at the same adaptive cutoff (a critically damped second-order
low-pass). For the same lag it removes more of the frame-to-frame acceleration
(what reads as jitter): its response falls off twice as steeply above the
cutoff, while a ramp's lag, 2(1 - a)/a frames at factor a, is met with about
twice the cutoff. The landmarks use it (see the defaults below).

Units. Landmark parameters are in units of the face's inter-ocular distance
(IOD, outer eye corners 36-45) per second, so one parameter set suits every
face size; rotation parameters in radians per second; expression in weight
units (0..1) per second; translation in the caller's units (mm) per second.

Confidence. An optional per-element confidence c in [0, 1] scales the cutoff
by (0.25 + 0.75·c): a fully trusted landmark keeps the normal cutoff, an
untrusted one gets a quarter of it (four times the time constant), so it
follows its neighbours' motion less eagerly and its noise is averaged longer.
The floor of 0.25 keeps an unreliable point from freezing altogether.

Time. ``t`` is in seconds (media or wall time). The first call passes its
input through; a non-increasing ``t`` (duplicate or reset clock) is treated as
one frame at 30 fps; a gap over 0.5 s (a track lost for a while) resets the
filter, so the new input passes through instead of being dragged from stale
state.

Defaults were chosen with ``tools/jitter.py --grid`` on the shared talking-head
clips (the numbers are beside them below; BENCHMARKS.md, section "Jitter and lag").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

DEFAULT_DT = 1.0 / 30.0  # assumed frame period when the clock does not advance
MAX_GAP_S = 0.5  # a longer gap resets the filter: the old state no longer describes the face
CONFIDENCE_FLOOR = 0.25  # cutoff factor at confidence 0 (1.0 at confidence 1)


class OneEuroParams(NamedTuple):
    min_cutoff: float  # Hz: cutoff when still; lower = smoother at rest, more lag on slow motion
    beta: float  # Hz per (unit/s): how fast the cutoff opens with speed; higher = less lag when moving
    d_cutoff: float = 1.0  # Hz: low-pass on the speed estimate itself
    order: int = 1  # first-order low-passes in cascade, each at the cutoff (2: critically damped)


# Chosen with `tools/jitter.py --grid` on the 13 shared talking-head clips (3866 frames, raw tracks with
# the pipeline's landmark confidence), per part: the most jitter removed (mean frame-to-frame
# acceleration, pooled over all frames) with lag <= 1 frame (the tool now keeps a margin, LAG_LIMIT = 0.95),
# lag = the peak of the smoothed-vs-raw velocity cross-correlation pooled over a segment's coordinates,
# frame-weighted over segments (tools/jitter.py); the landmarks by a rule that also weighs accuracy (below).
#   landmarks   10 Hz, 12, d 0.5, 2nd order: jitter -52.0%, lag 0.93 frames; a still point keeps ~0.6 of its
#               noise std. Jitter on these clips is bought with error on fast motion, which the lag measure
#               hardly shows: on the 18 tuning render clips (`python tools/tune_fit_weights.py
#               landmark-smoothing`, fast yaw sweeps) the landmark error at |yaw| <= 20° is 1.69% of the
#               inter-ocular distance unsmoothed, 3.02% with the first-order setting used before (5 Hz, 5, d
#               0.5: -50.4% at 0.92 frames), and 3.44% with the grid's best second-order one (12 Hz, 2: -54.7%
#               at 0.95). So the rule here: among that tool's candidates (LANDMARK_FILTERS), the most jitter
#               removed by one that does not read those clips worse than the first-order setting did (table in
#               BENCHMARKS.md, "Jitter and lag"). This one removes more (-52.0%) at
#               the same lag and reads them better (2.92%). No setting of either order reaches -60% within 1
#               frame (the best, 12 Hz, 0, 2nd order: -56.3% at 0.99, reads those renders at 3.72%).
#   rotation    3 Hz, 10, d 0.5: jitter -56%, lag 0.92 frames. Second-order settings remove more here (9 Hz, 2:
#               -60.0% at 0.93 frames; 8 Hz, 10: -59.4% at 0.91) but read yaw on the tuning render clips'
#               sweeps worse (`python tools/tune_fit_weights.py rotation-smoothing`: 2.19° and 2.03° against
#               1.96°, 1.79° unsmoothed), so rotation stays first order.
#   translation 5 Hz, 0.02, d 0.5: jitter -52%, lag 0.75 frames (second order, 9 Hz, 0: -61% at 0.92 frames, not
#               checked against render truth, so not taken).
#   expression  1 Hz, 5, d 2:    jitter -60%, lag 0.42 frames. Chosen as the lowest key-blendshape MAE on the
#               tuning render clips (`python tools/tune_fit_weights.py expression-smoothing`, seeds 700-702:
#               0.0645, against 0.0635 unsmoothed) among the settings that keep the issue's -60% within 1 frame
#               on the real clips; d 1 (0.0668, -66%) let a blink's speed open the cutoff too late, rounding
#               blinks off (eyeBlinkLeft MAE 0.037 against 0.032). 0.5 Hz, 5, d 3 tied (0.0644) at -59.8%.
#               Re-read on 2026-12-06 (the tool now also scores a tuning clip that starts without a face): 0.0598
#               against 0.0572 unsmoothed, and -59.5% of the expression jitter on the real clips; 1 Hz, 5, d 3
#               reads 0.0592 but removes -56%. Not re-chosen.
LANDMARK_PARAMS = OneEuroParams(min_cutoff=10.0, beta=12.0, d_cutoff=0.5, order=2)  # IOD units
ROTATION_PARAMS = OneEuroParams(min_cutoff=3.0, beta=10.0, d_cutoff=0.5)  # radians
EXPRESSION_PARAMS = OneEuroParams(min_cutoff=1.0, beta=5.0, d_cutoff=2.0)  # weights in [0, 1]
TRANSLATION_PARAMS = OneEuroParams(min_cutoff=5.0, beta=0.02, d_cutoff=0.5)  # mm

# --steady, for avatars that would rather trail a little than shake: every part's min_cutoff and beta halved.
# On the real clips (python tools/jitter.py, "With --steady"): 66-70% of each part's jitter removed at up to
# 1.7 frames of lag, against 51-56% at up to 0.94 frames with the defaults (a scratch grid on 2026-12-06: a
# third of each read 75-79% at up to 2.7 frames). The cost: its landmarks trail the tuning render clips' quick
# turns, 4.9% of the inter-ocular distance against 2.9% by default (1.7% raw). A higher landmark beta trails
# less and steadies less (scratch, same clips): 5 Hz, 12: 61% at 1.49 frames, 3.9%; 5 Hz, 24: 54% at 1.20, 3.0%.
# FaceSmoother(**STEADY_PARAMS).
STEADY_PARAMS = {
    name: params._replace(min_cutoff=params.min_cutoff / 2, beta=params.beta / 2)
    for name, params in (("landmark_params", LANDMARK_PARAMS), ("expression_params", EXPRESSION_PARAMS),
                         ("rotation_params", ROTATION_PARAMS), ("translation_params", TRANSLATION_PARAMS))
}


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with this cutoff (Hz) sampled every dt seconds."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def _step(t: float, t_prev: float | None) -> float | None:
    """The time step to use, or None when the filter must restart (first call or a long gap)."""
    if t_prev is None:
        return None
    dt = t - t_prev
    if dt <= 0.0 or not math.isfinite(dt):
        return DEFAULT_DT
    return None if dt > MAX_GAP_S else dt


class _OneEuroFilter:
    """The parameters every One Euro filter here shares; subclasses hold the state (``reset``)."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0, order: int = 1) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0 or order not in (1, 2):
            raise ValueError("One Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0 and order 1 or 2")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.order = int(order)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError


class OneEuro(_OneEuroFilter):
    """One Euro filter over an array of any shape, with independent state per element.

    ``scale`` (per call, default 1) says how many units of ``x`` make one unit of the
    parameters: the speed that drives the cutoff is |dx/dt| / scale. The state stays in
    the units of ``x``, so a noisy or changing scale only nudges the cutoff and never
    moves the output itself (dividing ``x`` by a noisy scale and multiplying back would
    turn scale noise into position noise far from the origin).
    """

    def reset(self) -> None:
        self._x_raw: np.ndarray | None = None  # previous raw input (the derivative is of the raw signal)
        self._stages: list[np.ndarray] = []  # each low-pass stage's previous output; the last is the output
        self._dx: np.ndarray | None = None  # previous low-passed derivative
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, confidence: np.ndarray | float | None = None,
                 scale: float = 1.0) -> np.ndarray:
        x = np.array(x, dtype=np.float64)  # a copy: the state must not alias the caller's array
        dt = _step(t, self._t)
        if dt is None or not self._stages or self._stages[-1].shape != x.shape:
            self._x_raw, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            self._stages = [x.copy() for _ in range(self.order)]
            return x
        self._t = float(t)
        # Non-finite inputs pass through and leave that element's state untouched; an element whose state is
        # not finite (its first value was NaN) starts afresh from its first finite input.
        ok = np.isfinite(x)
        fresh = ok & ~np.isfinite(self._stages[-1])
        if fresh.any():
            for stage in self._stages:
                stage[fresh] = x[fresh]
            self._x_raw[fresh], self._dx[fresh] = x[fresh], 0.0
        xs = np.where(ok, x, self._stages[0])
        # Derivative of the raw signal, as in the paper's reference code, then low-passed.
        dx = (xs - np.where(ok, self._x_raw, xs)) / dt
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat) / scale
        if confidence is not None:
            c = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=1.0), 0.0, 1.0)
            cutoff = cutoff * (CONFIDENCE_FLOOR + (1.0 - CONFIDENCE_FLOOR) * c)
        a = _alpha(cutoff, dt)
        y = xs
        for k, stage in enumerate(self._stages):
            y = np.where(ok, stage + a * (y - stage), stage)
            self._stages[k] = y
        self._x_raw, self._dx = xs, dx_hat
        return np.where(ok, y, x)


# Quaternions [w, x, y, z] (Hamilton product), single rotations.
def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def _qconj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def _qlog(q: np.ndarray) -> np.ndarray:
    """Rotation vector (radians) of a unit quaternion, the short way round (|angle| <= pi)."""
    if q[0] < 0:
        q = -q  # q and -q are the same rotation: take the representative with the shorter arc
    n = float(np.linalg.norm(q[1:]))
    if n < 1e-12:
        return 2.0 * q[1:]
    return (2.0 * math.atan2(n, q[0]) / n) * q[1:]


def _qexp(r: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(r))
    if angle < 1e-12:
        q = np.array([1.0, *(0.5 * r)])
        return q / np.linalg.norm(q)
    return np.array([math.cos(0.5 * angle), *(math.sin(0.5 * angle) / angle * r)])


class QuaternionOneEuro(_OneEuroFilter):
    """One Euro on rotations: the filter steps along the geodesic, never through Euler angles.

    Why the rotation-vector delta rather than the four components: the update
    q ← q · exp(alpha · log(q⁻¹ · q_raw)) is the exact rotation analogue of
    y ← y + alpha · (x − y). It treats every axis alike whatever the current
    orientation (filtering components would smooth x, y, z, w with different
    speeds and cut chords through the sphere), the output is a unit quaternion by
    construction, and the speed that opens the cutoff is the true angular speed
    in rad/s, so ``beta`` has a physical meaning. The shortest-arc log makes the
    filter blind to the q / −q sign of its input (hemisphere continuity); the
    output keeps its own sign history, starting from the first input's sign.
    """

    def reset(self) -> None:
        self._q_raw: np.ndarray | None = None
        self._stages: list[np.ndarray] = []  # each stage's previous output; the last is the output
        self._w = np.zeros(3)  # low-passed angular velocity (rad/s, body frame)
        self._t: float | None = None

    def __call__(self, q: np.ndarray, t: float) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        norm = float(np.linalg.norm(q))
        if not (math.isfinite(norm) and norm > 0):
            return q.copy()  # nothing usable; keep the state for the next frame
        q = q / norm
        dt = _step(t, self._t)
        self._t = float(t)
        if dt is None or not self._stages:
            self._q_raw, self._w = q, np.zeros(3)
            self._stages = [q.copy() for _ in range(self.order)]
            return q.copy()
        w = _qlog(_qmul(_qconj(self._q_raw), q)) / dt
        self._w = self._w + _alpha(self.d_cutoff, dt) * (w - self._w)
        a = _alpha(self.min_cutoff + self.beta * float(np.linalg.norm(self._w)), dt)
        out = q
        for k, stage in enumerate(self._stages):
            out = _qmul(stage, _qexp(a * _qlog(_qmul(_qconj(stage), out))))
            out /= np.linalg.norm(out)  # against round-off drift over long tracks
            self._stages[k] = out
        self._q_raw = q
        return out.copy()


class FaceSmoother:
    """Smoothing for one tracked face: create one per track, call once per frame in time order.

    Every part is optional per frame (None in, None out); a part that is missing
    for a while restarts by itself through the 0.5 s gap rule.
    """

    def __init__(self, landmark_params: OneEuroParams | tuple = LANDMARK_PARAMS,
                 expression_params: OneEuroParams | tuple = EXPRESSION_PARAMS,
                 rotation_params: OneEuroParams | tuple = ROTATION_PARAMS,
                 translation_params: OneEuroParams | tuple = TRANSLATION_PARAMS) -> None:
        self.landmarks = OneEuro(*landmark_params)
        self.expression = OneEuro(*expression_params)
        self.rotation = QuaternionOneEuro(*rotation_params)
        self.translation = OneEuro(*translation_params)
        # The gaze's angles, with the expression filter's settings: the caller scales them as it scales the
        # eyeLook weights, so both move alike.
        self.gaze = OneEuro(*expression_params)
        self._scale: float | None = None  # last usable inter-ocular distance (px)

    def __call__(self, t: float, landmarks: np.ndarray | None, scale_px: float,
                 rotation_quat: np.ndarray | None = None, translation: np.ndarray | None = None,
                 expression: np.ndarray | None = None, confidence: np.ndarray | None = None,
                 ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Smoothed (landmarks px, quaternion [w,x,y,z], translation, expression in [0, 1]).

        ``scale_px`` is the face's inter-ocular distance in pixels this frame; ``confidence``
        (one value in [0, 1] per landmark) lowers the cutoff of doubtful landmarks.
        """
        lm = None
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            conf = None
            if confidence is not None:
                # One value per landmark, shared by its x and y.
                conf = np.asarray(confidence, dtype=np.float64).reshape(-1, *([1] * (landmarks.ndim - 1)))
            if math.isfinite(scale_px) and scale_px > 0:
                self._scale = float(scale_px)
            elif self._scale is None:
                # No usable scale yet: about half the landmarks' width (the eye corners' share of the face).
                self._scale = max(0.5 * float(np.ptp(landmarks[..., 0])), 1.0) if landmarks.size else 1.0
            lm = self.landmarks(landmarks, t, conf, scale=self._scale)
        quat = None if rotation_quat is None else self.rotation(rotation_quat, t)
        trans = None if translation is None else self.translation(translation, t)
        expr = None if expression is None else np.clip(self.expression(expression, t), 0.0, 1.0)
        return lm, quat, trans, expr
