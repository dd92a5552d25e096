"""Where results go: JSON Lines, an overlay video (or image folder), a live window.

Every writer survives an interrupted run: JSON Lines are written and flushed a
whole line at a time, and ``close`` is safe to call more than once.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from tracker.pose import MODEL_TO_CAMERA
from tracker.types import FrameResult

VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


class OutputError(RuntimeError):
    """An output cannot be opened or written; the message is one line for the user."""


class JsonlWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"cannot write JSON Lines to '{path}': {exc.strerror}") from None

    def write(self, result: FrameResult) -> None:
        # One write + flush per record: an interrupted run leaves only whole lines.
        self._file.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stdout and not self._file.closed:
            self._file.close()


def draw_overlay(image: np.ndarray, result: FrameResult, wireframe: np.ndarray | None = None) -> np.ndarray:
    """A copy of the frame with boxes, IDs, landmarks (self-occluded ones hollow), pose axes and,
    given the mesh's triangles, its wireframe."""
    out = image.copy()
    scale = max(1, round(max(out.shape[:2]) / 640))
    for face in result.faces:
        if wireframe is not None:
            pts = np.round(face.mesh.points[:, :2]).astype(np.int32)
            cv2.polylines(out, list(pts[wireframe]), True, (120, 120, 120), 1, cv2.LINE_AA)
        x0, y0, x1, y1 = np.round(face.bbox).astype(int).tolist()
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), scale)
        cv2.putText(out, f"#{face.id} {face.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45 * scale, (255, 200, 0), scale, cv2.LINE_AA)
        occluded = face.occluded if face.occluded is not None else np.zeros(68, dtype=bool)
        for (x, y), hidden in zip(np.round(face.landmarks).astype(int).tolist(), occluded):
            cv2.circle(out, (x, y), scale + 1, (0, 255, 0), 1 if hidden else -1, cv2.LINE_AA)
        if face.pose is not None:
            _draw_axes(out, face, scale)
    return out


def _draw_axes(out: np.ndarray, face, scale: int) -> None:
    # The head's own axes (subject's left, up, out of the face) from the nose tip, in the image.
    axes = face.pose.rotation @ MODEL_TO_CAMERA
    length = 0.4 * (face.bbox[2] - face.bbox[0])
    origin = face.landmarks[30]
    for k, colour in enumerate(((0, 0, 255), (0, 255, 0), (255, 0, 0))):  # x red, y green, z blue (BGR)
        tip = origin + length * axes[:2, k]
        cv2.arrowedLine(out, tuple(np.round(origin).astype(int).tolist()), tuple(np.round(tip).astype(int).tolist()),
                        colour, scale + 1, cv2.LINE_AA, tipLength=0.15)


class CsvWriter:
    """One row per face per frame: identity, box, pose, the 68 landmarks, occlusion and the 52 blendshapes."""

    def __init__(self, path: str, blendshape_names: list[str]) -> None:
        self.names = list(blendshape_names)
        try:
            self._file = sys.stdout if path == "-" else open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"cannot write CSV to '{path}': {exc.strerror}") from None
        self._csv = csv.writer(self._file)
        header = ["frame", "time_s", "source", "id", "score", "x0", "y0", "x1", "y1"]
        if self.names:
            header += ["fit_ok", "yaw", "pitch", "roll", "qw", "qx", "qy", "qz", "tx_mm", "ty_mm", "tz_mm"]
        header += [f"lm{i}_{axis}" for i in range(68) for axis in "xy"]
        if self.names:
            header += [f"occluded{i}" for i in range(68)] + self.names
        self._csv.writerow(header)
        self._file.flush()

    def write(self, result: FrameResult) -> None:
        for face in result.faces:
            row = [result.frame, f"{result.time_s:.4f}", result.source, face.id, f"{face.score:.4f}"]
            row += [f"{v:.2f}" for v in face.bbox]
            if self.names:
                p = face.pose
                row += [int(face.fit_ok), f"{p.yaw:.2f}", f"{p.pitch:.2f}", f"{p.roll:.2f}"]
                row += [f"{v:.5f}" for v in p.quaternion] + [f"{v:.1f}" for v in p.translation_mm]
            row += [f"{v:.2f}" for v in face.landmarks.reshape(-1)]
            if self.names:
                row += [int(v) for v in face.occluded] + [f"{face.blendshapes[n]:.4f}" for n in self.names]
            self._csv.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stdout and not self._file.closed:
            self._file.close()


class OverlayWriter:
    """Overlay frames to a video file (by suffix) or, otherwise, PNGs in a folder."""

    def __init__(self, path: str, fps: float | None, wireframe: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.wireframe = wireframe
        self.fps = fps if fps and fps > 0 else 30.0
        self._video: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        if not self._is_video:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create overlay folder '{path}': {exc.strerror}") from None

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        overlay = draw_overlay(image, result, self.wireframe)
        if not self._is_video:
            stem = Path(result.source).stem if os.path.isfile(result.source) else "frame"
            cv2.imwrite(str(self.path / f"{result.frame:06d}_{stem}.png"), overlay)
            return
        if self._video is None:
            h, w = overlay.shape[:2]
            self._size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.path.suffix.lower()])
            self._video = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._video.isOpened():
                raise OutputError(f"cannot write video '{self.path}'")
        if (overlay.shape[1], overlay.shape[0]) != self._size:
            # Images of a folder differ in size; a video needs one frame size.
            overlay = cv2.resize(overlay, self._size, interpolation=cv2.INTER_AREA)
        self._video.write(overlay)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None


class Window:
    """A live preview window; ``show`` returns False once the user closes it or presses q/Esc."""

    TITLE = "face tracker (q to quit)"

    def __init__(self, wireframe: np.ndarray | None = None) -> None:
        self.wireframe = wireframe
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise OutputError("cannot open a window: no display (DISPLAY is not set); drop --show or use --output")
        self._open = False

    def show(self, image: np.ndarray, result: FrameResult, status: str) -> bool:
        overlay = draw_overlay(image, result, self.wireframe)
        cv2.putText(overlay, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)
        try:
            cv2.imshow(self.TITLE, overlay)
            self._open = True
            key = cv2.waitKey(1) & 0xFF
            visible = cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error as exc:
            raise OutputError(f"cannot show the window: {str(exc).strip().splitlines()[-1]}") from None
        return visible and key not in (ord("q"), 27)

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.TITLE)
            cv2.waitKey(1)
            self._open = False
