"""The live window's drawing and keys, tested without a display (plus one real window under Xvfb, if present)."""

from __future__ import annotations

import copy
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tracker.outputs import (
    PANEL_BAR_COLOUR,
    PANEL_TRACK_COLOUR,
    Window,
    _top_blendshapes,
    draw_overlay,
)
from tracker.pose import euler_to_matrix
from tracker.types import FaceResult, FrameResult, Gaze, Pose

REPO = Path(__file__).resolve().parent.parent
H, W = 480, 640

SHAPES = {"jawOpen": 0.9, "eyeBlinkLeft": 0.7, "eyeBlinkRight": 0.55, "mouthSmileLeft": 0.4,
          "mouthSmileRight": 0.33, "browInnerUp": 0.25, "cheekPuff": 0.2, "mouthPucker": 0.12,
          "noseSneerLeft": 0.05, "tongueOut": 0.0}


def make_face(**extra) -> FaceResult:
    # A face on the image's right half, so its mirror image does not overlap it.
    rng = np.random.default_rng(0)
    landmarks = np.column_stack([rng.uniform(420, 560, 68), rng.uniform(200, 380, 68)])
    landmarks[30] = (490.0, 290.0)  # nose tip: the origin of the pose axes
    pose = Pose(yaw=10.0, pitch=-5.0, roll=3.0, quaternion=np.array([1.0, 0, 0, 0]),
                translation_mm=np.array([0.0, 0.0, 600.0]), rotation=np.eye(3))
    face = FaceResult(id=1, bbox=np.array([410.0, 180.0, 570.0, 390.0]), score=0.97, landmarks=landmarks,
                      mesh=None, occluded=np.arange(68) % 5 == 0, pose=pose, blendshapes=dict(SHAPES))
    for name, value in extra.items():
        setattr(face, name, value)
    return face


def make_result(*faces: FaceResult) -> FrameResult:
    return FrameResult(frame=3, time_s=0.1, source="test", faces=list(faces))


def blank() -> np.ndarray:
    return np.zeros((H, W, 3), np.uint8)


def bar_lengths(view: np.ndarray) -> list[int]:
    """Length of each bar in the panel (right of the image), top to bottom, from its exact colour."""
    is_bar = np.all(view[:, W:] == PANEL_BAR_COLOUR, axis=2)
    lengths, inside = [], False
    for row in is_bar:
        count = int(row.sum())
        if count and not inside:
            lengths.append(count)
        inside = bool(count)
    return lengths


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> None:
    # Window only checks that a display is named; nothing here opens one.
    monkeypatch.setenv("DISPLAY", ":0")


def test_plain_overlay_keeps_the_frame_size() -> None:
    # OverlayWriter relies on this: no panel unless asked for.
    assert draw_overlay(blank(), make_result(make_face())).shape == (H, W, 3)


def test_panel_shows_top_blendshapes_longest_first() -> None:
    view = draw_overlay(blank(), make_result(make_face()), panel=True)
    assert view.shape[0] == H and view.shape[1] > W
    assert np.array_equal(view[:, :W], draw_overlay(blank(), make_result(make_face()))), "panel covers the frame"
    empty = draw_overlay(blank(), make_result(make_face(blendshapes={})), panel=True)
    assert np.any(view[:, W:] != empty[:, W:]), "no bars drawn"
    lengths = bar_lengths(view)
    top = sorted(SHAPES.values(), reverse=True)[:8]
    assert len(lengths) == 8
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[1]
    # Bars are proportional to the values: bar + the track behind it span the full 0..1 range.
    # (Neither colour is a grey, so antialiased text cannot be mistaken for them.)
    is_bar = np.all(view[:, W:] == PANEL_BAR_COLOUR, axis=2)
    is_track = np.all(view[:, W:] == PANEL_TRACK_COLOUR, axis=2)
    rows = is_bar.any(1)
    full = is_bar[rows].sum(1) + is_track[rows].sum(1)
    assert np.all(full == full[0]) and full[0] > 100
    for length, value in zip(lengths, top):
        assert abs(length - value * full[0]) <= 1


def test_top_blendshapes_skips_nan_and_orders_ties_by_name() -> None:
    shapes = {"b": 0.5, "a": 0.5, "c": float("nan"), "d": 0.9}
    assert _top_blendshapes(shapes, 3) == [("d", 0.9), ("a", 0.5), ("b", 0.5)]
    assert _top_blendshapes(None) == []


def test_panel_shows_the_blendshapes_expected_error_under_its_bars_when_rated() -> None:
    rated = make_face()
    rated.blendshapes_error = 0.07
    plain, shown = (draw_overlay(blank(), make_result(face), panel=True)[:, W:] for face in (make_face(), rated))
    last_bar = np.nonzero(np.all(plain == PANEL_BAR_COLOUR, axis=2).any(axis=1))[0].max()
    changed = np.nonzero(np.any(plain != shown, axis=(1, 2)))[0]
    assert len(changed) and changed.min() > last_bar  # a line of its own, below the bars
    tiny = np.zeros((200, W, 3), np.uint8)  # too short for the eight bars: no room, no line
    assert np.array_equal(draw_overlay(tiny, make_result(make_face()), panel=True),
                          draw_overlay(tiny, make_result(rated), panel=True))


def test_panel_without_a_face_or_blendshapes() -> None:
    for result in (make_result(), make_result(make_face(blendshapes=None))):
        view = draw_overlay(blank(), result, panel=True)
        assert view.shape[0] == H and bar_lengths(view) == []


def test_mirrored_view_is_the_flipped_overlay() -> None:
    result = make_result(make_face())
    plain = draw_overlay(blank(), result)
    mirrored = draw_overlay(blank(), result, mirror=True)
    # Everything but the ID label (above the box top, y = 180, its outline touching the box line) is
    # exactly the flipped plain overlay.
    assert np.array_equal(mirrored[182:], cv2.flip(plain, 1)[182:])
    assert not np.array_equal(mirrored[:182], cv2.flip(plain, 1)[:182])  # the label is not mirrored
    # A landmark at x appears at W-1-x.
    face = make_face(landmarks=np.full((68, 2), (500.0, 300.0)), occluded=np.zeros(68, bool), pose=None)
    image = draw_overlay(blank(), make_result(face), mirror=True)
    assert tuple(image[300, W - 1 - 500]) == (0, 255, 0)
    assert not image[300, 500].any()


def test_mirrored_label_stays_readable_and_inside_the_box() -> None:
    result = make_result(make_face())
    mirrored = draw_overlay(blank(), result, mirror=True)
    label = mirrored[150:178]
    cols = np.nonzero(label.any(axis=(0, 2)))[0]
    # The label starts at the mirrored box's left edge (W-1-570), not at a flipped (unreadable) position.
    assert cols.min() >= W - 1 - 570 - 2 and cols.max() < W - 1 - 410 + 60


def test_mirroring_changes_no_output_data(display: None) -> None:
    face = make_face()
    result = make_result(face)
    before = copy.deepcopy(result.to_record())
    shapes = dict(face.blendshapes)
    window = Window(mirror=True)
    window.render(blank(), result, "status", latency_ms=12.0)
    window.handle_key(ord("m"))
    window.render(blank(), result, "status", latency_ms=12.0)
    assert face.blendshapes == shapes
    assert result.to_record() == before


def test_landmarks_coloured_by_confidence() -> None:
    landmarks = np.array([(100.0 + 8 * (i % 17), 100.0 + 20 * (i // 17)) for i in range(68)])
    conf = np.linspace(0.0, 1.0, 68)
    face = make_face(landmarks=landmarks, occluded=np.zeros(68, bool), pose=None, landmark_confidence=conf)
    image = draw_overlay(blank(), make_result(face))
    assert tuple(image[100, 100]) == (0, 0, 255)  # confidence 0: red
    assert tuple(image[160, 100 + 8 * 16]) == (0, 255, 0)  # confidence 1: green
    # With None, or on a result object without the attribute at all, the points are plain green.
    face = make_face(landmarks=landmarks, occluded=np.zeros(68, bool), pose=None, landmark_confidence=None)
    without = SimpleNamespace(**{k: v for k, v in vars(face).items() if k != "landmark_confidence"})
    assert not hasattr(without, "landmark_confidence")
    for f in (face, without):
        assert tuple(draw_overlay(blank(), make_result(f))[100, 100]) == (0, 255, 0)


def test_keys_toggle_mirror_and_quit(display: None) -> None:
    window = Window()
    assert window.mirror is False
    assert window.handle_key(ord("m")) and window.mirror is True
    assert window.handle_key(ord("m")) and window.mirror is False
    assert window.handle_key(-1) and window.handle_key(255)  # no key (raw, and masked with 0xFF)
    assert window.handle_key(ord("q")) is False
    assert window.handle_key(27) is False
    assert window.handle_key(0x100000 | ord("q")) is False  # modifier bits above the character


def test_snapshot_key_writes_the_current_view(display: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    window = Window()
    assert window.save_snapshot() is None  # nothing shown yet
    view = window.render(blank(), make_result(make_face()), "status", latency_ms=40.0)
    with caplog.at_level(logging.INFO, logger="tracker"):
        assert window.handle_key(ord("s"))
        assert window.handle_key(ord("s"))  # same second: a second file, not an overwrite
    files = sorted(tmp_path.glob("snapshot_*.png"))
    assert len(files) == 2
    assert re.fullmatch(r"snapshot_\d{8}_\d{6}(_\d+)?\.png", files[0].name)
    assert np.array_equal(cv2.imread(str(files[0])), view)
    assert any(str(files[0].name) in rec.getMessage() for rec in caplog.records)


def test_a_view_larger_than_a_screen_is_shown_scaled_to_fit(display: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An autosized window cannot be shrunk: a 4K frame's view is shown within MAX_SHOWN, its shape kept, in a
    window opened without Qt's toolbar; a small one as it is."""
    shown, flags = [], []
    monkeypatch.setattr("tracker.outputs.screen_size", lambda: None)  # as on a system that does not tell it
    monkeypatch.setattr(cv2, "namedWindow", lambda title, flag: flags.append(flag))
    monkeypatch.setattr(cv2, "imshow", lambda title, view: shown.append(view.shape[:2]))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: 1.0)
    window = Window()
    assert window.show(np.zeros((2160, 3840, 3), np.uint8), make_result(), "status")
    view = window._view.shape[:2]
    (h, w), (max_w, max_h) = shown[0], Window.MAX_SHOWN
    assert (w == max_w or h == max_h) and w <= max_w and h <= max_h
    assert abs(w / h - view[1] / view[0]) < 0.01
    assert window.show(blank(), make_result(), "status") and shown[1] == window._view.shape[:2]
    assert flags == [cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL]  # opened once


def test_a_view_is_scaled_to_fit_the_screen_it_is_shown_on(display: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 720p webcam's view (1720 px wide with its panel) on a 1366×768 laptop screen: within the screen, less
    room for the window's frame and a taskbar, its shape kept. The screen is asked once, when the window opens."""
    shown, asked = [], []
    monkeypatch.setattr("tracker.outputs.screen_size", lambda: asked.append(1) or (1366, 768))
    monkeypatch.setattr(cv2, "namedWindow", lambda title, flag: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, view: shown.append(view.shape[:2]))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: 1.0)
    window = Window()
    for _ in range(2):
        assert window.show(np.zeros((720, 1280, 3), np.uint8), make_result(), "status")
    (h, w), view = shown[0], window._view.shape[:2]
    assert w == 1366 - Window.SCREEN_MARGIN[0] and h <= 768 - Window.SCREEN_MARGIN[1]
    assert abs(w / h - view[1] / view[0]) < 0.01 and len(asked) == 1


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed")
def test_the_screen_size_is_read_from_the_x_server() -> None:
    code = "from tracker.outputs import screen_size; print(screen_size())"
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", sys.executable, "-c", code], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "(1366, 768)", proc.stdout + proc.stderr[-2000:]


def test_a_held_still_waits_for_a_key_a_closed_window_or_a_stop(display: None, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    keys: list[int] = []
    visible = [1.0]
    shown: list[np.ndarray] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cv2, "waitKey", lambda ms: keys.pop(0) if keys else -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: visible[0])
    monkeypatch.setattr(cv2, "namedWindow", lambda title, flag: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, view: shown.append(view.copy()))
    window = Window()
    assert window.show(blank(), make_result(make_face()), "status")
    keys[:] = [-1, -1, ord(" ")]
    assert window.hold(lambda: False) is True and not keys  # the next still, after two polls with no key
    # Shift and Alt alone (as Qt reports them), another letter and a snapshot keep it held; Enter moves on.
    keys[:] = [0xE1, 0xE9, ord("x"), ord("s"), 13]
    assert window.hold(lambda: False) is True and not keys and len(list(tmp_path.glob("snapshot_*.png"))) == 1
    keys[:] = [ord("m"), ord("n")]  # the held view is shown again, mirrored
    assert window.hold(lambda: False) is True and window.mirror and len(shown) == 2
    assert not np.array_equal(shown[1], shown[0])  # the same still, mirrored
    keys[:] = [-1, ord("q")]
    assert window.hold(lambda: False) is False
    keys[:] = [27]
    assert window.hold(lambda: False) is False
    polls = iter([False, False, True])
    assert window.hold(lambda: next(polls)) is True  # a stop: the caller ends the run
    visible[0] = 0.0
    assert window.hold(lambda: False) is False  # the window was closed


def test_render_readouts(display: None) -> None:
    window = Window()
    window.render(blank(), make_result(), "onnxruntime", latency_ms=50.0)
    window.render(blank(), make_result(), "onnxruntime", latency_ms=30.0)
    assert window.fps is not None and window.fps > 0
    assert 30.0 < window.latency_ms < 50.0  # smoothed


def test_window_needs_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check is Linux-only")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    from tracker.outputs import OutputError

    with pytest.raises(OutputError):
        Window()


REAL_WINDOW = r"""
import numpy as np
from tracker.outputs import Window
from tracker.types import FrameResult
w = Window()
ok = all(w.show(np.zeros((120, 160, 3), np.uint8), FrameResult(i, i / 30, "x"), "test", latency_ms=5.0)
         for i in range(5))
w.close()
print("OK" if ok else "CLOSED")
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed")
def test_real_window_under_xvfb() -> None:
    build = cv2.getBuildInformation()
    gui = re.search(r"GUI:\s*(\S+)", build)
    if gui is None or gui.group(1).upper() == "NONE":
        pytest.skip("this OpenCV has no GUI backend")
    proc = subprocess.run(["xvfb-run", "-a", sys.executable, "-c", REAL_WINDOW], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK")


@pytest.mark.parametrize("fps", [0.001, 90000.0, float("nan")])
def test_overlay_video_of_a_source_with_an_unplayable_rate_plays_at_30(tmp_path, fps):
    from tracker.outputs import OverlayWriter

    path = tmp_path / "overlay.mp4"
    writer = OverlayWriter(str(path), fps)
    for _ in range(3):
        writer.write(blank(), make_result(make_face()))
    writer.close()
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_the_overlay_draws_each_eyes_gaze_the_way_it_looks() -> None:
    def magenta(view: np.ndarray) -> np.ndarray:  # the arrows' colour, antialiased edges included
        b, g, r = (view[..., k].astype(int) for k in range(3))
        return (b > 120) & (g < 100) & (r > 120)

    def arrows(face: FaceResult) -> tuple[np.ndarray, np.ndarray]:
        """Where the arrows' pixels lie relative to the eyes' centre (x, y)."""
        ys, xs = np.nonzero(magenta(draw_overlay(blank(), make_result(face))) & ~base)
        return xs - face.landmarks[36:48, 0].mean(), ys - face.landmarks[36:48, 1].mean()

    still = make_face()  # no gaze read: no arrows
    base = magenta(draw_overlay(blank(), make_result(still)))
    # The frontal face's left is the image's right, and up is up.
    for side in (1, -1):
        dx, _ = arrows(make_face(gaze=Gaze(side * 20.0, 0.0)))
        assert len(dx) > 20 and side * dx.mean() > 5
    _, dy = arrows(make_face(gaze=Gaze(0.0, 20.0)))
    assert dy.mean() < -5
    # With the head turned 40° to its left, eyes on the camera (gaze 40° to its right) point at the camera:
    # short arrows; looking straight out of the head, they follow the head, to the image's right.
    turned = Pose(yaw=40.0, pitch=0.0, roll=0.0, quaternion=np.array([1.0, 0, 0, 0]),
                  translation_mm=np.array([0.0, 0.0, 600.0]), rotation=euler_to_matrix(40.0, 0.0, 0.0))
    on_camera = arrows(make_face(pose=turned, gaze=Gaze(-40.0, 0.0)))[0]
    ahead = arrows(make_face(pose=turned, gaze=Gaze(0.0, 0.0)))[0]
    assert len(ahead) > 20 and ahead.mean() > 5
    assert len(on_camera) < len(ahead) / 2 and np.abs(on_camera).max(initial=0) < ahead.max() / 2
    # A gaze that is not a number draws nothing and raises nothing.
    assert not (magenta(draw_overlay(blank(), make_result(make_face(gaze=Gaze(float("nan"), 0.0))))) & ~base).any()


def _frame_result(i: int) -> FrameResult:
    return FrameResult(i, i / 30, "x")


def test_overlay_video_stops_whole_while_the_disk_still_has_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk nearly full after 5 frames: the writer closes the video (which then plays those 5) and says
    so; full before the first frame: no file at all rather than one that does not play, and a disk full
    already is refused when the writer is made (before a run empties its other outputs)."""
    from tracker.outputs import OutputError, OverlayWriter

    real = shutil.disk_usage
    free = {"bytes": None}

    def disk_usage(path):  # the real figures, or a disk with `free["bytes"]` left
        usage = real(path)
        return usage if free["bytes"] is None else usage._replace(free=free["bytes"])

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    path = tmp_path / "overlay.avi"
    writer = OverlayWriter(str(path), 25.0)
    image = np.full((120, 160, 3), 90, np.uint8)
    for i in range(5):
        writer.write(image, _frame_result(i))
    free["bytes"] = 200_000
    with pytest.raises(OutputError, match="after 5 frames: the disk is nearly full"):
        writer.write(image, _frame_result(5))
    writer.close()  # closing again is harmless
    cap = cv2.VideoCapture(str(path))
    played = 0
    while cap.read()[0]:
        played += 1
    assert played == 5
    empty = tmp_path / "empty.avi"
    free["bytes"] = None
    writer = OverlayWriter(str(empty), 25.0)
    free["bytes"] = 200_000  # full between opening and the first frame
    with pytest.raises(OutputError, match="the disk is too full"):
        writer.write(image, _frame_result(0))
    writer.close()
    assert not empty.exists()
    with pytest.raises(OutputError, match="the disk is too full"):  # full already: refused before any frame
        OverlayWriter(str(empty), 25.0)


def test_a_stop_between_opening_the_overlay_video_and_its_first_frame_leaves_no_file(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """Two quick stops at the first frame can land once the encoder has opened the file (emptying any video there
    before) and before it holds a frame: closed then, it would leave a file that does not play. It leaves none."""
    from tracker.outputs import OverlayWriter

    path = tmp_path / "overlay.mp4"
    path.write_bytes(b"an earlier run's overlay")
    writer = OverlayWriter(str(path), 25.0)

    def second_stop() -> None:  # the stop's KeyboardInterrupt, where the writer checks the disk before the frame
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_keep_room", second_stop)
    with pytest.raises(KeyboardInterrupt):
        writer.write(np.full((120, 160, 3), 90, np.uint8), _frame_result(0))
    writer.close()
    assert not path.exists()


def test_an_overlay_png_that_cannot_be_written_whole_leaves_no_part(tmp_path: Path) -> None:
    """A PNG is written under a temporary name and renamed: a failure leaves neither a half PNG nor the part."""
    from tracker.outputs import OutputError, OverlayWriter

    folder = tmp_path / "pngs"
    writer = OverlayWriter(str(folder), None)
    writer.write(np.zeros((40, 60, 3), np.uint8), _frame_result(0))
    (folder / "000001_frame.png").mkdir()  # where the next PNG must go: the rename fails
    with pytest.raises(OutputError, match="cannot write overlay frame"):
        writer.write(np.zeros((40, 60, 3), np.uint8), _frame_result(1))
    assert sorted(p.name for p in folder.iterdir()) == ["000000_frame.png", "000001_frame.png"]
    assert cv2.imread(str(folder / "000000_frame.png")) is not None


def test_an_overlay_folder_with_an_earlier_runs_frames_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tracker.outputs import OverlayWriter

    folder = tmp_path / "pngs"
    first = OverlayWriter(str(folder), None)
    for i in range(3):
        first.write(np.zeros((40, 60, 3), np.uint8), _frame_result(i))
    with caplog.at_level(logging.WARNING, logger="tracker"):
        OverlayWriter(str(tmp_path / "fresh"), None)
        assert not caplog.records  # a new or empty folder: nothing to say
        OverlayWriter(str(folder), None)
    assert len(caplog.records) == 1 and "already holds 3 frames" in caplog.records[0].getMessage()


def test_the_label_carries_the_pose_expected_error_when_rated() -> None:
    def label_width(face: FaceResult) -> int:
        cols = np.nonzero(draw_overlay(blank(), make_result(face))[150:178].any(axis=(0, 2)))[0]
        return int(cols.max() - cols.min())

    rated = make_face()
    rated.pose.expected_error_deg = 3.7
    # "#1 0.97" alone, against "#1 0.97  pose err ~4 deg"; no pose at all, no rating.
    assert label_width(rated) > 2 * label_width(make_face()) and label_width(make_face(pose=None)) == label_width(
        make_face())


def test_an_overlay_name_ending_in_a_separator_is_a_folder_asked_for(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """'overlays.mp4/' is a folder of PNG frames, without the warning an unknown ending gets ('overlays.webm')."""
    from tracker.outputs import OverlayWriter

    with caplog.at_level(logging.WARNING, logger="tracker"):
        writer = OverlayWriter(str(tmp_path / "overlays.mp4") + "/", None)
        writer.write(np.zeros((40, 60, 3), np.uint8), _frame_result(0))
        writer.close()
        assert not caplog.records
        OverlayWriter(str(tmp_path / "overlays.webm"), None).close()
    assert (tmp_path / "overlays.mp4").is_dir() and (tmp_path / "overlays.mp4" / "000000_frame.png").is_file()
    assert len(caplog.records) == 1 and "not a video file this writer makes" in caplog.records[0].getMessage()
