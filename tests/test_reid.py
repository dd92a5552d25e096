"""Track IDs on real faces: a face that leaves for long and returns, and two faces crossing.

The videos are built in memory from the shared talking-head clips (two different people);
nothing is written to disk.
"""

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path
from tracker.detector import FaceDetector
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.roi import Roi
from tracker.tracking import REMEMBER_FRAMES, appearance, appearance_distance

PERSON_A = "talking_d10.mp4"
PERSON_B = "talking_d3.mp4"


def read_frames(name: str, count: int, start: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_path("video", name)))
    frames = []
    while len(frames) < start + count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == start + count, f"{name} is shorter than {start + count} frames"
    return frames[start:]


def tracker(max_faces: int) -> FaceTracker:
    # The model-free track logic is under test: the refiner and the 3D fit add time, not coverage.
    return FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=max_faces, refiner=False, fit_3d=False,
                                     threads=1))


def ids_per_frame(tr: FaceTracker, frames: list[np.ndarray]) -> list[list[int]]:
    return [[f.id for f in tr.process(frame, frame=i, time_s=i / 30).faces] for i, frame in enumerate(frames)]


def test_a_face_gone_longer_than_the_short_memory_keeps_its_id_and_a_new_person_gets_a_new_one():
    a_before = read_frames(PERSON_A, 20)
    # The same person, seven seconds later and elsewhere in the frame (moved 130 px left).
    shift = np.float32([[1, 0, -130], [0, 1, 0]])
    a_after = [cv2.warpAffine(f, shift, f.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
               for f in read_frames(PERSON_A, 20, start=200)]
    b = [cv2.resize(f, a_before[0].shape[1::-1]) for f in read_frames(PERSON_B, 20)]
    background = np.full_like(a_before[0], 96)
    gap = [background] * (2 * REMEMBER_FRAMES)
    ids = ids_per_frame(tracker(1), a_before + gap + a_after + gap + b)
    n = len(a_before)
    first, returned, other = ids[:n], ids[n + len(gap):2 * n + len(gap)], ids[2 * (n + len(gap)):]
    assert all(len(i) == 1 for i in first + returned + other)
    assert not any(ids[n:n + len(gap)]), "a face was reported on blank frames"
    assert {i[0] for i in first} == {i[0] for i in returned} == {1}
    assert {i[0] for i in other} == {2}


def face_patches(name: str, count: int, size: int) -> list[np.ndarray]:
    """The clip's face in a fixed square window (found on its first frame), resized to size²."""
    frames = read_frames(name, count)
    det = max(FaceDetector("short", "onnxruntime", threads=1).detect(frames[0]), key=lambda d: d.score)
    x0, y0, x1, y1 = det.bbox
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * max(x1 - x0, y1 - y0)
    h, w = frames[0].shape[:2]
    left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
    right, bottom = int(min(cx + half, w)), int(min(cy + half, h))
    return [cv2.resize(f[top:bottom, left:right], (size, size)) for f in frames]


def paste(canvas: np.ndarray, patch: np.ndarray, cx: float, cy: float, alpha: np.ndarray) -> None:
    s = patch.shape[0]
    x, y = round(float(cx) - s / 2), round(float(cy) - s / 2)
    region = canvas[y:y + s, x:x + s]
    region[:] = (alpha * patch + (1 - alpha) * region).astype(np.uint8)


@pytest.mark.parametrize("front", ["A", "B"])
def test_two_faces_crossing_keep_their_ids(front: str):
    size, n_cross, n_hold = 150, 60, 30
    n = n_cross + n_hold
    pa, pb = face_patches(PERSON_A, n, size), face_patches(PERSON_B, n, size)
    # The two people are far apart in appearance.
    roi = Roi(size / 2, size / 2, size * 0.75, 0.0)
    assert appearance_distance(appearance(pa[0], roi), appearance(pb[0], roi)) > 0.3
    alpha = np.zeros((size, size), np.float32)
    cv2.ellipse(alpha, (size // 2, size // 2), (size // 2 - 6, size // 2 - 2), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 4)[..., None]
    yy, xx = np.mgrid[0:360, 0:640]
    background = np.dstack([60 + 40 * xx / 640, 80 + 30 * yy / 360, 70 + 0 * xx]).astype(np.uint8)
    # A walks left to right, B right to left, on one line: mid-way the face in front hides the other.
    t = np.clip(np.arange(n) / (n_cross - 1), 0, 1)
    ax, bx = 100 + 440 * t, 540 - 440 * t
    ay = by = 180.0
    frames = []
    for i in range(n):
        canvas = background.copy()
        back, ahead = ((pb[i], bx[i]), (pa[i], ax[i])) if front == "A" else ((pa[i], ax[i]), (pb[i], bx[i]))
        paste(canvas, back[0], back[1], ay, alpha)
        paste(canvas, ahead[0], ahead[1], ay, alpha)
        frames.append(canvas)

    tr = tracker(2)
    seen = []  # per frame: {id: face centre}
    for i, frame in enumerate(frames):
        faces = tr.process(frame, frame=i, time_s=i / 30).faces
        seen.append({f.id: f.landmarks.mean(0) for f in faces})

    def person_at(centre: np.ndarray, i: int) -> str:
        da = np.hypot(centre[0] - ax[i], centre[1] - ay)
        db = np.hypot(centre[0] - bx[i], centre[1] - by)
        return "A" if da < db else "B"

    # Every face reported in any frame is on the person its ID started on: no swap, ever.
    owner: dict[int, str] = {}
    for i, faces in enumerate(seen):
        for face_id, centre in faces.items():
            assert owner.setdefault(face_id, person_at(centre, i)) == person_at(centre, i), (
                f"frame {i}: ID {face_id} moved from person {owner[face_id]} to the other one")
    # Both people are tracked at the start and again at the end, under the IDs they started with.
    start, end = seen[0], seen[-1]
    assert sorted(owner[k] for k in start) == ["A", "B"]
    assert {owner[k]: k for k in end} == {owner[k]: k for k in start}


def shot_background(kind: int) -> np.ndarray:
    """A textured background per shot: a cut changes the whole frame, not only the face."""
    yy, xx = np.mgrid[0:360, 0:640].astype(np.float32)
    wave = [np.sin(xx / 23.0) * np.cos(yy / 31.0), np.sin((xx + yy) / 17.0), np.cos(xx / 9.0 - yy / 40.0)][kind % 3]
    base = np.array([(70, 90, 60), (40, 50, 110), (120, 80, 60)][kind % 3], np.float32)
    return np.clip(base + 45.0 * wave[..., None], 0, 255).astype(np.uint8)


def test_a_cut_to_someone_else_in_the_same_place_gives_a_new_id_and_the_first_face_its_own_back():
    # A video cut: person B appears where person A was, from one frame to the next, then A again.
    # The tracked crop still holds a face after each cut, but it is someone else's: that is a new
    # track (new ID, fresh fit and smoothing), not the old one carried over.
    size, n = 150, 20
    pa, pb = face_patches(PERSON_A, 2 * n, size), face_patches(PERSON_B, n, size)
    alpha = np.ones((size, size, 1), np.float32)
    frames = []
    for k, patch in enumerate(pa[:n] + pb + pa[n:]):
        canvas = shot_background(k // n)
        paste(canvas, patch, 320, 180, alpha)
        frames.append(canvas)
    ids = ids_per_frame(tracker(1), frames)
    assert all(len(i) == 1 for i in ids), "a face went unreported"
    a_first, b, a_again = ({i[0] for i in ids[k * n:(k + 1) * n]} for k in range(3))
    assert a_first == {1}
    assert b == {2}, f"person B was reported as {sorted(b)}"
    assert a_again == {1}, f"person A came back as {sorted(a_again)}"


def test_a_sudden_change_of_colour_on_the_same_face_keeps_its_id():
    # Exposure or white balance jumping (a webcam's automatic settings, stage lights) changes the
    # face's colours as much as another person would, but it is no cut: the ID stays.
    frames = read_frames(PERSON_A, 40)
    roi = Roi(256, 256, 200, 0.0)
    for k in range(20, 40):
        frames[k] = np.clip(frames[k] * np.float32([1.0, 0.85, 1.3]), 0, 255).astype(np.uint8)
    # The step is one that the colour appearance alone takes for someone else.
    assert appearance_distance(appearance(frames[19], roi), appearance(frames[20], roi)) > 0.3
    ids = ids_per_frame(tracker(1), frames)
    assert all(i == [1] for i in ids), f"IDs {sorted({tuple(i) for i in ids})}"


def test_after_a_cut_the_new_shot_is_searched_for_faces_at_once():
    # Person A alone, then a cut to a shot with B where A was and A further left: both are
    # reported from the cut's frame on (not only at the next periodic detection), each under its
    # own ID: A keeps 1.
    size, n = 150, 12
    pa, pb = face_patches(PERSON_A, 2 * n, size), face_patches(PERSON_B, n, size)
    alpha = np.ones((size, size, 1), np.float32)
    frames = []
    for k in range(2 * n):
        canvas = shot_background(k // n)
        if k < n:
            paste(canvas, pa[k], 400, 180, alpha)
        else:
            paste(canvas, pb[k - n], 400, 180, alpha)
            paste(canvas, pa[k], 140, 180, alpha)
        frames.append(canvas)
    tr = tracker(2)
    assert tr.config.redetect_interval > 2, "the test needs periodic detection to be rarer than every frame"
    for k, frame in enumerate(frames):
        faces = tr.process(frame, frame=k, time_s=k / 30).faces
        # A is on the right before the cut and on the left after it; B on the right.
        where = {f.id: "left" if f.landmarks[:, 0].mean() < 270 else "right" for f in faces}
        assert where == ({1: "right"} if k < n else {1: "left", 2: "right"}), f"frame {k}: {where}"


def test_a_cut_with_the_same_face_keeps_its_id_and_adds_one_search_to_the_schedule():
    # A cut to another shot of the same person: the ID stays. The cut adds one search for faces
    # at that frame; the periodic searches keep their schedule (every redetect_interval frames).
    size, n = 150, 25
    pa = face_patches(PERSON_A, n, size)
    alpha = np.ones((size, size, 1), np.float32)
    frames = []
    for k in range(n):
        canvas = shot_background(0 if k < 5 else 1)
        paste(canvas, pa[k], 320, 180, alpha)
        frames.append(canvas)
    tr = tracker(2)
    searched, detect = [], tr.detect_meshes

    def recording(image, limit, corners=(), turns=()):
        searched.append(current)
        return detect(image, limit, corners, turns)

    tr.detect_meshes = recording
    ids = []
    for current, frame in enumerate(frames):
        ids.append([f.id for f in tr.process(frame, frame=current, time_s=current / 30).faces])
    assert all(i == [1] for i in ids), f"IDs {sorted({tuple(i) for i in ids})}"
    every = tr.config.redetect_interval
    assert searched == sorted({0, 5, *range(every, n, every)}), searched


def test_a_still_face_is_cropped_in_one_place_and_a_moving_one_follows():
    """The pipeline crops a tracked face at Track.roi: on a still face whose frames differ only by sensor
    noise the crop holds still while the mesh's own next ROI wobbles; when the face moves, the crop moves."""
    still = read_frames(PERSON_A, 1)[0]
    rng = np.random.default_rng(0)
    frames = [np.clip(still + rng.normal(0, 2.0, still.shape), 0, 255).astype(np.uint8) for _ in range(14)]
    shift = np.float32([[1, 0, 12], [0, 1, 0]])
    frames += [cv2.warpAffine(f, shift, f.shape[1::-1], borderMode=cv2.BORDER_REPLICATE) for f in frames[:2]]
    tr = tracker(1)
    meshes = [tr.process(f, frame=i, time_s=i / 30).faces[0].mesh for i, f in enumerate(frames)]
    crops = [m.roi for m in meshes]
    # The still face's crop moves far less from frame to frame than its points' own next ROI, which
    # wobbles with the noise (as the crop did when it was taken there: then both wobble alike).
    def wobble(rois: list[Roi]) -> float:
        return float(np.abs(np.diff([(r.cx, r.cy, r.size) for r in rois], axis=0)).sum())

    assert wobble(crops[2:14]) < 0.4 * wobble([m.next_roi for m in meshes[2:14]])
    # Moved 12 px: the crop follows the face.
    assert crops[15].cx > crops[13].cx + 8
