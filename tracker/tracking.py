"""Per-face tracks: identity, the ROI the next frame is cropped from, and overlap rules.

No models here: the pipeline feeds each track its new mesh, and this module
decides which tracks live, which detections are new faces, and which IDs they get.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracker.detector import box_iou
from tracker.fitting import FitState
from tracker.mesh import MeshResult, roi_from_mesh
from tracker.roi import Roi
from tracker.smoothing import FaceSmoother

# A detection overlapping a live track this much is that track's face, not a new one.
NEW_FACE_MAX_IOU = 0.3
# Two tracks overlapping this much have converged onto one face: the younger one goes.
DUPLICATE_IOU = 0.5
# A lost track is remembered this many frames; a face found again near it takes back its ID and fit.
REMEMBER_FRAMES = 30


@dataclass
class Track:
    id: int
    mesh: MeshResult
    frames: int = 1
    fit: FitState | None = None  # the 3D fit of the last frame: warm start and held identity
    lost_at: int = 0  # frame counter when it was lost (for remembered tracks)
    smoother: FaceSmoother = field(default_factory=FaceSmoother)  # output smoothing state

    @property
    def roi(self) -> Roi:
        return roi_from_mesh(self.mesh.points)

    @property
    def bbox(self) -> np.ndarray:
        pts = self.mesh.points[:, :2]
        return np.concatenate([pts.min(0), pts.max(0)])


class TrackSet:
    def __init__(self, max_faces: int, min_presence: float) -> None:
        self.max_faces = max_faces
        self.min_presence = min_presence
        self.tracks: list[Track] = []
        self.lost: list[Track] = []  # recently lost tracks, newest last
        self._next_id = 1
        self._frame = 0

    def clear(self) -> None:
        self.tracks = []
        self.lost = []

    @property
    def full(self) -> bool:
        return len(self.tracks) >= self.max_faces

    def update(self, meshes: list[MeshResult]) -> None:
        """Give each track (in order) its new mesh; tracks whose face is gone are remembered a while."""
        self._frame += 1
        kept = []
        for track, mesh in zip(self.tracks, meshes):
            if mesh.presence >= self.min_presence:
                track.mesh = mesh
                track.frames += 1
                kept.append(track)
            else:
                self._remember(track)
        self.tracks = self._without_duplicates(kept)
        self.lost = [t for t in self.lost if self._frame - t.lost_at <= REMEMBER_FRAMES]

    def _remember(self, track: Track) -> None:
        track.lost_at = self._frame
        self.lost.append(track)

    def is_new_face(self, bbox: np.ndarray) -> bool:
        if not self.tracks:
            return True
        boxes = np.stack([t.bbox for t in self.tracks])
        return bool(box_iou(np.asarray(bbox, np.float64), boxes).max() <= NEW_FACE_MAX_IOU)

    def add(self, meshes: list[MeshResult]) -> None:
        """Start tracks for new faces, up to max_faces."""
        for mesh in meshes:
            if self.full:
                break
            if mesh.presence < self.min_presence:
                continue
            track = Track(id=self._next_id, mesh=mesh)
            if not self.is_new_face(track.bbox):
                continue
            returning = self._recently_lost_at(track.bbox)
            if returning is not None:
                # The same face after a short miss: its ID, identity and warm start carry on.
                self.lost.remove(returning)
                returning.mesh = mesh
                returning.frames += 1
                self.tracks.append(returning)
                continue
            self._next_id += 1
            self.tracks.append(track)

    def _recently_lost_at(self, bbox: np.ndarray) -> Track | None:
        """The most recently lost track whose last box overlaps ``bbox`` well, if any."""
        for track in reversed(self.lost):
            if box_iou(np.asarray(bbox, np.float64), track.bbox[None])[0] > NEW_FACE_MAX_IOU:
                return track
        return None

    @staticmethod
    def _without_duplicates(tracks: list[Track]) -> list[Track]:
        # Tracks are kept oldest first, so the earlier one of an overlapping pair wins.
        kept: list[Track] = []
        for track in tracks:
            if all(box_iou(track.bbox, k.bbox[None])[0] <= DUPLICATE_IOU for k in kept):
                kept.append(track)
        return kept
