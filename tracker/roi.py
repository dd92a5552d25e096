"""Rotated square regions of interest and the crops they define.

A ROI is a square of side ``size`` pixels centred at (``cx``, ``cy``), rotated by
``angle`` radians so that its x axis runs along the subject's eye line (from
the subject's right eye to their left eye, i.e. image-left to image-right for
an upright face). Crops are taken with one affine warp, and crop coordinates
map back to the image with the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    cx: float
    cy: float
    size: float
    angle: float  # radians; image y points down, so positive turns clockwise on screen

    def crop_to_image(self, crop_size: int) -> np.ndarray:
        """2×3 affine matrix taking crop pixel coordinates to image pixel coordinates."""
        k = self.size / crop_size
        c, s = np.cos(self.angle) * k, np.sin(self.angle) * k
        half = crop_size / 2.0
        return np.array(
            [[c, -s, self.cx - half * c + half * s], [s, c, self.cy - half * s - half * c]], dtype=np.float64
        )

    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box of the rotated square."""
        r = 0.5 * self.size * (abs(np.cos(self.angle)) + abs(np.sin(self.angle)))
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


def roi_from_points(points: np.ndarray, eye_from: np.ndarray, eye_to: np.ndarray, scale: float) -> Roi:
    """Square ROI around ``points`` (N×2 px), rotated along the eye line, enlarged by ``scale``.

    The extent is measured in the rotated frame, so a tilted head does not get an
    inflated box (MediaPipe measures it axis-aligned).
    """
    d = np.asarray(eye_to, np.float64) - np.asarray(eye_from, np.float64)
    angle = float(np.arctan2(d[1], d[0]))
    c, s = np.cos(angle), np.sin(angle)
    pts = np.asarray(points, np.float64)[:, :2]
    # Coordinates along the ROI's own axes.
    a = pts[:, 0] * c + pts[:, 1] * s
    b = -pts[:, 0] * s + pts[:, 1] * c
    ca, cb = 0.5 * (a.min() + a.max()), 0.5 * (b.min() + b.max())
    size = max(a.max() - a.min(), b.max() - b.min()) * scale
    return Roi(cx=float(ca * c - cb * s), cy=float(ca * s + cb * c), size=float(max(size, 1.0)), angle=angle)


def crop(image: np.ndarray, roi: Roi, crop_size: int) -> np.ndarray:
    """Warp the ROI to a crop_size² image (border replicated, as MediaPipe does for the mesh)."""
    m = roi.crop_to_image(crop_size)
    return cv2.warpAffine(
        image,
        m,
        (crop_size, crop_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def crop_points_to_image(points: np.ndarray, roi: Roi, crop_size: int) -> np.ndarray:
    """Map N×2 (or N×3, z scaled like x) crop pixel coordinates to image pixels."""
    m = roi.crop_to_image(crop_size)
    out = np.array(points, dtype=np.float64, copy=True)
    xy = points[:, :2] @ m[:, :2].T + m[:, 2]
    out[:, :2] = xy
    if points.shape[1] > 2:
        out[:, 2] = points[:, 2] * (roi.size / crop_size)
    return out


def crop_camera_to_image(camera: np.ndarray, roi: Roi, crop_size: int) -> np.ndarray:
    """An affine camera (2×4: crop px = A·X + t) composed with the crop-to-image map: image px = A'·X + t'."""
    m = roi.crop_to_image(crop_size)
    return np.concatenate([m[:, :2] @ camera[:, :3], (m[:, :2] @ camera[:, 3] + m[:, 2])[:, None]], 1)


def image_points_to_crop(points: np.ndarray, roi: Roi, crop_size: int) -> np.ndarray:
    """Inverse of :func:`crop_points_to_image` for N×2 points."""
    m = roi.crop_to_image(crop_size)
    inv = cv2.invertAffineTransform(m)
    return np.asarray(points, np.float64)[:, :2] @ inv[:, :2].T + inv[:, 2]


def outside_image(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which points (x, y in the first two columns, pixels) lie beyond the edge of an image of ``shape``."""
    x, y = points[:, 0], points[:, 1]
    return (x < -0.5) | (y < -0.5) | (x > shape[1] - 0.5) | (y > shape[0] - 0.5)


def follow(previous: Roi, target: Roi, band: float) -> Roi:
    """``previous`` moved only as far as it must to come within ``band`` of ``target``.

    The centre comes within ``band`` × size of the target's, the size within a factor of
    e^band, the angle within ``band`` radians. A held-still face keeps its crop, so the
    networks do not see the wobble of the last frame's points as motion of the face; a
    moving face drags its crop along at once, never more than the band behind. A ROI that
    is not finite or has no size on either side gives ``target`` as it is.
    """
    values = (previous.cx, previous.cy, previous.size, previous.angle, target.cx, target.cy, target.size, target.angle)
    if not (np.isfinite(values).all() and previous.size > 0 and target.size > 0):
        return target
    shift = np.array([target.cx - previous.cx, target.cy - previous.cy])
    distance = float(np.hypot(*shift))
    reach = band * previous.size
    centre = np.array([previous.cx, previous.cy])
    if distance > reach:
        centre += shift * (1.0 - reach / distance)
    size = previous.size * np.exp(_beyond(float(np.log(target.size / previous.size)), band))
    turn = (target.angle - previous.angle + np.pi) % (2.0 * np.pi) - np.pi
    angle = previous.angle + _beyond(turn, band)
    if not -np.pi <= angle < np.pi:  # kept in [-π, π) as the ROI rolls on
        angle = (angle + np.pi) % (2.0 * np.pi) - np.pi
    return Roi(cx=float(centre[0]), cy=float(centre[1]), size=float(size), angle=float(angle))


def _beyond(step: float, band: float) -> float:
    """The part of ``step`` outside [-band, band]."""
    return float(np.sign(step) * max(0.0, abs(step) - band))
