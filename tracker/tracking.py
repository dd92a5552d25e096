"""Per-face tracks: identity, the ROI the next frame is cropped from, and overlap rules.

No models here: the pipeline feeds each track its new mesh (and the frame it came from),
and this module decides which tracks live, which detections are new faces, and which IDs
they get. A face lost briefly takes its ID back when found again near its last box; a face
gone for longer, or back somewhere else, takes it back when its colour appearance matches
(a hue-saturation histogram of the upright face crop, see :func:`appearance`). At a cut in
the video (the whole frame changes at once, see :func:`frame_signature`), a tracked face whose
appearance is clearly someone else's ends its track and starts its own. When faces cross, a
track whose crop has become the face in front is lost behind that face; a face coming out from
behind it is added once clear of it, and takes back the ID of the track lost there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from tracker.detector import box_iou
from tracker.fitting import FitState
from tracker.mesh import MeshResult
from tracker.roi import Roi, crop, follow
from tracker.smoothing import FaceSmoother
from tracker.types import Gaze

# A tracked face's next crop moves only as far as it must to stay within this band of where this frame's
# points put it (a fraction of the crop's side for the centre and the side, radians for the angle): a still
# face keeps a still crop, a moving one drags it along. On the stillest talking clips of ../shared/data/video
# it lowers the unsmoothed landmark jitter by 12-18%; wider bands make a moving face's crop trail it and its
# landmarks read worse (BENCHMARKS.md, "Jitter and lag").
ROI_BAND = 0.005
# A detection overlapping a live track this much is that track's face, not a new one.
NEW_FACE_MAX_IOU = 0.3
# Two tracks overlapping this much have converged onto one face: one of them goes.
DUPLICATE_IOU = 0.5
# A lost track is remembered this many frames; a face found again near it takes back its ID and fit.
REMEMBER_FRAMES = 30
# A lost track whose appearance is known is remembered this long (~10 s at 30 fps), at most
# REMEMBER_MAX of them; a face anywhere whose appearance matches takes back its ID.
REID_FRAMES = 300
REMEMBER_MAX = 16
# Appearance distance (Hellinger, 0..1) under which a new face is a remembered one. Measured on
# ../shared/data/video: same person 0.23 at most (talking clips, 2-5 s apart, and three people in
# one shot of multi_face), different people 0.31 at least. A zoom from a wide to a close shot
# reaches 0.29 for the same person: such a face gets a new ID rather than someone else's.
REID_MAX_DISTANCE = 0.27
# Near its old box, a face clearly someone else's does not take a briefly lost track's ID; at a cut it
# does not keep a live track's either. Not REID_MAX_DISTANCE: a pan of a tenth of the frame in one
# frame can pass for a cut, and blur then moves the same face's appearance by up to 0.30.
NOT_SAME_DISTANCE = 0.45
# A frame whose signature correlates less than this with the previous frame's is a cut. Measured on
# ../shared/data/video: 0.64 at least between frames of one shot (talking_d12's fast motion), 0.00-0.26
# at multi_face's three cuts; a sudden change of exposure or white balance keeps it at 0.98 or more (an
# appearance histogram alone would take such a change for another person).
CUT_MAX_CORRELATION = 0.5
_SIGNATURE = (32, 32)
_FLAT = 2.0  # grey levels: a border row or column varying less is a bar (letterbox), a frame this flat has no layout
APPEARANCE_RATE = 0.1  # weight of each new frame in a track's running appearance

_CROP = 64  # the upright ROI crop the appearance is measured on; the face fills its middle
_FACE = (slice(10, 54), slice(12, 52))
_BINS = [32, 16]  # hue × saturation


def frame_signature(image: np.ndarray) -> np.ndarray | None:
    """The frame's coarse grey layout, zero mean and unit norm, or None for a flat frame: the dot
    product of two is their correlation, which gain and offset (exposure, white balance) leave
    unchanged. Flat bars at the borders (letterbox, pillarbox) are left out: their fixed pattern would
    make different shots look alike."""
    # Point samples first, then averages: 0.09 ms a frame at 512 px or 1080p, where averaging the whole
    # 1080p frame costs 6 ms.
    sampled = cv2.resize(image, (4 * _SIGNATURE[0], 4 * _SIGNATURE[1]), interpolation=cv2.INTER_NEAREST)
    if sampled.ndim == 3:
        sampled = cv2.cvtColor(sampled, cv2.COLOR_BGR2GRAY)
    grey = sampled.astype(np.float32)
    rows = np.flatnonzero(np.ptp(grey, axis=1) > _FLAT)
    cols = np.flatnonzero(np.ptp(grey, axis=0) > _FLAT)
    if len(rows) < 4 or len(cols) < 4:
        return None
    content = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    small = cv2.resize(content, _SIGNATURE, interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return None if norm < _FLAT * np.sqrt(small.size) / 4 else small / norm


class ShotCuts:
    """Tells cuts in a stream of frames: the correlation of each frame's signature with the last
    frame's that had one. A flat frame (black, say) tells nothing: no cut into or out of it."""

    def __init__(self) -> None:
        self._last: np.ndarray | None = None  # the signature of the last frame that had a layout

    def reset(self) -> None:
        self._last = None

    def correlation(self, image: np.ndarray) -> float | None:
        """This frame's layout correlation with the last non-flat frame's; None if either is flat or
        there was none."""
        signature = frame_signature(image)
        value = None if signature is None or self._last is None else float(signature @ self._last)
        if signature is not None:
            self._last = signature
        return value

    def is_cut(self, image: np.ndarray) -> bool:
        value = self.correlation(image)
        return value is not None and value < CUT_MAX_CORRELATION


def appearance(image: np.ndarray, roi: Roi) -> np.ndarray:
    """Hue-saturation histogram (sums to 1) of the face in ``roi``: scale- and roll-free."""
    face = crop(image, roi, _CROP)[_FACE]
    hist = cv2.calcHist([cv2.cvtColor(face, cv2.COLOR_BGR2HSV)], [0, 1], None, _BINS, [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance between two appearance histograms: 0 same, 1 disjoint."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(a * b).sum()))))


def points_box(points: np.ndarray) -> np.ndarray:
    """[x0, y0, x1, y1] around points (their first two columns)."""
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


@dataclass
class FaceState:
    """What the stages after the mesh carry from frame to frame for one face. Only they change it; a face
    that starts afresh is given a new one, never a cleared one, so a frame still being described
    (FaceTracker.process_stream) keeps the state it started with."""

    smoother: FaceSmoother = field(default_factory=FaceSmoother)  # output smoothing state
    fit: FitState | None = None  # the 3D fit of the last frame: warm start and held identity
    gaze: Gaze | None = None  # the last gaze its eyes showed: held while they are shut


@dataclass
class Track:
    id: int
    mesh: MeshResult
    frames: int = 1
    run_order: int = 0  # the order its unbroken run began in: tracks are listed by it, tracked longest first
    lost_at: int = 0  # frame counter when it was lost (for remembered tracks)
    hidden_by: int | None = None  # the ID of the face it was lost behind, if it was lost behind one
    state: FaceState = field(default_factory=FaceState)  # the fit, gaze and smoothing carried on
    appearance: np.ndarray | None = None  # running appearance histogram (None without images)

    @property
    def roi(self) -> Roi:
        """The ROI the next frame is cropped from: this frame's, following its points within ROI_BAND."""
        return follow(self.mesh.roi, self.mesh.next_roi, ROI_BAND)

    @property
    def bbox(self) -> np.ndarray:
        return points_box(self.mesh.points)

    def _see(self, seen: np.ndarray | None) -> None:
        if seen is not None:
            a = self.appearance
            self.appearance = seen if a is None else (1 - APPEARANCE_RATE) * a + APPEARANCE_RATE * seen

    def _distance(self, seen: np.ndarray | None) -> float | None:
        return None if seen is None or self.appearance is None else appearance_distance(self.appearance, seen)


class TrackSet:
    def __init__(self, max_faces: int, min_presence: float,
                 make_smoother: Callable[[], FaceSmoother] = FaceSmoother) -> None:
        self.max_faces = max_faces
        self.min_presence = min_presence
        self.make_smoother = make_smoother  # each new track's output smoothing
        self.tracks: list[Track] = []
        self.lost: list[Track] = []  # lost tracks, newest last; never holds a live track
        self._next_id = 1
        self._runs = 0  # unbroken runs of tracking begun so far
        self._frame = 0
        self._cuts = ShotCuts()
        # The last update's frame does not continue the one before (a cut): the new shot's faces are
        # worth looking for at once.
        self.cut = False

    def clear(self) -> None:
        self.tracks = []
        self.lost = []
        self._cuts.reset()
        self.cut = False

    @property
    def full(self) -> bool:
        return len(self.tracks) >= self.max_faces

    def update(self, meshes: list[MeshResult], image: np.ndarray | None = None) -> None:
        """Give each track (in order) its new mesh; tracks whose face is gone are remembered a while.

        With ``image`` (the frame the meshes come from) tracks learn their appearance, which
        decides converged pairs and lets a face gone for long take its ID back; and a cut is told
        apart (:attr:`cut`): there, a face in a track's crop that is clearly someone else's ends the
        track and starts its own. A flat frame (black, say) tells nothing: no cut into or out of it."""
        self._frame += 1
        if image is None:
            self._cuts.reset()  # nothing seen: the next frame with an image starts afresh
        self.cut = image is not None and self._cuts.is_cut(image)
        present = [(track, mesh) for track, mesh in zip(self.tracks, meshes) if mesh.presence >= self.min_presence]
        boxes = [points_box(mesh.points) for _, mesh in present]
        for track, mesh in zip(self.tracks, meshes):
            if mesh.presence < self.min_presence:
                # Gone where another face is: hidden behind it rather than gone.
                self._remember(track, next((other.id for (other, _), box in zip(present, boxes)
                                            if box_iou(track.bbox, box[None])[0] > 0), None))
        kept, seen = [], []
        someone_else: list[tuple[MeshResult, np.ndarray | None]] = []  # at a cut, with their appearances
        for i, (track, mesh) in enumerate(present):
            s = None if image is None else appearance(image, mesh.next_roi)
            d = track._distance(s)
            if d is not None and d > NOT_SAME_DISTANCE:
                if self.cut:
                    self._remember(track)
                    someone_else.append((mesh, s))
                    continue
                front = next((other for j, (other, _) in enumerate(present)
                              if j != i and box_iou(boxes[i], boxes[j][None])[0] > 0), None)
                if front is not None:
                    # Its crop is mostly the face in front of it (faces crossing): the mesh still sees a
                    # face there and would drag the track onto it. Lost until it shows again.
                    self._remember(track, front.id)
                    continue
            track.mesh = mesh
            track.frames += 1
            kept.append(track)
            seen.append(s)
        kept_seen = self._without_duplicates(kept, seen)
        self.tracks = [t for t, _ in kept_seen]
        for track, s in kept_seen:
            # A crop reaching another face (crossing) would learn that face's colours too.
            reach = np.array(track.roi.bbox())
            if not any(box_iou(reach, t.bbox[None])[0] > 0 for t in self.tracks if t is not track):
                track._see(s)
        self.lost = [t for t in self.lost if self._frame - t.lost_at <= REMEMBER_FRAMES
                     or (t.appearance is not None and self._frame - t.lost_at <= REID_FRAMES)][-REMEMBER_MAX:]
        # After the live tracks, so a face that is new here cannot take one of theirs; one seen before
        # (a cut back to it) takes its ID back as any returning face does.
        self.add([m for m, _ in someone_else], image, appearances=[s for _, s in someone_else])

    def _remember(self, track: Track, hidden_by: int | None = None) -> None:
        # A lost track needs its points and box, not its last frame's crops and feature maps: those are views
        # into that frame's whole batch (about 0.9 MB a crop), which up to REMEMBER_MAX lost tracks kept alive.
        track.mesh = track.mesh.detached()
        track.lost_at = self._frame
        track.hidden_by = hidden_by
        self.lost.append(track)

    def is_new_face(self, bbox: np.ndarray) -> bool:
        if not self.tracks:
            return True
        boxes = np.stack([t.bbox for t in self.tracks])
        return bool(box_iou(np.asarray(bbox, np.float64), boxes).max() <= NEW_FACE_MAX_IOU)

    def add(self, meshes: list[MeshResult], image: np.ndarray | None = None,
            appearances: list[np.ndarray | None] | None = None) -> bool:
        """Start tracks for new faces, up to max_faces; a face seen before takes back its ID.

        ``appearances``: the meshes' appearances in ``image`` when already measured (else measured here).
        Returns whether a face was left out for now because it still overlaps a tracked one."""
        deferred = False
        for k, mesh in enumerate(meshes):
            if self.full:
                break
            if mesh.presence < self.min_presence:
                continue
            track = Track(id=self._next_id, mesh=mesh, state=FaceState(self.make_smoother()))
            if not self.is_new_face(track.bbox):
                continue
            if image is not None and any(box_iou(track.bbox, t.bbox[None])[0] > 0 for t in self.tracks):
                # Still partly behind a tracked face: its crop's colours are mixed with that face's, so
                # who it is cannot be told yet.
                deferred = True
                continue
            if appearances is not None:
                seen = appearances[k]
            else:
                seen = None if image is None else appearance(image, track.roi)
            returning = self._recently_lost_at(track.bbox, seen)
            if returning is not None:
                # The same face after a short miss: its ID, identity and warm start carry on.
                self._revive(returning, mesh, seen)
                continue
            returning = self._hidden_near(track.bbox, seen)
            if returning is None:
                returning = self._lost_like(seen)
            if returning is not None:
                # The same face after a long absence or elsewhere: its ID carries on; the fit restarts
                # (a warm start from a pose long gone could fail to converge) and so does smoothing.
                returning.state = FaceState(self.make_smoother())
                self._revive(returning, mesh, seen)
                continue
            track._see(seen)
            track.run_order = self._new_run()
            self._next_id += 1
            self.tracks.append(track)
        return deferred

    def _new_run(self) -> int:
        self._runs += 1
        return self._runs

    def _revive(self, track: Track, mesh: MeshResult, seen: np.ndarray | None) -> None:
        # Out of the lost list before anyone else can match it; by identity (list.remove compares tracks field by
        # field, arrays included).
        self.lost = [t for t in self.lost if t is not track]
        track.mesh = mesh
        track.frames += 1
        track._see(seen)
        if track.lost_at != self._frame:
            track.run_order = self._new_run()  # back after frames without it
        # Lost and found in one frame (a periodic search finds the face its mesh doubted), it never left a result, so it
        # keeps its place: the first face drives an avatar (tracker.avatar), which must not switch to another here.
        self.tracks.append(track)
        self.tracks.sort(key=lambda t: t.run_order)

    def _recently_lost_at(self, bbox: np.ndarray, seen: np.ndarray | None) -> Track | None:
        """The most recently lost track (in the last REMEMBER_FRAMES) whose last box overlaps
        ``bbox`` well, unless its appearance is clearly someone else's."""
        for track in reversed(self.lost):
            if self._frame - track.lost_at > REMEMBER_FRAMES:
                continue
            if box_iou(np.asarray(bbox, np.float64), track.bbox[None])[0] > NEW_FACE_MAX_IOU:
                d = track._distance(seen)
                if d is None or d <= NOT_SAME_DISTANCE:
                    return track
        return None

    def _hidden_near(self, bbox: np.ndarray, seen: np.ndarray | None) -> Track | None:
        """A track lost behind a live face in the last REMEMBER_FRAMES, when ``bbox`` comes out beside
        that face (within its crop), unless its appearance is clearly someone else's. It may come out on
        either side, and its first frames out still show some of the face in front: so neither its old
        box nor the REID_MAX_DISTANCE match, which need a clear view, would take it back."""
        for track in reversed(self.lost):
            if track.hidden_by is None or self._frame - track.lost_at > REMEMBER_FRAMES:
                continue
            front = next((t for t in self.tracks if t.id == track.hidden_by), None)
            if front is not None and box_iou(np.array(front.roi.bbox()), bbox[None])[0] > 0:
                d = track._distance(seen)
                if d is None or d <= NOT_SAME_DISTANCE:
                    return track
        return None

    def _lost_like(self, seen: np.ndarray | None) -> Track | None:
        """The lost track whose appearance is nearest ``seen``, if within REID_MAX_DISTANCE."""
        best, best_d = None, REID_MAX_DISTANCE
        for track in self.lost:
            d = track._distance(seen)
            if d is not None and d <= best_d:
                best, best_d = track, d
        return best

    def _without_duplicates(self, tracks: list[Track], seen: list) -> list[tuple[Track, np.ndarray | None]]:
        """Drop all but one of tracks that converged onto one face; the dropped ones are remembered.

        The face stays with the track whose appearance it matches best (faces crossing each
        other); without appearances, with the track listed first (tracked longest)."""
        kept: list[tuple[Track, np.ndarray | None]] = []
        for track, s in zip(tracks, seen):
            clash = next((i for i, (k, _) in enumerate(kept) if box_iou(track.bbox, k.bbox[None])[0] > DUPLICATE_IOU),
                         None)
            if clash is None:
                kept.append((track, s))
                continue
            other = kept[clash][0]
            d_new, d_old = track._distance(s), other._distance(s)
            if d_new is not None and d_old is not None and d_new < d_old:
                kept[clash] = (track, s)
                self._remember(other)
            else:
                self._remember(track)
        return kept
