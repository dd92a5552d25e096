"""The face detector's search of the frame's corners for small faces (a group photo), on real afw faces."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from evaluate_hard_cases import faces_under

from tracker.detector import FaceDetector
from tracker.pipeline import FaceTracker, TrackerConfig


@pytest.fixture(scope="module")
def group_photo() -> tuple[np.ndarray, list[np.ndarray]]:
    """30 afw faces tiled 6 × 5 in 200 px cells (faces about 120 px wide on a 1200 × 1000 px picture)."""
    from evaluate_hard_cases import Sample, group_photo
    from landmark_data import LANDMARKS68, inter_ocular, load_folder

    folder = LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    faces = [i for i in load_folder(folder) if inter_ocular(i.points) >= 40][:30]
    return group_photo([Sample(i.image_path.name, cv2.imread(str(i.image_path)), i.points) for i in faces])


def test_a_group_photos_small_faces_are_found_in_the_frames_corners(group_photo) -> None:
    grid, truths = group_photo
    detector = FaceDetector("short", "onnxruntime", threads=1)
    whole = detector.detect(grid)
    searched = detector.detect(grid, tile_below=len(truths))
    # Measured: 7 from the whole frame, 28 with its corners.
    assert len(whole) <= 10 and len(searched) >= 25, (len(whole), len(searched))
    hits = faces_under([d.bbox for d in searched], truths)
    assert -1 not in hits and len(set(hits)) == len(hits)  # every find on a face, no face found twice
    for before, after in zip(whole, searched):  # the whole frame's finds come first, as they were
        np.testing.assert_array_equal(before.bbox, after.bbox)
    # Enough faces in the whole frame: its corners are not searched.
    assert len(detector.detect(grid, tile_below=len(whole))) == len(whole)


def test_the_tracker_searches_corners_only_when_looking_for_several_faces(group_photo) -> None:
    grid, truths = group_photo
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=30))
    still = tracker.process(grid, still=True).faces
    assert len(still) >= 25 and -1 not in faces_under([f.bbox for f in still], truths)
    # A video searches one corner a time, so the faces come in over the first searches.
    video = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=30, redetect_interval=1))
    counts = [len(video.process(grid, frame, frame / 30).faces) for frame in range(6)]
    assert counts[0] < counts[-1] and counts[-1] >= 25, counts
    one = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1)).process(grid, still=True).faces
    assert len(one) == 1


def test_a_small_face_beside_a_tracked_large_one_is_found_in_a_video(group_photo, talking_clip) -> None:
    """--max-faces 2, a large face tracked and a small one in a corner: the whole frame's find is the tracked
    face, one fewer than the tracker may hold, so the corners are still searched until the small face is found."""
    grid, truths = group_photo
    picture = np.full((1000, 1200, 3), 90, np.uint8)
    ok, frame = cv2.VideoCapture(str(talking_clip)).read()
    assert ok
    picture[100:700, 0:600] = cv2.resize(frame, (600, 600))  # a face about 250 px wide
    picture[800:1000, 1000:1200] = grid[800:1000, 1000:1200]  # afw face 30 of the grid, about 120 px wide
    small = truths[-1]  # the cell is at the same place in both pictures
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=2, redetect_interval=1))
    counts = []
    for k in range(8):
        faces = tracker.process(picture, k, k / 30).faces
        counts.append(len(faces))
    assert counts[0] == 1 and counts[-1] == 2, counts  # the small face only from its corner's search
    assert faces_under([f.bbox for f in faces], [small]).count(0) == 1


def test_corners_do_not_see_faces_in_smooth_noise() -> None:
    # Low-frequency noise where a corner, searched at 1.7 times the scale, showed 'faces' scoring 0.53-0.55
    # (a QA check's image, made again from its seed): a corner's finds must score 0.6 or more.
    rng = np.random.default_rng(2)
    rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # the QA check's two images before this one: the same
    rng.normal(128, 60, (480, 640, 3))  # draws bring the generator to where that image was made
    noise = np.clip(cv2.resize(rng.normal(128, 70, (12, 16, 3)), (640, 480), interpolation=cv2.INTER_CUBIC), 0, 255)
    noise = noise.astype(np.uint8)
    assert FaceDetector("short", "onnxruntime", threads=1).detect(noise, tile_below=8) == []
    assert FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8)).process(noise, still=True).faces == []
