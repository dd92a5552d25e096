"""Track bookkeeping without models: IDs, loss, duplicates, capacity."""

import cv2
import numpy as np
import pytest

from tracker.mesh import MeshResult, roi_from_mesh
from tracker.roi import Roi
from tracker.tracking import CUT_MAX_CORRELATION, REMEMBER_FRAMES, ROI_BAND, TrackSet, frame_signature


def mesh_at(cx: float, cy: float, size: float = 40.0, presence: float = 0.9) -> MeshResult:
    pts = np.random.default_rng(int(cx * 7 + cy)).uniform(-0.5, 0.5, size=(468, 3)) * size
    pts[:, 0] += cx
    pts[:, 1] += cy
    # Eye corners level so the next ROI is upright.
    pts[33, :2] = (cx - 0.4 * size, cy)
    pts[263, :2] = (cx + 0.4 * size, cy)
    return MeshResult(roi=Roi(cx, cy, size * 1.5, 0.0), crop_points=pts, points=pts, presence=presence)


def test_ids_are_stable_and_new_faces_get_new_ids():
    tracks = TrackSet(max_faces=3, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(300, 100)])
    assert [t.id for t in tracks.tracks] == [1, 2]
    tracks.update([mesh_at(102, 101), mesh_at(298, 99)])
    assert [t.id for t in tracks.tracks] == [1, 2] and tracks.tracks[0].frames == 2
    # A detection on an existing face is not new; one elsewhere is.
    assert not tracks.is_new_face(np.array([85, 85, 120, 120]))
    assert tracks.is_new_face(np.array([500, 500, 540, 540]))
    tracks.add([mesh_at(500, 300)])
    assert [t.id for t in tracks.tracks] == [1, 2, 3] and tracks.full


def test_a_face_missed_briefly_keeps_its_id_and_state():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(300, 100)])
    tracks.tracks[0].state.fit = "fit state of face 1"
    tracks.tracks[0].state.gaze = "gaze of face 1"
    state = tracks.tracks[0].state
    tracks.update([mesh_at(100, 100, presence=0.1), mesh_at(300, 100)])
    assert [t.id for t in tracks.tracks] == [2]
    for _ in range(5):
        tracks.update([mesh_at(300, 100)])
    tracks.add([mesh_at(104, 98)])
    assert [t.id for t in tracks.tracks] == [2, 1] and tracks.tracks[1].state is state
    assert state.fit == "fit state of face 1" and state.gaze == "gaze of face 1"


def test_tracks_are_listed_tracked_longest_first_and_one_found_in_the_frame_it_was_lost_keeps_its_place():
    tracks = TrackSet(max_faces=3, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(300, 100), mesh_at(500, 100)])
    # The first face's mesh doubts it; the same frame's search finds it again: no result went without it.
    tracks.update([mesh_at(100, 100, presence=0.1), mesh_at(300, 100), mesh_at(500, 100)])
    assert [t.id for t in tracks.tracks] == [2, 3]
    tracks.add([mesh_at(102, 99)])
    assert [t.id for t in tracks.tracks] == [1, 2, 3]
    # Missed for a frame, it comes back behind the faces tracked all along.
    tracks.update([mesh_at(102, 99, presence=0.1), mesh_at(300, 100), mesh_at(500, 100)])
    tracks.update([mesh_at(300, 100), mesh_at(500, 100)])
    tracks.add([mesh_at(103, 99)])
    assert [t.id for t in tracks.tracks] == [2, 3, 1]
    # And a face new after that comes after it.
    tracks.update([mesh_at(300, 100), mesh_at(500, 100, presence=0.1), mesh_at(103, 99)])
    tracks.add([mesh_at(500, 400)])
    assert [t.id for t in tracks.tracks] == [2, 1, 4]


def test_a_face_gone_for_long_gets_a_new_id_and_ids_are_not_reused():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(300, 100)])
    tracks.update([mesh_at(100, 100, presence=0.1), mesh_at(300, 100)])
    for _ in range(REMEMBER_FRAMES + 1):
        tracks.update([mesh_at(300, 100)])
    tracks.add([mesh_at(100, 100)])
    assert [t.id for t in tracks.tracks] == [2, 3]
    # Somewhere else entirely, even right after a loss: a new face.
    tracks.update([mesh_at(300, 100, presence=0.1), mesh_at(100, 100)])
    tracks.add([mesh_at(600, 400)])
    assert [t.id for t in tracks.tracks] == [3, 4]


def test_converged_tracks_keep_the_older_one_and_capacity_holds():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(180, 100)])
    tracks.update([mesh_at(140, 100), mesh_at(141, 100)])  # both drifted onto one face
    assert [t.id for t in tracks.tracks] == [1]
    tracks.add([mesh_at(400, 100), mesh_at(600, 100), mesh_at(800, 100)])
    assert len(tracks.tracks) == 2


def test_next_roi_follows_the_mesh():
    roi = roi_from_mesh(mesh_at(200, 150).points)
    assert abs(roi.cx - 200) < 1 and abs(roi.cy - 150) < 1 and abs(roi.angle) < 1e-9


def test_a_still_face_keeps_its_crop_and_a_moving_one_drags_it():
    tracks = TrackSet(max_faces=1, min_presence=0.5)
    tracks.add([mesh_at(200, 150)])
    first = tracks.tracks[0].roi
    # The next frame is cropped there; its points wobble by less than the band: the crop stays.
    wobble = mesh_at(200, 150)
    wobble.points[:, :2] += 0.3 * ROI_BAND * first.size
    tracks.update([MeshResult(roi=first, crop_points=wobble.points, points=wobble.points, presence=0.9)])
    assert tracks.tracks[0].roi == first
    # The face moves 10 px: the crop follows to within the band of where the points put it.
    moved = mesh_at(210, 150)
    tracks.update([MeshResult(roi=first, crop_points=moved.points, points=moved.points, presence=0.9)])
    roi, target = tracks.tracks[0].roi, roi_from_mesh(moved.points)
    assert np.hypot(roi.cx - target.cx, roi.cy - target.cy) == pytest.approx(ROI_BAND * first.size)
    assert roi.cx > first.cx + 5


def scene(seed: int, shape: tuple[int, ...] = (360, 640, 3)) -> np.ndarray:
    """A random smooth scene (noise on a 60-px grid, interpolated): a layout of its own, as coarse as a
    real shot's."""
    noise = np.random.default_rng(seed).uniform(0, 255, (shape[0] // 60, shape[1] // 60, 3)).astype(np.float32)
    return cv2.resize(noise, shape[1::-1], interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def letterboxed(image: np.ndarray, bar: int = 70) -> np.ndarray:
    out = np.zeros((image.shape[0] + 2 * bar, *image.shape[1:]), np.uint8)
    out[bar:bar + image.shape[0]] = image
    return out


def test_a_cut_is_a_change_of_layout_not_of_exposure_or_colour():
    a, b = scene(1), scene(2)
    same = frame_signature(a)
    assert abs(float(same @ same) - 1.0) < 1e-9
    for gain, offset in (((1.0, 0.85, 1.3), 0.0), ((0.6, 0.6, 0.6), 20.0), ((1.4, 1.4, 1.4), -10.0)):
        lit = np.clip(a * np.float32(gain) + offset, 0, 255).astype(np.uint8)
        assert float(frame_signature(lit) @ same) > 0.98, gain
    assert float(frame_signature(b) @ same) < CUT_MAX_CORRELATION
    # A pan of 5% of the width in one frame is no cut; a greyscale frame has a signature too.
    assert float(frame_signature(np.roll(a, 32, axis=1)) @ same) > CUT_MAX_CORRELATION
    assert frame_signature(a[..., 0]).shape == same.shape
    # Letterbox bars are left out: they would make two different shots alike.
    assert float(frame_signature(letterboxed(a)) @ same) > 0.98
    assert float(frame_signature(letterboxed(b)) @ frame_signature(letterboxed(a))) < CUT_MAX_CORRELATION
    # A flat frame has no layout.
    assert frame_signature(np.zeros_like(a)) is None
    assert frame_signature(np.full_like(a, 200)) is None


def test_track_state_follows_cuts():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    a, b = scene(1), scene(2)
    tracks.update([], a)
    assert not tracks.cut  # the first frame has nothing to be cut from
    tracks.update([], a)
    assert not tracks.cut
    tracks.update([], b)
    assert tracks.cut
    # Black frames tell nothing: going into them is no cut, and after them the frame is compared
    # with the last one that had a layout.
    tracks.update([], np.zeros_like(a))
    assert not tracks.cut
    tracks.update([], b)
    assert not tracks.cut
    tracks.update([], np.zeros_like(a))
    tracks.update([], a)
    assert tracks.cut
    tracks.clear()
    assert not tracks.cut
    tracks.update([], a)
    assert not tracks.cut  # after clear() the next frame starts afresh
    tracks.update([], None)
    assert not tracks.cut  # without images there is no cut to see


def faces_image(*faces: tuple[float, float, tuple[int, int, int]], size: float = 40.0) -> np.ndarray:
    """Grey frame with flat coloured squares (BGR) as faces, later ones in front, each covering its
    mesh_at() box and a little more, so an ROI's face region sees only that colour."""
    image = np.full((360, 640, 3), 128, np.uint8)
    half = 0.6 * size
    for cx, cy, colour in faces:
        image[int(cy - half):int(cy + half), int(cx - half):int(cx + half)] = colour
    return image


RED, BLUE, GREEN = (30, 30, 220), (220, 60, 30), (40, 200, 40)


def test_a_face_covered_by_another_is_lost_behind_it_and_comes_out_under_its_own_id():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(300, 100)], faces_image((100, 100, RED), (300, 100, BLUE)))
    assert [t.id for t in tracks.tracks] == [1, 2]
    tracks.tracks[1].state.fit, tracks.tracks[1].state.gaze = "fit state of face 2", "gaze of face 2"
    old_state = tracks.tracks[1].state
    # The blue face walks behind the red one. While its crop still shows it, it is tracked.
    tracks.update([mesh_at(100, 100), mesh_at(160, 100)], faces_image((160, 100, BLUE), (100, 100, RED)))
    assert [t.id for t in tracks.tracks] == [1, 2]
    # Now its crop is all red face: the mesh still finds a face there (the red one), which must not
    # be reported as face 2. It is lost behind face 1.
    tracks.update([mesh_at(100, 100), mesh_at(115, 100)], faces_image((115, 100, BLUE), (100, 100, RED)))
    assert [t.id for t in tracks.tracks] == [1]
    assert [(t.id, t.hidden_by) for t in tracks.lost] == [(2, 1)]
    # It comes out on the far side, first still overlapping face 1: who it is waits (mixed colours).
    image = faces_image((65, 100, BLUE), (100, 100, RED))
    assert tracks.add([mesh_at(65, 100)], image) is True
    assert [t.id for t in tracks.tracks] == [1]
    # Clear of face 1's box, beside it and far from where it was lost: face 2 again.
    image = faces_image((45, 100, BLUE), (100, 100, RED))
    tracks.update([mesh_at(100, 100)], image)
    assert tracks.add([mesh_at(45, 100)], image) is False
    assert [t.id for t in tracks.tracks] == [1, 2]
    # Back from elsewhere: its ID carries on, but its fit and gaze start afresh, in a new state: a frame
    # still being described with the old one (FaceTracker.process_stream) keeps it as it was.
    assert tracks.tracks[1].state.fit is None and tracks.tracks[1].state.gaze is None
    assert tracks.tracks[1].state is not old_state and old_state.fit == "fit state of face 2"


def test_someone_else_beside_the_face_a_track_was_lost_behind_gets_a_new_id():
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(160, 100)], faces_image((160, 100, BLUE), (100, 100, RED)))
    tracks.update([mesh_at(100, 100), mesh_at(115, 100)], faces_image((115, 100, BLUE), (100, 100, RED)))
    assert [t.id for t in tracks.tracks] == [1] and tracks.lost[0].hidden_by == 1
    image = faces_image((45, 100, GREEN), (100, 100, RED))
    tracks.update([mesh_at(100, 100)], image)
    tracks.add([mesh_at(45, 100)], image)
    assert [t.id for t in tracks.tracks] == [1, 3]
    # Without images nothing is decided on appearance: overlapping tracks are both kept.
    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(100, 100), mesh_at(160, 100)])
    tracks.update([mesh_at(100, 100), mesh_at(115, 100)])
    assert [t.id for t in tracks.tracks] == [1, 2]


def test_each_new_track_gets_its_own_smoother_of_the_kind_asked_for():
    from functools import partial

    from tracker.smoothing import LANDMARK_PARAMS, STEADY_PARAMS, FaceSmoother

    tracks = TrackSet(max_faces=2, min_presence=0.5, make_smoother=partial(FaceSmoother, **STEADY_PARAMS))
    tracks.add([mesh_at(100, 100), mesh_at(300, 100)])
    a, b = tracks.tracks
    assert a.state.smoother is not b.state.smoother
    assert a.state.smoother.landmarks.min_cutoff == LANDMARK_PARAMS.min_cutoff / 2
    plain = TrackSet(1, 0.5)
    plain.add([mesh_at(100, 100)])
    assert plain.tracks[0].state.smoother.landmarks.min_cutoff == LANDMARK_PARAMS.min_cutoff


def test_converged_tracks_keep_the_one_whose_face_it_is():
    """Two tracks drift onto one face that both could be (neither clearly someone else): it stays with the
    track whose learnt appearance it matches better, even the newer one (without appearances the older
    keeps it, as above)."""
    def frame(*faces):
        image = np.full((300, 700, 3), 90, np.uint8)
        for cx, red_share in faces:  # stripes of red and green, red_share of them red
            stripes = (np.arange(70) % 10 < 10 * red_share)[:, None, None]
            image[115:185, cx - 35:cx + 35] = np.where(stripes, np.uint8([40, 40, 200]), np.uint8([40, 160, 40]))
        return image

    tracks = TrackSet(max_faces=2, min_presence=0.5)
    tracks.add([mesh_at(150, 150), mesh_at(550, 150)], frame((150, 0.8), (550, 0.3)))
    for _ in range(5):
        tracks.update([mesh_at(150, 150), mesh_at(550, 150)], frame((150, 0.8), (550, 0.3)))
    # Both drift onto a face 40% red: nearer the newer track's (ID 2) 30% than the older's 80%.
    tracks.update([mesh_at(350, 150), mesh_at(351, 150)], frame((350, 0.4)))
    assert [t.id for t in tracks.tracks] == [2]
    assert [t.id for t in tracks.lost] == [1]
