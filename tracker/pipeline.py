"""The per-frame pipeline: detect or track ROIs → face mesh → 68 landmarks → results; frame by frame, or
pipelined over two threads (the mesh stage of the next frame beside the later stages of this one)."""

from __future__ import annotations

import logging
import math
import numbers
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
from threadpoolctl import ThreadpoolController

from tracker.backends import BACKENDS
from tracker.detector import (
    CORNERS,
    DEFAULT_SCORE_THRESHOLD,
    DETECTOR_MODELS,
    TURNS,
    Detection,
    FaceDetector,
    same_face,
)
from tracker.engines import BackendError, runtime_said
from tracker.expression import ExpressionCalibration
from tracker.fitting import JAW_ROWS, FaceFitter, camera_for, head_pose
from tracker.gaze import GazeEstimator, iris_points, look_weights, smooth_gaze
from tracker.landmarks68 import Mesh68Mapping
from tracker.mesh import MESH_INPUT, MESH_MODEL, FaceMesh, MeshResult, roi_from_detection
from tracker.pose import matrix_to_euler, quaternion_to_matrix
from tracker.refiner import REFINER_FILE, Refiner
from tracker.reliability import (
    BlendshapeErrorCalibration,
    ConfidenceCalibration,
    PoseErrorCalibration,
    assess,
    blendshape_signal,
    pose_signal,
)
from tracker.roi import Roi, crop_camera_to_image, crop_points_to_image, outside_image
from tracker.smoothing import MAX_GAP_S, STEADY_PARAMS, FaceSmoother
from tracker.sources import to_bgr8
from tracker.tracking import FaceState, TrackSet, points_box
from tracker.types import FaceResult, FrameResult, Pose

# The refiner's visibility below which a landmark is reported occluded (hidden by something in
# front of the face). Low mirror confidence alone is not: on afw with synthetic occluders, flags from
# confidence < 0.2 were right 16% of the time (tools/evaluate_occlusion.py). Taking low-confidence
# points from the fitted 3D model instead was measured and dropped too (a one-off check, re-run on the
# offset-free points, with the 2D-only refiner): jaw points below confidence 0.02-0.3 replaced by the
# fit's sliding contour raised NME on helen_train (500 faces: 3.11% -> 3.13-3.23%) and on afw (4.10% ->
# 4.13-4.27%, failures 2.1% -> 2.7-3.9%), and so did a confidence-weighted blend: the fit's jaw (afw jaw
# NME 8.2%, the refiner's 7.1%) is worse than the refiner's even where the mirror check doubts it.
HIDDEN_BELOW = 0.5
FIT_WEIGHT_FLOOR = 0.05  # the least weight of a point in the 3D fit: untrusted points still keep it posed
TURNED_MIN_PRESENCE = 0.9  # the least mesh presence of a turned search's find (detect_meshes)
CANCEL_POLL_S = 0.05  # how often process_stream asks its `cancelled` while the next frame is awaited
RESCUED_MIN_PRESENCE = 0.9  # the least presence of a third mesh pass, for a find the first two doubted
TURNED_LOGIT_MARGIN = 2.0  # how much surer of a face (log-odds) a turned find's mesh must be to go before an upright's
# Frames in a row further apart than smoothing bridges before the tracker says so, once: a caller's clock in
# milliseconds (cv2.CAP_PROP_POS_MSEC) would otherwise turn smoothing off without a word.
LONG_STEPS_BEFORE_NOTE = 3

log = logging.getLogger("tracker.pipeline")


_BLAS_POOLS = ThreadpoolController()  # after tracker.fitting's import: SciPy's BLAS is loaded and seen too
_blas_lock = threading.Lock()
_blas_users = 0  # blocks inside one_blas_thread, in any thread
_blas_limit = None  # the limit they share, restored by the last one out


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS (NumPy's and the one Numba's kernels call through SciPy) on one thread inside the block,
    restored after it. A frame's products are small (the 1404×136 map to 68 points, the fit's JᵀJ):
    a second thread gains nothing, and on a busy machine the calling thread waits until that thread
    gets a core (the map took 0.09-0.12 ms per call with one thread and 0.4-1.2 ms with two, next to a
    training run). BLAS's thread count is the process's: the first block in sets the limit and the last
    one out restores it, so trackers in several threads do not undo each other's limit; other threads'
    BLAS calls run on one thread meanwhile too."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = _BLAS_POOLS.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


class _Worker:
    """process_stream's second thread: one call at a time, in order. A daemon thread, so that a call blocked
    on a stalled source (a camera that stopped answering) never holds up the interpreter's exit."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="tracker.pipeline worker", daemon=True)
        self.thread.start()

    def submit(self, call: Callable[[], object]) -> Future:
        future: Future = Future()
        self._calls.put((call, future))
        return future

    def stop(self) -> None:
        """End the thread once the call it is on, if any, returns."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (job := self._calls.get()) is not None:
            call, future = job
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 -- raised in the caller's thread by future.result()
                future.set_exception(exc)


@dataclass
class TrackerConfig:
    backend: str = "auto"
    detector: str = "short"
    max_faces: int = 1
    detection_threshold: float = DEFAULT_SCORE_THRESHOLD
    presence_threshold: float = 0.5
    # While fewer than max_faces are tracked, look for new faces this often (frames).
    redetect_interval: int = 10
    threads: int | None = None
    # Fit the 3D face model (pose, blendshapes, self-occlusion) to each face's landmarks.
    fit_3d: bool = True
    # Camera focal length in pixels for the 3D fit; None assumes the image width (~53° field of view).
    focal_px: float | None = None
    # Run each face's mirror image through the mesh too: landmark confidence, fused landmarks.
    mirror_check: bool = True
    # One Euro smoothing (no look-ahead) of landmarks, pose, blendshapes and gaze in video and live input.
    smooth: bool = True
    # Stronger smoothing (smoothing.STEADY_PARAMS): less jitter, more lag; for avatars.
    steady: bool = False
    # The trained refiner moves the 68 points from the linear map's guess (engines/refiner.onnx).
    refiner: bool = True
    # Map the fit's blendshape weights towards the true ones (tracker/expression.py); off, they are the fit's own.
    calibrate_expression: bool = True
    # The eyeLook weights from the irises (tracker/gaze.py); off, they are the fit's own (lids only).
    gaze: bool = True
    # Each pose's expected error from the 3D fit's residual and the landmarks beyond the frame's edge
    # (tracker/reliability.py pose_signal, PoseErrorCalibration). Calibrated on the default landmarks: with
    # mirror_check or refiner off the residual reads on another scale, and the poses are left unrated.
    pose_error: bool = True
    # Each face's expected blendshape error (tracker/reliability.py BlendshapeErrorCalibration). Its signal needs the
    # refiner's expression readings of the crop and its mirror, and it was calibrated on the calibrated weights: with
    # mirror_check, refiner or calibrate_expression off, the blendshapes are left unrated.
    blendshape_error: bool = True

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """ValueError naming the first field out of range or of the wrong kind (FaceTracker checks again: a
        field may have changed since). Out of range, a value would not fail: it would track nothing, or give
        a pose at a wrong distance."""
        def whole(value: object) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1

        for name, known in (("backend", BACKENDS), ("detector", tuple(DETECTOR_MODELS))):
            if not (isinstance(getattr(self, name), str) and getattr(self, name) in known):
                raise ValueError(f"TrackerConfig.{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}")
        for name in ("max_faces", "redetect_interval"):
            if not whole(getattr(self, name)):
                raise ValueError(f"TrackerConfig.{name} must be a positive whole number, got {getattr(self, name)!r}")
        if self.threads is not None and not whole(self.threads):
            raise ValueError(f"TrackerConfig.threads must be None or a positive whole number, got {self.threads!r}")
        if self.threads is not None and self.threads > (cpus := usable_cpus()):
            raise ValueError(f"TrackerConfig.threads must be at most the {cpus} CPUs this process may use (more "
                             f"threads than cores only wait for each other), got {self.threads!r}")
        self.checked_focal()
        for name in ("detection_threshold", "presence_threshold"):
            if not (_finite_number(getattr(self, name)) and 0.0 <= getattr(self, name) <= 1.0):
                raise ValueError(f"TrackerConfig.{name} must be within [0, 1], got {getattr(self, name)!r}")
        for name in ("fit_3d", "mirror_check", "smooth", "steady", "refiner", "calibrate_expression", "gaze",
                     "pose_error", "blendshape_error"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):  # refiner="none" would be true
                raise ValueError(  # noqa: TRY004 -- README: bad arguments raise ValueError
                    f"TrackerConfig.{name} must be True or False, got {getattr(self, name)!r}")

    def checked_focal(self) -> float | None:
        """focal_px, or ValueError: the tracker reads it every frame (a caller's images may each have their own)."""
        value = self.focal_px
        if value is not None and not (_finite_number(value) and value > 0):
            raise ValueError(f"TrackerConfig.focal_px must be None or a positive number of pixels, got {value!r}")
        return value


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity where the system tells it (a container's or taskset's share),
    else the machine's count. Each model's threads are at most this many: more only wait for each other (64 ran a
    frame 6 to 100 times slower than 2 on a 2-core machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def _finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class FaceTracker:
    """Stateful tracker: feed it frames in order with :meth:`process`, or a whole sequence with
    :meth:`process_stream` (the same results, pipelined)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        if config is not None and not isinstance(config, TrackerConfig):
            raise ValueError(f"FaceTracker takes a TrackerConfig, not {type(config).__name__}: "
                             "FaceTracker(TrackerConfig(max_faces=2))")
        self.config = config or TrackerConfig()
        c = self.config
        c.check()  # again: a field changed after the config was made is checked too
        self.detector = FaceDetector(c.detector, c.backend, score_threshold=c.detection_threshold, threads=c.threads)
        # All faces of a frame and their mirrors go through the mesh and the refiner in one batch.
        self._batch = c.max_faces * (2 if c.mirror_check else 1)
        self.mesh = FaceMesh(c.backend, threads=c.threads, features=c.refiner, max_batch=self._batch)
        self._mapping: Mesh68Mapping | None = None
        self._calibration: ConfidenceCalibration | None = None
        self.fitter = FaceFitter() if c.fit_3d else None
        self.expression_calibration: ExpressionCalibration | None = None
        self.pose_error_calibration: PoseErrorCalibration | None = None
        self.blendshape_error_calibration: BlendshapeErrorCalibration | None = None
        self.gaze: GazeEstimator | None = None
        if self.fitter is not None:
            if c.pose_error and c.mirror_check and c.refiner:
                self.pose_error_calibration = PoseErrorCalibration()
            if c.blendshape_error and c.mirror_check and c.refiner and c.calibrate_expression:
                self.blendshape_error_calibration = BlendshapeErrorCalibration()
            if c.gaze:
                self.gaze = GazeEstimator.load(self.fitter.model)
                self.gaze.warm_up()
            self.fitter.warm_up()  # JIT compile or cache load now, not on the first face
            names = self.fitter.model.names
            self.expression_calibration = (ExpressionCalibration.load(names) if c.calibrate_expression
                                           else ExpressionCalibration.identity(names))
        smoother = partial(FaceSmoother, **STEADY_PARAMS) if c.steady else FaceSmoother
        self.tracks = TrackSet(c.max_faces, c.presence_threshold, smoother)
        self._since_detection = 0
        self._deferred = False  # the last search left a face for later (it overlapped a tracked one)
        self._next_corner = 0  # the frame corner a video's next search for small faces looks at
        self._next_turn = 0  # the turn of the frame a video's next search for sideways faces looks at
        self._first_search = True  # a sequence's first search looks at every corner and turn, as a still's does
        self._since_full_search = 0  # frames since a search looked at every corner and turn
        self._after_still = False  # the last frame was a still: the next one starts a new sequence
        self._last_time: float | None = None  # time_s of the last frame of the sequence (None after a still)
        self._long_steps = 0  # frames in a row that came further apart than smoothing bridges
        self._clock_noted = False
        self._unfinished: Future | None = None  # a stopped stream's worker call, still changing the tracks
        # Held by a process() call and by an open process_stream: the tracks are one sequence's state, so a second
        # caller at the same time (another thread, a process() inside a stream) is an error, not a mix of two.
        self._in_use = threading.Lock()

    def warm_up(self) -> None:
        """Load every stage and run every network once on a made-up frame: their first-call allocations happen
        here, not on the first face (about 0.1-0.3 s), and a model or engine file that is missing or damaged (weights
        that load but cannot run) fails here, as a BackendError naming it."""
        frame = np.full((256, 256, 3), 128, np.uint8)
        with _blamed_on(DETECTOR_MODELS[self.config.detector][0]):
            outputs, *_ = self.detector.network_outputs(frame)
            _require_finite(list(outputs.values()))  # damaged weights would find no face, ever, in silence
        with _blamed_on(MESH_MODEL):
            meshes = self.mesh.run(frame, [Roi(cx=128.0, cy=128.0, size=200.0, angle=0.0)],
                                   mirror=self.config.mirror_check)
            _require_finite([m.points for m in meshes])
        with _blamed_on(REFINER_FILE if self.config.refiner else "the 68-point map"):
            _require_finite([p.direct for p in self.mapping.predict_batch(meshes)])
        if self.config.mirror_check:
            _ = self.calibration

    @property
    def mapping(self) -> Mesh68Mapping:
        # Loaded on first use, so tools/fit_mesh68.py can mesh faces before the map exists.
        if self._mapping is None:
            refiner = (Refiner(self.config.backend, self.config.threads, max_batch=self._batch)
                       if self.config.refiner else None)
            self._mapping = Mesh68Mapping(refiner=refiner)
        return self._mapping

    @property
    def calibration(self) -> ConfidenceCalibration:
        # Loaded on first use, so tools/calibrate_confidence.py can run the mirror pass before it exists.
        if self._calibration is None:
            self._calibration = ConfidenceCalibration()
        return self._calibration

    @property
    def backend(self) -> str:
        return self.mesh.session.backend

    def _await_unfinished(self) -> None:
        """Wait for the worker of a stream stopped by an error or Ctrl-C to finish the item it was on."""
        if self._unfinished is not None:
            wait([self._unfinished])
            self._unfinished = None

    def reset(self) -> None:
        """Forget every face (the next frame starts a new sequence), keeping the models. Face IDs keep counting
        up, so an ID is never given to two faces in one tracker's life."""
        with self._using("reset()"):
            self._forget_faces()
            # Kept apart from _forget_faces, which a stream's worker calls: _describe, in the caller's thread, owns it.
            self._last_time, self._long_steps = None, 0

    def _forget_faces(self) -> None:
        self._await_unfinished()
        self.tracks.clear()
        self._since_detection = 0
        self._deferred = False
        self._next_corner = 0
        self._next_turn = 0
        self._first_search = True
        self._after_still = False

    def process(self, image: np.ndarray, frame: int = 0, time_s: float = 0.0, source: str = "",
                still: bool = False) -> FrameResult:
        """Track faces in one frame: BGR uint8 (H×W×3), or anything tracker.sources.to_bgr8 turns into it
        (grey, BGRA, 16-bit, float in [0, 1]); ValueError for what is not an image. ``still`` treats it as
        unrelated to the frames before and after it: its faces are searched afresh and not tracked on."""
        image, frame, time_s, source, still = self._checked_arguments(image, frame, time_s, source, still)
        with self._using("process()"):
            self._await_unfinished()
            with one_blas_thread():
                return self._describe(self._find(image, still), image.shape, frame, time_s, source, still)

    def _checked_arguments(self, image: object, frame: object, time_s: object, source: object,
                           still: object) -> tuple[np.ndarray, int, float, str, bool]:
        """process()'s arguments as the stages take them, or a ValueError; focal_px is checked too, as it is read
        every frame: all before the frame changes the tracks."""
        image = _bgr8(image)
        arguments = _frame_arguments(frame, time_s, source, still)
        self.config.checked_focal()
        return image, *arguments

    @contextmanager
    def _using(self, caller: str) -> Iterator[None]:
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError(f"{caller} on a FaceTracker that is in use: by another thread, or by a process_stream "
                               "that is not finished (close it first); use one tracker per sequence and thread")
        try:
            yield
        finally:
            self._in_use.release()

    def process_stream(self, frames: Iterable[tuple],
                       cancelled: Callable[[], bool] | None = None) -> Iterator[FrameResult]:
        """:meth:`process` over frames in order, pipelined on two threads. Each item is a tuple of process()'s
        arguments, (image, frame, time_s, source, still), the last four optional; the results are the ones
        process() gives frame by frame, in order. While one frame's faces are described (refiner, 3D fit,
        gaze, smoothing) in the calling thread, a worker reads the next item and finds its faces (mesh,
        tracking, detection): the networks of the two stages run at once, so a video is tracked in about the
        time of the slower stage. The worker takes the items, so a result never waits for the next frame to
        arrive (a live source's next frame comes a frame period later), and `frames` is read on that thread.
        Should reading or converting an item fail, the frames before it are described before the error is
        raised. Close a stream left unfinished: until then BLAS stays on one thread and the worker waits;
        close() waits for the item the worker is on. Stopped by an error or Ctrl-C instead, the stream does
        not wait for it (the worker may be waiting on a stalled source), and the tracker's next use does; so
        too when ``cancelled`` (polled every CANCEL_POLL_S while the next frame is awaited) returns True: then
        the stream ends there, as if the frames had run out (a stop asked for while a network source stalls
        takes effect at once, not when the source gives up). Stopped early, the tracker may have found a frame
        more than it described: reset() it before reuse."""
        try:
            items = iter(frames)
        except TypeError:
            raise ValueError("process_stream takes an iterable of (image, frame, time_s, source, still) tuples, not "
                             f"{type(frames).__name__}") from None

        def read_and_find() -> tuple | None:  # on the worker: _describe's arguments for the next item, or None
            try:
                item = next(items)
            except StopIteration:
                return None
            if not isinstance(item, tuple) or not 1 <= len(item) <= 5:
                raise ValueError("process_stream takes tuples of process()'s arguments: (image, frame, time_s, "
                                 f"source, still), the last four optional; got {type(item).__name__}"
                                 + (f" of {len(item)}" if isinstance(item, tuple) else ""))
            image, frame, time_s, source, still = self._checked_arguments(*item, *(0, 0.0, "", False)[len(item) - 1:])
            return self._find(image, still), image.shape, frame, time_s, source, still

        def arrived(call: Future) -> bool:  # the worker's call is done; False: cancelled while it was not
            while cancelled is not None and not call.done():
                if cancelled():
                    return False
                wait([call], timeout=CANCEL_POLL_S)
            return True

        with self._using("process_stream()"):
            self._await_unfinished()
            worker = _Worker()
            pending: Future | None = None  # the worker's current call
            try:
                with one_blas_thread():
                    try:
                        pending = worker.submit(read_and_find)
                        while arrived(pending) and (found := pending.result()) is not None:
                            pending = worker.submit(read_and_find)
                            yield self._describe(*found)
                    except GeneratorExit:
                        wait([pending])  # closed by the consumer: the item the worker is on is finished first
                        raise
            finally:
                # Still holding the tracker: the next caller must find the unfinished call to wait for.
                worker.stop()
                if pending is not None and not pending.done():
                    self._unfinished = pending  # stopped by an error or Ctrl-C: left to finish on its own
                else:
                    worker.thread.join()

    def _find(self, image: np.ndarray, still: bool) -> list[tuple[int, MeshResult, FaceState]]:
        """The first stage: the frame's faces (mesh, tracks, new faces looked for), each with its ID, mesh and
        the state the later stages carry for it (the track's own object, for _describe alone to change)."""
        if still or self._after_still:
            # A still's faces are its own: the frame after it (a video's first, say) starts a new sequence, and
            # is not meshed where the still's faces were.
            self._forget_faces()
        self._after_still = still
        tracks = self.tracks
        # Every frame, even with no track: lost tracks are remembered for a number of frames.
        tracks.update(self.mesh.run(image, [t.roi for t in tracks.tracks], mirror=self.config.mirror_check), image)
        self._since_detection += 1
        # A still, a video's first frame and a new shot are searched in full: every corner and turn (below). A
        # dim, noisy picture with no face can read as a cut every frame: a cut's full search comes at most once
        # a --redetect-interval.
        self._since_full_search += 1
        new_shot = tracks.cut and self._since_full_search >= self.config.redetect_interval
        thorough, self._first_search = still or new_shot or self._first_search, False
        if not tracks.tracks or (not tracks.full and self._since_detection >= self.config.redetect_interval):
            self._detect_new_faces(image, thorough)
        elif (tracks.cut or self._deferred) and not tracks.full:
            # A cut (the new shot's faces), or a face left for later as it came out from behind another:
            # looked for now too, besides the periodic search.
            self._detect_new_faces(image, thorough, periodic=False)
        return [(t.id, t.mesh, t.state) for t in tracks.tracks]

    def _describe(self, found: list[tuple[int, MeshResult, FaceState]], shape: tuple[int, ...], frame: int,
                  time_s: float, source: str, still: bool) -> FrameResult:
        """The second stage: each found face's 68 points, confidence, pose, blendshapes and gaze, smoothed."""
        # Read (and checked) again: the caller may change it between the worker's check and this frame's fit.
        camera = camera_for((shape[1], shape[0]), self.config.checked_focal())
        if self.config.smooth:
            self._note_long_steps(time_s, still)
        faces = []
        predictions = self.mapping.predict_batch([mesh for _, mesh, _ in found])
        for (face_id, mesh, state), prediction in zip(found, predictions):
            rel = assess(prediction, mesh.roi, self.calibration) if prediction.mirror is not None else None
            landmarks = rel.landmarks if rel else crop_points_to_image(prediction.direct, mesh.roi, MESH_INPUT)
            visibility = rel.visibility if rel else prediction.visibility
            expression = rel.expression if rel else prediction.expression
            # A point beyond the frame edge is placed by extrapolation (the crop repeats the edge's pixels,
            # which the refiner reads as visible face): it is not seen, so it is neither visible nor trusted.
            outside = outside_image(landmarks, shape)
            if visibility is not None:
                visibility = np.where(outside, 0.0, visibility)
            confidence = None if rel is None else np.where(outside, 0.0, rel.confidence)
            hidden = outside if visibility is None else outside | (visibility < HIDDEN_BELOW)
            # A caller keeping its results would otherwise hold every frame's crops and maps.
            face = FaceResult(id=face_id, bbox=np.zeros(4), score=mesh.presence, landmarks=landmarks,
                              mesh=mesh.detached(),
                              landmark_visibility=visibility)
            if confidence is not None:
                face.landmark_confidence = confidence
            if self.fitter is not None:
                observations = self.fitter.observations(landmarks, mesh.points)
                weights = np.ones(len(observations))
                if confidence is not None:  # jaw landmarks count by their confidence (a floor keeps the fit posed)
                    weights[:JAW_ROWS] = np.maximum(confidence[:JAW_ROWS], FIT_WEIGHT_FLOOR)
                # A point beyond the frame edge is extrapolated: it counts at the floor too. Judged by the head's turn
                # from its line of sight (tools/evaluate_hard_cases.py, the same faces uncut as the reference),
                # afw faces with a fifth cut off at a side read turned towards the cut by 3.0-3.2° on average, 3.5-3.7°
                # with those points in full; a third cut off 4.6-5.4° against 5.9-6.7°. (Compared in the camera's
                # axes, which cutting a picture moves, it had looked the other way round: 6.8° against 8.3°.)
                weights[outside_image(observations[:, :2], shape)] = FIT_WEIGHT_FLOOR
                # A new track's fit starts from the refiner's 3D branch (its camera) when there is one.
                start = None
                if state.fit is None and prediction.camera is not None:
                    start = crop_camera_to_image(prediction.camera, mesh.roi, MESH_INPUT)
                fit = self.fitter.fit(observations, camera, weights, state=state.fit, expression_hint=expression,
                                      initial_camera=start)
                if fit.ok:
                    state.fit = fit.state
                face.fit_ok = fit.ok
                face.occluded = fit.self_occluded | hidden
                face.pose = head_pose(fit.state)
                weights = self.expression_calibration.apply(fit.state.expression, face.pose.yaw)
                face.blendshapes = dict(zip(self.fitter.model.names, weights.tolist()))
                if fit.ok:  # a failed fit keeps the previous pose and weights: they are not rated
                    face.pose_signal = pose_signal(fit.rms, outside)
                    if self.pose_error_calibration is not None:
                        face.pose.expected_error_deg = self.pose_error_calibration.expected_deg(
                            face.pose_signal, tracked=not still)
                    if rel is not None and rel.expression_disagreement is not None:
                        face.blendshape_signal = blendshape_signal(rel.expression_disagreement, confidence, outside)
                        if self.blendshape_error_calibration is not None:
                            face.blendshapes_error = self.blendshape_error_calibration.expected(
                                face.blendshape_signal, tracked=not still)
                if self.gaze is not None:
                    # The face model's eyeLook shapes only move the lids; the eyes' turn comes from the irises.
                    # Shut or turned-away eyes show none, nor does a failed fit: the track keeps the last gaze,
                    # so a blink is no jump.
                    if fit.ok:
                        state.gaze = self.gaze.estimate(iris_points(mesh), landmarks, fit.state, camera,
                                                    facing=~face.occluded) or state.gaze
                    face.blendshapes.update(look_weights(state.gaze))
                    face.gaze = state.gaze
            elif visibility is not None:
                face.occluded = hidden
            if self.config.smooth and not still:
                _smooth(face, state.smoother, time_s, gaze=self.gaze is not None)
                # Smoothing moves the points written: one it takes beyond the edge is as unseen as one measured
                # there (and one measured there stays flagged, though the filter's lag may hold it inside).
                moved_out = outside_image(face.landmarks, shape) & ~outside
                if moved_out.any():
                    for name in ("landmark_visibility", "landmark_confidence"):
                        if getattr(face, name) is not None:
                            setattr(face, name, np.where(moved_out, 0.0, getattr(face, name)))
                    if face.occluded is not None:
                        face.occluded = face.occluded | moved_out
            # The box holds the whole face: the mesh (forehead) and the 68 points (jaw contour).
            face.bbox = points_box(np.concatenate([face.landmarks, mesh.points[:, :2]]))
            faces.append(face)
        return FrameResult(frame=frame, time_s=time_s, source=source, faces=faces)

    def _note_long_steps(self, time_s: float, still: bool) -> None:
        """Say once when frames keep coming further apart than smoothing bridges (each is then smoothed afresh)."""
        step = None if (still or self._last_time is None) else time_s - self._last_time
        self._last_time = None if still else time_s
        self._long_steps = self._long_steps + 1 if step is not None and step > MAX_GAP_S else 0
        if self._long_steps == LONG_STEPS_BEFORE_NOTE and not self._clock_noted:
            self._clock_noted = True
            # Worded for a video of a frame a second (the command line) as well as for a caller's clock in ms.
            log.warning("frames came %.3g s apart, %d in a row: further apart than smoothing bridges (%.1f s), so "
                        "they are not smoothed (a caller's time_s is read in seconds)", step, LONG_STEPS_BEFORE_NOTE,
                        MAX_GAP_S)

    def _detect_new_faces(self, image: np.ndarray, thorough: bool, periodic: bool = True) -> None:
        if periodic:
            self._since_detection = 0
        if thorough:
            self._since_full_search = 0
        # ``thorough``: every corner and turn; other searches take one corner and one turn each, round robin, for
        # each costs another detector run.
        # The frame's corners are searched too while the whole frame shows fewer faces than the tracker may hold
        # (a group photo's small faces; one face small in a large photo): all four in a thorough search, and when
        # looking for several faces, one in each other search.
        corners = CORNERS if thorough else ()
        if self.config.max_faces > 1:
            corners = corners or (self._next_corner,)
            self._next_corner = (self._next_corner + 1) % len(CORNERS)
        # The frame is searched turned too, for faces on their side or upside down (a photo or video without its
        # orientation tag, someone lying down). Once found, a face is tracked at whatever angle it turns to.
        turns = TURNS if thorough else (TURNS[self._next_turn],)
        self._next_turn = (self._next_turn + 1) % len(TURNS)
        meshes = self.detect_meshes(image, limit=self.config.max_faces - len(self.tracks.tracks), corners=corners,
                                    turns=turns)
        self._deferred = self.tracks.add(meshes, image)

    def detect_meshes(self, image: np.ndarray, limit: int, corners: tuple[int, ...] = (),
                      turns: tuple[int, ...] = ()) -> list[MeshResult]:
        """Detect faces not yet tracked and mesh them: the best found, up to ``limit`` that the mesh shows (with
        them come the meshes of better finds that show no face, which TrackSet.add passes over). Search the frame
        turned by ``turns`` too, and while the whole frame shows fewer faces than the tracker may hold
        (``max_faces``), its ``corners`` (FaceDetector.detect)."""
        tile_below = self.config.max_faces if corners else 0  # the whole frame's finds include tracked faces
        # A turned find comes with the upright finds it outscored (FaceDetector.detect): they are meshed too, for
        # the turned crop may show the mesh no face, or the finds be two faces. A turned find's mesh must show a
        # face beyond doubt (_meshed_groups); the tracks take the rest, one track a face (TrackSet.add: presence,
        # and a box that overlaps a track's is the same face).
        pending: list[list[Detection]] = []  # one face's finds each, its best first
        for d in self.detector.detect(image, tile_below=tile_below, corners=corners, turns=turns):
            if not self.tracks.is_new_face(d.bbox):
                continue
            outscored_by = next((face for face in pending if face[0].turn and not d.turn and same_face(d, face[0])),
                                None)
            if outscored_by is not None:
                outscored_by.append(d)
            else:
                pending.append([d])
        # Up to `limit` faces, the best found: a find ranks by its face's best find whose mesh was kept, and counts
        # when a mesh shows a face (presence). A turned find the mesh refused takes no place: with one face to
        # find, a blurred face in an audience found upside down at 0.77 and upright at 0.56 would otherwise crowd
        # out a find at 0.73, and a find that is no face the next one. The finds are meshed a few at a time, until
        # `limit` faces are kept and the next find ranks no higher than the least of them. Faces go best first
        # (without turns, the detector lists the corners' finds after the whole frame's).
        pending.sort(key=lambda face: -face[0].score)

        def shows_a_face(meshes: list[MeshResult]) -> bool:
            return any(m.presence >= self.config.presence_threshold for m in meshes)

        meshed: list[tuple[float, list[MeshResult]]] = []
        faces: list[float] = []  # the rank of each face kept, best first
        searched: list[list[Detection]] = []  # the faces meshed, in meshed's order
        while pending:
            wanted = limit - len(faces)
            if wanted <= 0:
                if limit <= 0 or pending[0][0].score <= faces[limit - 1]:
                    break
                wanted = 1
            batch, pending = pending[:wanted], pending[wanted:]
            searched.extend(batch)
            for rank, meshes in self._meshed_groups(image, batch):
                meshed.append((rank, meshes))
                if shows_a_face(meshes):
                    faces = sorted([*faces, rank], reverse=True)
        # A find that no mesh shows as a face may be a box the detector drew between two heads (multi_face, frames
        # 262-274: one box at 0.81-0.85 over the man in the centre and the woman beside him, refused by all three
        # passes; the corners' search found the two apart but took them for the refused box's face). A closer
        # look at a refused find (FaceDetector.closer_look) that finds two or more faces apart under it, none of
        # them a face this search kept, meshes them too (one alone is not taken: on multi_face's frames 23-26 a box
        # on a profile's hair and ear would be, which a third pass rescued at 0.98).
        room = limit - len(faces)
        kept: list[Detection] = []
        refused: list[Detection] = []
        for face, (_, meshes) in zip(searched, meshed, strict=True):
            (kept if shows_a_face(meshes) else refused).append(face[0])
        for box in refused:
            if room <= 0:
                break
            apart: list[Detection] = []  # best first
            for d in self.detector.closer_look(image, box.bbox):
                if (same_face(d, box) and self.tracks.is_new_face(d.bbox)
                        and not any(same_face(d, k) for k in apart + kept)):
                    apart.append(d)
            if len(apart) >= 2:
                kept += apart[:room]  # a second refused box over the same heads meshes them once
                rescued = self._meshed_groups(image, [[d] for d in apart[:room]])
                meshed.extend(rescued)
                room -= sum(shows_a_face(meshes) for _, meshes in rescued)
        meshed.sort(key=lambda found: -found[0])  # stable: finds of one score keep the detector's order
        return [m for _, meshes in meshed for m in meshes]

    def _meshed_groups(self, image: np.ndarray, faces: list[list[Detection]]) -> list[tuple[float, list[MeshResult]]]:
        """Each face's meshes (those a turned find's mesh passes, surest first) and the score of its best find
        among them."""
        detections = [d for face in faces for d in face]
        first = self.mesh.run(image, [roi_from_detection(d) for d in detections])
        # A second pass from the mesh's own ROI gives the crop that tracking mode
        # uses on later frames, which is also the crop the 68-point map was fitted on.
        second = self.mesh.run(image, [m.next_roi for m in first], mirror=self.config.mirror_check)
        # A find placed off its face (between two faces, in a dim crowd) gives a crop the mesh is unsure of; a
        # third pass, from where the second put the face, is kept where it shows a face beyond doubt. On
        # multi_face the woman on the right of the shot from frame 211 was found at 0.75-0.78 with its box 30 px
        # off her face: the two passes read 0.00-0.40, a third 0.94-0.99; in its faceless shot, a third pass
        # read 0.65 where no face was.
        # A third pass that lands on a tracked face is no new face (it would count toward the search's limit,
        # and the tracks refuse it).
        unsure = [i for i, m in enumerate(second) if m.presence < self.config.presence_threshold]
        third = self.mesh.run(image, [second[i].next_roi for i in unsure], mirror=self.config.mirror_check)
        rescued_least = max(self.config.presence_threshold, RESCUED_MIN_PRESENCE)
        for i, m in zip(unsure, third):
            if m.presence >= rescued_least and self.tracks.is_new_face(points_box(m.points)):
                second[i] = m
        meshes = iter(second)
        # A turned search's find must show the mesh a face beyond doubt: an upright face in a crop turned upside
        # down read 0.55, a blurred-out face in a crop turned on its side 0.67-0.83, real faces 0.99 or more.
        turned_least = max(self.config.presence_threshold, TURNED_MIN_PRESENCE)
        groups = []
        for face in faces:
            group = [(d, next(meshes)) for d in face]
            # Of one face's meshes (a turned find's and those of the upright finds it outscored), the one most sure
            # it shows a face goes first and starts the face's track (TrackSet.add: one track a face), compared in
            # log-odds, where near-certain meshes still differ; a turned one only when surer by
            # TURNED_LOGIT_MARGIN. An upside-down face meshed from its upright find read 0.9995 (log-odds 7.6),
            # from its turned find 1 - 3e-12 (26). A profile can score higher turned and still be read better
            # upright: a render at 55° of yaw read 0.988 (4.4) and points 0.20 eye distances off from its turned
            # find, 0.9999 (9.2) and 0.09 upright; at 46°, log-odds 16.5 and 15.1, points 0.074 and 0.057 off.
            group = [(d, m) for d, m in group if not d.turn or m.presence >= turned_least]
            group.sort(key=lambda found: TURNED_LOGIT_MARGIN * bool(found[0].turn) - _log_odds(found[1].presence))
            groups.append((max((d.score for d, _ in group), default=0.0), [m for _, m in group]))
        return groups


def _log_odds(probability: float) -> float:
    """log(p / (1 - p)), kept finite: a mesh's presence can round to 1. Beyond 1 - 1e-15 (log-odds 34.5) all
    compare equal, and detect_meshes then keeps the upright find's mesh first."""
    p = min(max(probability, 1e-15), 1.0 - 1e-15)
    return math.log(p / (1.0 - p))


@contextmanager
def _blamed_on(model: str) -> Iterator[None]:
    """A network failing on warm_up's test frame, as a BackendError naming its file."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a runtime fails on bad weights in its own words
        raise BackendError(f"{model} failed on a test frame ({runtime_said(exc)}); the file may be damaged: "
                           "reinstall the face tracker") from None


def _require_finite(values: list[np.ndarray]) -> None:
    if not all(np.isfinite(v).all() for v in values):
        raise ValueError("it gave numbers that are not finite")


def _frame_arguments(frame: object, time_s: object, source: object, still: object) -> tuple[int, float, str, bool]:
    """process()'s frame number, time, source name and still flag as int, float, str and bool, or a ValueError (as
    README promises for bad arguments) that says what they must be."""
    whole = isinstance(frame, numbers.Integral) or (isinstance(frame, numbers.Real) and float(frame).is_integer())
    if not whole or isinstance(frame, bool):  # 3.0 is taken: cv2's CAP_PROP_POS_FRAMES is a float
        raise ValueError(f"frame must be a whole number, got {frame!r}")
    if not _finite_number(time_s):
        raise ValueError(f"time_s must be a finite number of seconds, got {time_s!r}")
    if not isinstance(source, (str, os.PathLike)):  # written into every record as text
        raise ValueError(f"source must be a name or path (str), got {source!r}")  # noqa: TRY004 -- as README says
    if not isinstance(still, (bool, np.bool_)):  # a string such as "no" would read as True
        raise ValueError(f"still must be True or False, got {still!r}")  # noqa: TRY004 -- as README says
    return int(frame), float(time_s), os.fsdecode(source), bool(still)


def _bgr8(image: np.ndarray) -> np.ndarray:
    if image is None or isinstance(image, (str, bytes, os.PathLike)):
        raise ValueError(f"an image is a NumPy array (H×W×3 BGR, or grey, BGRA, 16-bit, float), not {image!r}: read "
                         "a file with cv2.imread or tracker.sources.open_source")
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size:
        return image
    if np.issubdtype(image.dtype, np.floating) and image.size:
        # Float pixels hold 0..1: a 0..255 picture in floats would be clipped to white and show no face, one in
        # -1..1 would lose its dark half. Half a grey level beyond is let through (rounding in the caller's
        # arithmetic); NaN is black.
        known = ~np.isnan(image)
        low, high = np.min(image, initial=0.0, where=known), np.max(image, initial=0.0, where=known)
        if low < -0.5 / 255.0 or high > 1.0 + 0.5 / 255.0:
            raise ValueError(f"a float image holds values in [0, 1], this one spans {float(low):g} to {float(high):g}: "
                             "divide a 0-255 picture by 255, or pass it as uint8")
    return to_bgr8(image)


def _smooth(face: FaceResult, smoother: FaceSmoother, time_s: float, gaze: bool = False) -> None:
    """Replace the face's outputs by their smoothed values; the fit keeps its raw state. With ``gaze`` the
    gaze is smoothed too (tracker.gaze.smooth_gaze) and the eyeLook weights are made from the smoothed gaze."""
    pose = face.pose
    eyes = float(np.linalg.norm(face.landmarks[36] - face.landmarks[45]))
    names = list(face.blendshapes) if face.blendshapes is not None else []
    landmarks, quat, translation, expression = smoother(
        time_s, face.landmarks, eyes,
        rotation_quat=None if pose is None else pose.quaternion,
        translation=None if pose is None else pose.translation_mm,
        expression=None if face.blendshapes is None else np.array(list(face.blendshapes.values())),
        confidence=face.landmark_confidence)
    face.landmarks = landmarks
    if pose is not None:
        rotation = quaternion_to_matrix(quat)
        yaw, pitch, roll = matrix_to_euler(rotation)
        face.pose = Pose(yaw=yaw, pitch=pitch, roll=roll, quaternion=quat, translation_mm=translation,
                         rotation=rotation, expected_error_deg=pose.expected_error_deg)
    if expression is not None:
        face.blendshapes = dict(zip(names, expression.tolist()))
    if gaze:
        face.gaze = smooth_gaze(smoother, time_s, face.gaze)
        if face.blendshapes is not None:  # the eyeLook weights are the smoothed gaze's, not smoothed apart
            face.blendshapes.update(look_weights(face.gaze))
