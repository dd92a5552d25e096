"""Where results go: JSON Lines, CSV, an overlay video (or image folder), a live window.

Every writer survives an interrupted run: JSON Lines and CSV rows reach the file a
whole frame at a time (a write that fails part-way is cut back to the last whole one),
and ``close`` is safe to call more than once.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import io
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import cv2
import numpy as np

from tracker.pose import MODEL_TO_CAMERA
from tracker.sources import opencv_quieter, stream_open_pending
from tracker.types import FrameResult, is_utf8_path, readable_path, record_json

VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}
# An overlay folder's frames are named by frame number and source name (OverlayWriter._write_png).
_OVERLAY_FRAME_NAME = re.compile(r"\d{6,}_.+\.png", re.IGNORECASE)
# An overlay frame's file name, "NNNNNN_<stem>-N.png.part" while written, stays within the 255 bytes most file
# systems allow.
_MAX_STEM_BYTES = 200
_RENAMES_LISTED = 5  # the first few sources whose frames take another name are told; the rest follow the rule
MIN_VIDEO_SIDE = 16  # pixels: overlay video frames are padded up to this
MAX_MPEG4_SIDE = 8191  # pixels: MPEG-4 Part 2 (mp4v) stores a frame's width and height in 13 bits


def named_like_an_overlay_frame(path: str) -> bool:
    """Whether an overlay folder's frame could have this file's name (in any case of its suffix)."""
    return _OVERLAY_FRAME_NAME.fullmatch(os.path.basename(path)) is not None


class OutputError(RuntimeError):
    """An output cannot be opened or written; the message is one line for the user."""


@contextmanager
def _write_errors(kind: str, path: str | Path) -> Iterator[None]:
    """A failed write (disk full, a removed drive) as a one-line OutputError. A closed pipe stays a
    BrokenPipeError: the CLI ends quietly when the reader of stdout goes away."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {kind} to '{readable_path(str(path))}': {exc.strerror or exc}") from None


class _RecordFile:
    """A file (or stdout, ``-``) written a whole record at a time: each frame's text goes out in one write and
    reaches the file at once. Should a write fail part-way (a full disk), the file is cut back to the last
    whole record before the error is raised, so what a stopped run leaves is always valid (stdout too, when
    it is a file; a pipe cannot be cut back).

    Opening does not empty the file: :meth:`start` does, so that a caller opening several outputs can empty
    them only once every one has opened."""

    def __init__(self, path: str, kind: str) -> None:
        self.path, self.kind = path, kind
        self._good = 0  # where the last whole record ends
        self._fd: int | None = None  # written through the descriptor; None: sys.stdout's text
        self._seekable = True  # a regular file, which can be cut back (not a pipe or a terminal)
        self._owned = path != "-"
        if not self._owned:
            if sys.stdout is None:
                raise OutputError(f"cannot write {kind} to '-': standard output is closed")
            try:
                # Through the descriptor, bypassing Python's buffer: a file (`--json - > file`) is cut back like
                # any file, and a pipe whose reader stopped reading holds nothing in a buffer that the exit
                # would then wait to flush for good after a stop.
                fd = sys.stdout.fileno()
                self._seekable = stat.S_ISREG(os.fstat(fd).st_mode)
                sys.stdout.flush()
                self._fd = fd
            except (OSError, ValueError, AttributeError):  # no descriptor (a captured stdout): written as text
                pass
            return
        with _write_errors(kind, path):
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
            self._seekable = stat.S_ISREG(os.fstat(self._fd).st_mode)

    def start(self) -> None:
        """Empty the file (a file of one's own), or note where stdout's file stands, before the first record.
        A device or pipe (/dev/stdout, a FIFO) has nothing to empty and nothing to cut back."""
        if self._fd is None or not self._seekable:
            return
        with _write_errors(self.kind, self.path):
            if self._owned:
                free = _free_bytes(Path(self.path))
                if free < _RECORDS_SLACK:  # refused while the earlier file is still whole
                    raise OutputError(f"cannot write {self.kind} to '{readable_path(self.path)}': the disk is too "
                                      f"full ({free / 1e6:.2f} MB free); the earlier file was left as it was")
                os.ftruncate(self._fd, 0)
            self._good = 0 if self._owned else _write_position(self._fd)

    def write(self, text: str) -> None:
        if self._fd is None:
            with _write_errors(self.kind, self.path):
                sys.stdout.write(text)
                sys.stdout.flush()
            return
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        with _write_errors(self.kind, self.path):
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except BrokenPipeError:
                raise  # the reader went away (`| head`): nothing to cut back for
            except (OSError, KeyboardInterrupt):  # a full disk; a stop that interrupts a write held up by a pipe
                if self._seekable:
                    try:
                        os.ftruncate(self._fd, self._good)
                        os.lseek(self._fd, self._good, os.SEEK_SET)
                    except OSError:
                        pass
                raise
        self._good += len(data.obj)

    def close(self) -> None:
        if self._owned and self._fd is not None:
            fd, self._fd = self._fd, None
            with _write_errors(self.kind, self.path):
                os.close(fd)


def _write_position(fd: int) -> int:
    """Where the next write to ``fd`` lands: the end of the file when it appends (`>>`), else its offset."""
    try:
        import fcntl

        appends = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
    except (ImportError, OSError):  # no fcntl (Windows): its appending streams seek to the end themselves
        appends = False
    return os.fstat(fd).st_size if appends else os.lseek(fd, 0, os.SEEK_CUR)


class JsonlWriter:
    kind = "JSON Lines"

    def __init__(self, path: str, *, start: bool = True) -> None:
        """``start=False`` leaves an existing file as it is until :meth:`start`."""
        self.path = path
        self._out = _RecordFile(path, self.kind)
        if start:
            self.start()

    def start(self) -> None:
        self._out.start()

    def write(self, result: FrameResult) -> None:
        # One line per frame, written whole: an interrupted run leaves only whole lines.
        self._out.write(record_json(result.to_record()) + "\n")

    def close(self) -> None:
        self._out.close()


# Blendshape panel: how many bars, and colours the tests look for (BGR).
PANEL_BARS = 8
PANEL_BAR_COLOUR = (0, 170, 255)  # orange bar: the value
PANEL_TRACK_COLOUR = (90, 70, 60)  # dark slate track behind it: the full 0..1 range
PANEL_BACKGROUND = (32, 32, 32)
_PANEL_WIDTH = 220  # pixels at scale 1 (a 640×480 view); long ARKit names ("mouthShrugLower") fit
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_overlay(image: np.ndarray, result: FrameResult, wireframe: np.ndarray | None = None, *,
                 mirror: bool = False, panel: bool = False) -> np.ndarray:
    """A copy of the frame with boxes, IDs and scores (and each pose's expected error), landmarks (coloured by
    confidence when known, occluded ones hollow), pose axes, each eye's gaze and, given the mesh's triangles, its
    wireframe.

    ``mirror`` flips the picture horizontally after the geometry is drawn and before any text, so the view
    is a mirror while labels stay readable; ``result`` is only read, never changed. ``panel`` appends a
    side panel with the first face's strongest blendshapes as bars."""
    out = image.copy()
    scale = max(1, round(max(out.shape[:2]) / 640))
    for face in result.faces:
        if wireframe is not None:
            pts = np.round(face.mesh.points[:, :2]).astype(np.int32)
            cv2.polylines(out, list(pts[wireframe]), True, (120, 120, 120), 1, cv2.LINE_AA)
        x0, y0, x1, y1 = np.round(face.bbox).astype(int).tolist()
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), scale)
        _draw_landmarks(out, face, scale)
        if face.pose is not None:
            _draw_axes(out, face, scale)
            _draw_gaze(out, face, scale)
    if mirror:
        # Pixels only: the geometry above was drawn in the image's own coordinates, so the mirrored view
        # is exactly cv2.flip of the plain one and no output (JSON/CSV/VMC Left/Right) is affected.
        out = cv2.flip(out, 1)
    w = out.shape[1]
    for face in result.faces:
        x0, y0, x1, _ = np.round(face.bbox).astype(int).tolist()
        left = w - 1 - x1 if mirror else x0  # the box's left edge in the view
        label = f"#{face.id} {face.score:.2f}"
        rated = face.pose.expected_error_deg if face.pose is not None else None
        if rated is not None:  # OpenCV's fonts are ASCII: no degree sign
            label += f"  pose err ~{rated:.0f} deg"
        _put_text(out, label, (left, max(12 * scale, y0 - 4)), 0.45 * scale, (255, 200, 0), scale)
    if panel:
        out = _with_blendshape_panel(out, result.faces[0] if result.faces else None, scale)
    return out


def _confidence_colour(conf: float) -> tuple[int, int, int]:
    # Red (0) → yellow (0.5) → green (1), BGR; unknown (NaN) grey.
    if not math.isfinite(conf):
        return (160, 160, 160)
    c = min(max(conf, 0.0), 1.0)
    return (0, round(255 * min(1.0, 2 * c)), round(255 * min(1.0, 2 * (1 - c))))


def _draw_landmarks(out: np.ndarray, face, scale: int) -> None:
    n = len(face.landmarks)
    occluded = face.occluded if face.occluded is not None else np.zeros(n, dtype=bool)
    # landmark_confidence is optional (older results lack the attribute or leave it None): plain green then.
    conf = getattr(face, "landmark_confidence", None)
    conf = np.asarray(conf, dtype=float).reshape(-1) if conf is not None else None
    if conf is not None and len(conf) != n:
        conf = None
    for i, ((x, y), hidden) in enumerate(zip(np.round(face.landmarks).astype(int).tolist(), occluded)):
        colour = _confidence_colour(float(conf[i])) if conf is not None else (0, 255, 0)
        cv2.circle(out, (x, y), scale + 1, colour, 1 if hidden else -1, cv2.LINE_AA)


def _draw_axes(out: np.ndarray, face, scale: int) -> None:
    # The head's own axes (subject's left, up, out of the face) from the nose tip, in the image.
    axes = face.pose.rotation @ MODEL_TO_CAMERA
    length = 0.4 * (face.bbox[2] - face.bbox[0])
    origin = face.landmarks[30]
    for k, colour in enumerate(((0, 0, 255), (0, 255, 0), (255, 0, 0))):  # x red, y green, z blue (BGR)
        tip = origin + length * axes[:2, k]
        cv2.arrowedLine(out, tuple(np.round(origin).astype(int).tolist()), tuple(np.round(tip).astype(int).tolist()),
                        colour, scale + 1, cv2.LINE_AA, tipLength=0.15)


GAZE_COLOUR = (255, 0, 255)  # BGR magenta: apart from the confidence colours and the axes


def _draw_gaze(out: np.ndarray, face, scale: int) -> None:
    # Each eye's gaze as an arrow from the eye's centre: the gaze turned with the head, so eyes looking into
    # the camera draw a short arrow, seen end on.
    gaze = getattr(face, "gaze", None)  # tracker.types.Gaze, or None
    if gaze is None or not math.isfinite(gaze.yaw + gaze.pitch) or len(face.landmarks) != 68:
        return
    step = 0.3 * (face.bbox[2] - face.bbox[0]) * (face.pose.rotation @ MODEL_TO_CAMERA @ gaze.direction())[:2]
    for eye in (face.landmarks[36:42], face.landmarks[42:48]):
        origin = np.asarray(eye, np.float64).mean(0)
        cv2.arrowedLine(out, tuple(np.round(origin).astype(int).tolist()),
                        tuple(np.round(origin + step).astype(int).tolist()), GAZE_COLOUR, scale, cv2.LINE_AA,
                        tipLength=0.25)


def _put_text(out: np.ndarray, text: str, org: tuple[int, int], size: float, colour: tuple[int, int, int],
              thickness: int = 1) -> None:
    # A dark outline keeps text readable over any background (bright skin, white walls).
    cv2.putText(out, text, org, _FONT, size, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(out, text, org, _FONT, size, colour, thickness, cv2.LINE_AA)


def _top_blendshapes(shapes: dict[str, float] | None, k: int = PANEL_BARS) -> list[tuple[str, float]]:
    """The ``k`` largest finite values, largest first (ties by name, so the order is stable)."""
    if not shapes:
        return []
    items = [(name, float(v)) for name, v in shapes.items() if math.isfinite(float(v))]
    return sorted(items, key=lambda item: (-item[1], item[0]))[:k]


def _with_blendshape_panel(view: np.ndarray, face, scale: int) -> np.ndarray:
    """``view`` with a panel on its right: the face's top blendshapes, one name and bar per row."""
    h = view.shape[0]
    pw = _PANEL_WIDTH * scale
    panel = np.full((h, pw, 3), PANEL_BACKGROUND, dtype=np.uint8)
    pad, font = 8 * scale, 0.42 * scale
    title = f"blendshapes #{face.id}" if face is not None else "blendshapes"
    _put_text(panel, title, (pad, 20 * scale), 0.5 * scale, (255, 255, 255), scale)
    top = _top_blendshapes(getattr(face, "blendshapes", None)) if face is not None else []
    if face is not None and not top:
        _put_text(panel, "(none: 3D fit off)", (pad, 44 * scale), font, (160, 160, 160), 1)
    bar_len = pw - 2 * pad - 40 * scale  # room for the value on the right
    row_h = 30 * scale
    for i, (name, value) in enumerate(top):
        y = 34 * scale + i * row_h
        if y + row_h > h:
            break  # a very small image: show the rows that fit
        _put_text(panel, name, (pad, y + 13 * scale), font, (230, 230, 230), 1)
        by0, by1 = y + 17 * scale, y + 25 * scale
        cv2.rectangle(panel, (pad, by0), (pad + bar_len - 1, by1), PANEL_TRACK_COLOUR, -1)
        filled = round(min(max(value, 0.0), 1.0) * bar_len)
        if filled > 0:
            cv2.rectangle(panel, (pad, by0), (pad + filled - 1, by1), PANEL_BAR_COLOUR, -1)
        _put_text(panel, f"{value:.2f}", (pad + bar_len + 4 * scale, by1), font, (230, 230, 230), 1)
    rated = getattr(face, "blendshapes_error", None)
    below = 34 * scale + len(top) * row_h + 16 * scale  # under the last bar, if the panel has room
    if rated is not None and below <= h - 4 * scale:
        _put_text(panel, f"expected error ~{rated:.2f}", (pad, below), font, (160, 160, 160), 1)
    return np.hstack([view, panel])


class CsvWriter:
    """One row per face per frame: identity, box, pose, gaze, the 68 landmarks, occlusion, the blendshapes'
    expected error and the 52 blendshapes."""

    kind = "CSV"

    def __init__(self, path: str, blendshape_names: list[str], occlusion: bool | None = None, *,
                 start: bool = True) -> None:
        """``blendshape_names``: the fit's (none without the 3D fit: no pose or blendshape columns);
        ``occlusion``: whether faces carry ``occluded`` flags (the fit's or the refiner's), by default
        when there are blendshapes; ``start=False`` leaves an existing file as it is until :meth:`start`."""
        self.path = path
        self.names = list(blendshape_names)
        self.occlusion = bool(self.names) if occlusion is None else occlusion
        self._out = _RecordFile(path, self.kind)
        self._rows = io.StringIO()  # a frame's rows, written to the file in one piece
        self._csv = csv.writer(self._rows)
        header = ["frame", "time_s", "source", "id", "score", "x0", "y0", "x1", "y1"]
        if self.names:
            header += ["fit_ok", "yaw", "pitch", "roll", "qw", "qx", "qy", "qz", "tx_mm", "ty_mm", "tz_mm",
                       "pose_error_deg", "gaze_yaw", "gaze_pitch"]
        header += [f"lm{i}_{axis}" for i in range(68) for axis in "xy"]
        if self.occlusion:
            header += [f"occluded{i}" for i in range(68)]
        if self.names:
            header += ["blendshapes_error"]
        header += self.names
        self._header = header
        if start:
            self.start()

    def start(self) -> None:
        """Empty the file and write the header row."""
        self._out.start()
        self._csv.writerow(self._header)
        self._emit()

    def _emit(self) -> None:
        text = self._rows.getvalue()
        self._rows.seek(0)
        self._rows.truncate()
        if text:
            self._out.write(text)

    def write(self, result: FrameResult) -> None:
        source = readable_path(result.source)
        for face in result.faces:
            row = [result.frame, f"{result.time_s:.4f}", source, face.id, f"{face.score:.4f}"]
            row += [f"{v:.2f}" for v in face.bbox]
            if self.names:
                p = face.pose
                row += [int(face.fit_ok), f"{p.yaw:.2f}", f"{p.pitch:.2f}", f"{p.roll:.2f}"]
                row += [f"{v:.5f}" for v in p.quaternion] + [f"{v:.1f}" for v in p.translation_mm]
                row += ["" if p.expected_error_deg is None else f"{p.expected_error_deg:.2f}"]
                row += ["", ""] if face.gaze is None else [f"{face.gaze.yaw:.2f}", f"{face.gaze.pitch:.2f}"]
            row += [f"{v:.2f}" for v in face.landmarks.reshape(-1)]
            if self.occlusion:
                row += [""] * 68 if face.occluded is None else [int(v) for v in face.occluded]
            if self.names:
                row += ["" if face.blendshapes_error is None else f"{face.blendshapes_error:.3f}"]
            row += [f"{face.blendshapes[n]:.4f}" for n in self.names]
            self._csv.writerow(row)
        self._emit()

    def close(self) -> None:
        self._out.close()


_VIDEO_SLACK = 1 << 20  # bytes an overlay video leaves free: its index and the file system's own
# A JSON or CSV file is not emptied on a disk with less free than this (a few hundred frames' records):
# the run would stop at once, and the earlier file would be lost for nothing.
_RECORDS_SLACK = 1 << 20


def _free_bytes(path: Path) -> int:
    """Free space where ``path`` is written (a link's target: it may be on another disk)."""
    return shutil.disk_usage(Path(os.path.realpath(path)).parent).free


def _too_full(shown: str, free: int) -> OutputError:
    return OutputError(f"cannot write video '{shown}': the disk is too full ({free / 1e6:.1f} MB free; a video "
                       f"keeps {_VIDEO_SLACK >> 20} MB for its index)")


def _file_state(path: Path) -> tuple[int, int] | None:
    """A regular file's size and modification time (None: no such file), to tell whether a call changed it."""
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns) if stat.S_ISREG(status.st_mode) else None


def overlay_is_video(path: str | os.PathLike) -> bool:
    """Whether an overlay path names a video file (by its ending) rather than a folder of PNG frames; a name ending
    in a separator is a folder ('overlays.mp4/')."""
    return not _names_a_folder(path) and Path(path).suffix.lower() in VIDEO_SUFFIXES


def _names_a_folder(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(("/", os.sep))


class OverlayWriter:
    """Overlay frames to a video file (by suffix) or, otherwise, PNGs in a folder.

    A video is only readable once closed (its index is written last), so the writer keeps room for that: it
    stops before the disk is full, closes the video whole, and raises OutputError."""

    def __init__(self, path: str, fps: float | None, wireframe: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.wireframe = wireframe
        # A rate the encoders refuse (OpenCV's MPEG-4 writer fails below about 0.0015 fps) plays at 30.
        self.fps = fps if fps and 0.01 <= fps <= 1000 else 30.0
        self._video: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._frames = 0
        self._resized = False  # whether a frame of another size was fitted to the video's (said once)
        # An overlay folder's frames carry their file's name and their frame number, which one source never
        # repeats; a later source of the run whose files' names an earlier one took (a/clip.mp4, b/clip.mp4, or
        # one clip given twice) gets "clip-2", so that neither overwrites the other's frames.
        self._name_of: dict[str, str] = {}  # this source's files -> their frames' name
        self._stem_names: dict[str, str] = {}  # this source's file names -> their frames' name
        self._taken: set[str] = set()  # the names the sources before took
        self._next_number: dict[str, int] = {}  # for each name taken, the next number to try
        self._renamed = 0
        self._is_video = overlay_is_video(path)
        self._named_as_folder = _names_a_folder(path)  # 'overlays.mp4/': a folder, asked for
        shown = readable_path(path)
        try:
            self._check_destination(shown)
        except OSError as exc:  # from a look at the path itself: a name too long for the file system, say
            kind = "video" if self._is_video else "overlay frames into"
            raise OutputError(f"cannot write {kind} '{shown}': {exc.strerror or exc}") from None

    def _check_destination(self, shown: str) -> None:
        """What would stop the overlay, found now, before any other output is opened: an OutputError that says so.
        A folder is made here."""
        path = str(self.path)
        if not self._is_video:
            if self.path.exists() and not self.path.is_dir():
                raise OutputError(f"cannot write overlay frames into '{shown}': it is a file, not a folder (name a "
                                  f"folder, or a video file ending in {' '.join(VIDEO_SUFFIXES)})")
            if self.path.suffix and not self.path.is_dir() and not self._named_as_folder:
                logging.getLogger("tracker").warning(
                    "'%s' is not a video file this writer makes (%s): the overlay frames go to a folder of that "
                    "name, as PNGs", shown, " ".join(VIDEO_SUFFIXES))
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                with os.scandir(self.path) as entries:
                    earlier = sum(1 for entry in entries if named_like_an_overlay_frame(entry.name))
            except OSError as exc:
                raise OutputError(f"cannot create overlay folder '{shown}': {exc.strerror}") from None
            try:  # a folder that is there but takes no files fails now, not at the first frame
                with tempfile.NamedTemporaryFile(dir=self.path, prefix=".overlay-check-", suffix=".part"):
                    pass
            except OSError as exc:
                raise OutputError(f"cannot write overlay frames into '{shown}': {exc.strerror or exc}") from None
            if earlier:  # mixed with this run's, they would read as one sequence
                logging.getLogger("tracker").warning(
                    "overlay folder '%s' already holds %d frames of an earlier run: this run's overwrite those of "
                    "the same number and name, the others stay", shown, earlier)
            return
        # The video file is made at the first frame (its size is not known before): what would stop it is
        # checked now, before any other output is opened.
        if not is_utf8_path(path):
            raise OutputError(f"cannot write video '{shown}': OpenCV cannot write a file whose name is not "
                              "UTF-8; choose another name")
        folder = self.path.parent
        if self.path.is_dir():
            raise OutputError(f"cannot write video '{shown}': it is a folder")
        if self.path.exists() and not self.path.is_file():  # the encoder would wait for a FIFO's reader, deaf to ^C
            raise OutputError(f"cannot write video '{shown}': not a regular file (a pipe or a device); a video "
                              "file is written out of order (its index last), so it must be a file on disk")
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise OutputError(f"cannot write video '{shown}': '{readable_path(str(folder))}' {what}")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"cannot write video '{shown}': the folder is not writable")
        if self.path.is_file():  # a regular file: opening a FIFO to check would wait for its reader
            try:  # an earlier video that may not be overwritten (opened without emptying it)
                os.close(os.open(self.path, os.O_WRONLY))
            except OSError as exc:
                raise OutputError(f"cannot write video '{shown}': {exc.strerror or exc}") from None
        if (free := _free_bytes(self.path)) < _VIDEO_SLACK:
            raise _too_full(shown, free)

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        overlay = draw_overlay(image, result, self.wireframe)
        if not self._is_video:
            self._write_png(overlay, result)
            return
        # MPEG-4 encoders refuse frames under a few pixels a side, and OpenCV's crashes on very narrow ones; they
        # also drop an odd last row or column (4:2:0 colour). So a tiny or odd frame is padded (black, right
        # and bottom), which the overlay can afford, and every pixel of the picture is kept.
        h, w = overlay.shape[:2]
        padded_h, padded_w = max(h, MIN_VIDEO_SIDE), max(w, MIN_VIDEO_SIDE)
        # Not past the most MPEG-4 takes: an odd 8191 px side keeps its crop to 8190, as before.
        padded_h, padded_w = (side + side % 2 if side < MAX_MPEG4_SIDE else side for side in (padded_h, padded_w))
        if self._video is not None and (padded_w, padded_h) != self._size:
            overlay = self._fitted(overlay)  # another size than the first frame's: scaled first, then no padding
        elif (padded_h, padded_w) != (h, w):
            overlay = cv2.copyMakeBorder(overlay, 0, padded_h - h, 0, padded_w - w, cv2.BORDER_CONSTANT,
                                         value=(0, 0, 0))
        if self._video is None:
            h, w = overlay.shape[:2]
            suffix = self.path.suffix.lower()
            before = _file_state(self.path)
            with opencv_quieter():  # the encoder's own error lines: the one below says it
                video = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[suffix]), self.fps,
                                        (w, h))
            if not video.isOpened():
                larger = f" (it takes at most {MAX_MPEG4_SIDE} px a side; .avi takes more)" if (
                    suffix != ".avi" and max(w, h) > MAX_MPEG4_SIDE) else ""
                # A video a run before wrote there, beside this run's other outputs: said, so that it is not taken
                # for this run's.
                earlier = "" if before is None else (
                    "; the video there from before is left as it was" if _file_state(self.path) == before else
                    "; the video there from before was emptied")
                raise OutputError(f"cannot write video '{readable_path(str(self.path))}': the {suffix} encoder "
                                  f"refused frames of {w}x{h}{larger}{earlier}")
            self._video, self._size = video, (w, h)
        self._keep_room()
        self._video.write(overlay)
        self._frames += 1

    def _fitted(self, overlay: np.ndarray) -> np.ndarray:
        """A frame of another size than the video's (a folder's images differ, and so may a run's sources) scaled
        to fit it, its shape kept: black bars fill the rest."""
        if not self._resized:
            self._resized = True
            logging.getLogger("tracker").warning(
                "overlay video '%s' is %dx%d, the size its first frame set: frames of other sizes are scaled to "
                "fit, with black bars; an overlay folder keeps each frame's size", readable_path(str(self.path)),
                *self._size)
        (width, height), (w, h) = self._size, overlay.shape[1::-1]
        scale = min(width / w, height / h)
        fitted_w, fitted_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
        fitted = cv2.resize(overlay, (fitted_w, fitted_h),
                            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        left, top = (width - fitted_w) // 2, (height - fitted_h) // 2
        return cv2.copyMakeBorder(fitted, top, height - fitted_h - top, left, width - fitted_w - left,
                                  cv2.BORDER_CONSTANT, value=(0, 0, 0))

    def _keep_room(self) -> None:
        """Stop, with the video closed whole, while the disk still has room for another frame and the index."""
        try:
            free = _free_bytes(self.path)
            written = self.path.stat().st_size if self.path.exists() else 0  # the encoder makes it at its leisure
        except OSError:
            return  # nothing to tell from; the close check below still looks at the result
        per_frame = max(written // max(self._frames, 1), 3 * self._size[0] * self._size[1] // 10)
        needed = 4 * per_frame + 64 * (self._frames + 1) + _VIDEO_SLACK  # frames the encoder holds, the index
        if free >= needed:
            return
        shown = readable_path(str(self.path))
        self.close()  # with no frame yet, nothing to keep: close leaves no file rather than one that does not play
        if self._frames == 0:
            raise _too_full(shown, free)
        raise OutputError(f"stopped the overlay video '{shown}' after {self._frames} frames: the disk is nearly "
                          f"full ({free / 1e6:.1f} MB free); it is closed and plays up to there")

    def next_source(self) -> None:
        """The run goes on to its next source: the names this one's frames took are taken for good (the same clip
        given again names its frames anew)."""
        self._taken.update(self._stem_names.values())
        self._stem_names.clear()
        self._name_of.clear()

    def _frame_name(self, source: str) -> str:
        """The name an overlay frame of ``source`` carries: its file's stem ("frame" for a camera or stream), cut
        to fit a file name, with "-2", "-3"... when a source before in this run took it."""
        name = self._name_of.get(source)
        if name is not None:
            return name
        stem = Path(source).stem if os.path.isfile(source) else "frame"
        while len(os.fsencode(stem)) > _MAX_STEM_BYTES:
            stem = stem[:-1]
        name = self._stem_names.get(stem)
        if name is None:
            name = stem
            if stem in self._taken:
                n = self._next_number.get(stem, 2)
                while f"{stem}-{n}" in self._taken:
                    n += 1
                self._next_number[stem] = n + 1
                name = f"{stem}-{n}"
                self._renamed += 1
                if self._renamed <= _RENAMES_LISTED:
                    logging.getLogger("tracker").info(
                        "overlay frames of '%s' are named NNNNNN_%s.png, as a source before in this run took '%s'%s",
                        readable_path(source), readable_path(name), readable_path(stem),
                        "" if self._renamed < _RENAMES_LISTED else " (other sources renamed so are not listed)")
            self._stem_names[stem] = name
        self._name_of[source] = name
        return name

    def _write_png(self, overlay: np.ndarray, result: FrameResult) -> None:
        # named_like_an_overlay_frame tells these names
        name = self.path / f"{result.frame:06d}_{self._frame_name(result.source)}.png"
        # Encoded here and written by Python: OpenCV's own file functions crash on names that are not UTF-8.
        # Written under a temporary name and then renamed, so a full disk leaves no half-written PNG.
        ok, data = cv2.imencode(".png", overlay)
        partial = name.with_name(name.name + ".part")
        try:
            if not ok:
                raise OSError("the PNG encoder failed")
            partial.write_bytes(data.tobytes())
            os.replace(partial, name)
        except OSError as exc:
            with suppress(OSError):  # (the name itself may be what the file system refused)
                partial.unlink(missing_ok=True)
            raise OutputError(f"cannot write overlay frame '{readable_path(str(name))}': "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:  # a stop that interrupts the write: no half-written frame left behind
            with suppress(OSError):
                partial.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        if self._video is None:
            return
        self._video.release()
        self._video = None
        if self._frames == 0:  # stopped (or the disk full) between opening the encoder and its first frame: no file
            with suppress(OSError):  # rather than one that does not play (the encoder had emptied any video there)
                self.path.unlink(missing_ok=True)
            return
        if stream_open_pending():  # the check would wait out a stream's open timeout after a stop
            return
        # OpenCV's writer reports no failure: a disk that filled up leaves a file without its index. (FFmpeg's
        # complaint about such a file is silenced by tracker.sources, as for any video read.)
        readable = cv2.VideoCapture(str(self.path))
        opened = readable.isOpened() and readable.read()[0]
        readable.release()
        if not opened:
            raise OutputError(f"the overlay video '{readable_path(str(self.path))}' could not be completed "
                              "(a full disk?); it does not play")


# Opens and closes one window in a child process: with a display that is named but cannot be used (no X
# server there, Wayland alone for an X build), OpenCV's Qt aborts the whole process, which no code can catch.
_WINDOW_PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"


def _require_a_named_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise OutputError("cannot open a window: no display (DISPLAY is not set); drop --show or use --output")


def probe_display(timeout_s: float = 10.0, cancelled: Callable[[], bool] = lambda: False) -> None:
    """Raise OutputError unless a window can be opened here (a second or so: a child process opens one).
    Returns at once, the child killed, when ``cancelled()`` turns true (a stop asked for meanwhile)."""
    _require_a_named_display()
    child = subprocess.Popen([sys.executable, "-c", _WINDOW_PROBE], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while child.poll() is None:  # a display that never answers blocks the child, whatever signal it gets
        if cancelled() or time.monotonic() > deadline:
            child.kill()
            child.communicate()
            if cancelled():
                return
            raise OutputError(f"cannot open a window: the display did not answer in {timeout_s:.0f} s; drop "
                              "--show or use --output")
        time.sleep(0.02)
    said_lines = child.communicate()[1]
    if child.returncode != 0:
        # Qt says why on its first line; a Python exception (a build without a GUI) on its last.
        lines = [line.strip() for line in said_lines.splitlines() if line.strip()] or ["no reason given"]
        said = lines[-1] if any(line.startswith("Traceback") for line in lines) else lines[0]
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the desktop"
        raise OutputError(f"cannot open a window on display '{where}' ({said}); drop --show or use --output")


def screen_size() -> tuple[int, int] | None:
    """The screen's width and height in pixels where the system tells it without a GUI toolkit of our own (X11,
    XWayland included, and Windows); None elsewhere or when it cannot be asked. With several monitors X11 gives
    the width of them all."""
    try:
        if sys.platform == "win32":
            user32 = ctypes.windll.user32
            size = (int(user32.GetSystemMetrics(0)), int(user32.GetSystemMetrics(1)))  # SM_CXSCREEN, SM_CYSCREEN
        elif os.environ.get("DISPLAY") and (name := ctypes.util.find_library("X11")):
            x11 = ctypes.CDLL(name)
            x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
            for call in (x11.XDefaultScreen, x11.XCloseDisplay):
                call.argtypes = [ctypes.c_void_p]
            for call in (x11.XDisplayWidth, x11.XDisplayHeight):
                call.argtypes = [ctypes.c_void_p, ctypes.c_int]
            display = x11.XOpenDisplay(None)
            if not display:
                return None
            try:
                screen = x11.XDefaultScreen(display)
                size = (int(x11.XDisplayWidth(display, screen)), int(x11.XDisplayHeight(display, screen)))
            finally:
                x11.XCloseDisplay(display)
        else:
            return None
    except (OSError, AttributeError):  # a library that will not load, or lacks the call
        return None
    return size if size[0] > 0 and size[1] > 0 else None


def _window_failed(exc: cv2.error) -> OutputError:
    """An error of OpenCV's window calls, in one line (the last of OpenCV's)."""
    return OutputError(f"cannot show the window: {str(exc).strip().splitlines()[-1]}")


# Keys (low byte of cv2.waitKey) that move a held still on: space, Enter (CR or LF), n.
_NEXT_STILL_KEYS = (ord(" "), 13, 10, ord("n"), ord("N"))


class Window:
    """A live preview window; ``show`` returns False once the user closes it or presses q/Esc.

    Keys: ``q``/Esc quit, ``m`` toggles a mirrored view (displayed pixels only: no output changes),
    ``s`` saves the current view as ``snapshot_YYYYmmdd_HHMMSS.png`` in the working directory (at full size).
    The view has a side panel with the strongest blendshapes and a line with the display rate and,
    when the caller gives it, the capture-to-display latency. A view larger than the screen (less
    :data:`SCREEN_MARGIN`; :data:`MAX_SHOWN` where its size is not known) is shown scaled down to fit it. The window
    has no toolbar: Qt's would offer a second "save" whose dialog halts
    the run, deaf to Ctrl-C, while it is open."""

    TITLE = "face tracker (q quit, m mirror, s snapshot)"
    # Width and height the shown view fits in when the screen's size is not known: a 1080p screen with its panels
    # and the window's frame. An autosized window cannot be shrunk, and a 4K frame's would show its corner only.
    MAX_SHOWN = (1600, 900)
    # Room a known screen keeps for the window's frame and title, and a taskbar or panel.
    SCREEN_MARGIN = (64, 128)
    _SMOOTHING = 0.1  # weight of the newest sample in the fps/latency readouts: steady, readable digits
    _HOLD_POLL_MS = 50  # how often a held still looks for a key, the window's closing and a stop

    def __init__(self, wireframe: np.ndarray | None = None, *, mirror: bool = False) -> None:
        self.wireframe = wireframe
        _require_a_named_display()
        self.mirror = mirror
        self._open = False
        self._view: np.ndarray | None = None
        self._shown: tuple | None = None  # what the last view was rendered from: a held still re-renders it
        self._last_render: float | None = None
        self.fps: float | None = None
        self.latency_ms: float | None = None
        self._log = logging.getLogger("tracker.window")
        self._room: tuple[int, int] | None = None  # what the view is scaled to fit, known when the window opens

    def render(self, image: np.ndarray, result: FrameResult, status: str = "",
               latency_ms: float | None = None) -> np.ndarray:
        """The view ``show`` displays (overlay, panel, readouts), without touching the screen."""
        now = time.perf_counter()
        if self._last_render is not None and now > self._last_render:
            self.fps = self._smooth(self.fps, 1.0 / (now - self._last_render))
        self._last_render = now
        if latency_ms is not None and math.isfinite(latency_ms):
            self.latency_ms = self._smooth(self.latency_ms, latency_ms)
        elif latency_ms is None:  # a still has none: a video's before it would linger on screen
            self.latency_ms = None
        view = draw_overlay(image, result, self.wireframe, mirror=self.mirror, panel=True)
        # Readouts go on after mirroring (draw_overlay flips before any text), so they always read normally.
        scale = max(1, round(max(image.shape[:2]) / 640))
        lines = [status] if status else []
        readout = [f"{self.fps:.1f} fps" if self.fps is not None else "",
                   f"latency {self.latency_ms:.0f} ms" if self.latency_ms is not None else "",
                   "mirrored view" if self.mirror else ""]
        lines.append("  ".join(part for part in readout if part))
        for i, line in enumerate(line for line in lines if line):
            _put_text(view, line, (8 * scale, (20 + 20 * i) * scale), 0.5 * scale, (0, 255, 255), scale)
        _put_text(view, "q quit  m mirror  s snapshot", (8 * scale, view.shape[0] - 8 * scale), 0.4 * scale,
                  (200, 200, 200), 1)
        self._view = view
        return view

    def show(self, image: np.ndarray, result: FrameResult, status: str, latency_ms: float | None = None) -> bool:
        self._shown = (image, result, status)
        self.render(image, result, status, latency_ms)
        try:
            self._display()
            key = cv2.waitKey(1)
            visible = self._visible()
        except cv2.error as exc:
            raise _window_failed(exc) from None
        return self.handle_key(key) and visible

    def _display(self) -> None:
        """The last rendered view on screen, scaled down to fit the screen (MAX_SHOWN if its size is unknown)."""
        if self._room is None:
            screen = screen_size()
            self._room = self.MAX_SHOWN if screen is None else (max(320, screen[0] - self.SCREEN_MARGIN[0]),
                                                               max(240, screen[1] - self.SCREEN_MARGIN[1]))
        view = self._view
        h, w = view.shape[:2]
        fit = min(1.0, self._room[0] / w, self._room[1] / h)
        if fit < 1.0:
            view = cv2.resize(view, (max(1, round(w * fit)), max(1, round(h * fit))), interpolation=cv2.INTER_AREA)
        if not self._open:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.imshow(self.TITLE, view)
        self._open = True

    def _visible(self) -> bool:
        return cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) >= 1

    def hold(self, stopped: Callable[[], bool]) -> bool:
        """Keep the view shown (a still) until the user asks for the next one (space, Enter or n: True) or quits
        (q, Esc or a closed window: False), or ``stopped()`` (True: a stop the caller then honours). ``s`` saves
        a snapshot and ``m`` mirrors the view, both while it is held; other keys (Shift, Alt-Tab) do nothing."""
        while not stopped():
            try:
                key = cv2.waitKey(self._HOLD_POLL_MS)
                if not self._visible():
                    return False
                if key < 0:
                    continue
                if (key & 0xFF) in _NEXT_STILL_KEYS:
                    return True
                mirrored = self.mirror
                if not self.handle_key(key):
                    return False
                if self.mirror != mirrored and self._shown is not None:  # m: the held view, mirrored
                    self.render(*self._shown)
                    self._display()
            except cv2.error as exc:
                raise _window_failed(exc) from None
        return True

    def handle_key(self, key: int) -> bool:
        """Act on a key code from ``cv2.waitKey`` (-1: none); False means the user asked to quit."""
        if key < 0:
            return True
        key &= 0xFF  # some backends set modifier bits above the character
        if key in (ord("q"), ord("Q"), 27):
            return False
        if key in (ord("m"), ord("M")):
            self.mirror = not self.mirror
        elif key in (ord("s"), ord("S")):
            self.save_snapshot()
        return True

    def save_snapshot(self) -> Path | None:
        """Write the last rendered view to ``snapshot_YYYYmmdd_HHMMSS.png``; its path, or None if nothing
        was shown yet or the file could not be written (a warning; the window keeps running)."""
        if self._view is None:
            return None
        folder = Path.cwd()
        stamp = time.strftime("%Y%m%d_%H%M%S")
        path = folder / f"snapshot_{stamp}.png"
        n = 1
        while path.exists():  # two snapshots in one second must not overwrite each other
            path = folder / f"snapshot_{stamp}_{n}.png"
            n += 1
        try:
            ok = cv2.imwrite(str(path), self._view)
        except cv2.error:
            ok = False
        if not ok:
            self._log.warning("cannot write snapshot '%s'", path)
            return None
        self._log.info("snapshot saved to %s", path)
        return path

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else old + self._SMOOTHING * (new - old)

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.TITLE)
            cv2.waitKey(1)
            self._open = False
