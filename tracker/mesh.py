"""MediaPipe's 468-point face mesh network with attention (ONNX) on rotated face crops.

All faces of a frame go through the network as one batch. The result keeps
both the raw crop-space output (what the 68-point mapping and the refiner
consume) and the points in image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from tracker.backends import create_session
from tracker.detector import LEFT_EYE, RIGHT_EYE, Detection
from tracker.roi import Roi, crop, crop_points_to_image, roi_from_points

MESH_INPUT = 192
# FaceMesh's refine_landmarks=True network: its lips and eyes come from attention sub-networks.
MESH_MODEL = "face_landmark_with_attention.onnx"
# Outer eye corners of the mesh (subject's right, then left): the ROI's rotation axis.
MESH_RIGHT_EYE_OUTER, MESH_LEFT_EYE_OUTER = 33, 263
# MediaPipe enlarges both detection and landmark ROIs by 1.5 (square, long side).
ROI_SCALE = 1.5


@dataclass
class MeshResult:
    roi: Roi
    crop_points: np.ndarray  # 468×3 in crop pixels (0..192), z scaled like x
    points: np.ndarray  # 468×3 in image pixels
    presence: float  # probability that the crop holds a face
    # The same network on the horizontally mirrored crop, in that mirrored crop's pixels (None if not run).
    mirror_crop_points: np.ndarray | None = None
    # Intermediate feature maps (features_48, features_24) of the crop and of its mirror, when asked for,
    # and the network's input itself (3×192×192 RGB in [0, 1]): the refiner reads both.
    features: tuple[np.ndarray, np.ndarray] | None = None
    mirror_features: tuple[np.ndarray, np.ndarray] | None = None
    pixels: np.ndarray | None = None
    mirror_pixels: np.ndarray | None = None
    # The irises, 2×5×2 in crop pixels: the subject's right eye, then left; each its centre, then four points
    # on its rim. The mirror crop's in that crop's pixels and in its own order (None without that pass).
    iris_crop_points: np.ndarray | None = None
    mirror_iris_crop_points: np.ndarray | None = None

    def detached(self) -> MeshResult:
        """A copy for a result the caller keeps: its points are its own (the track goes on with this mesh), and
        the network's input crops and feature maps (about 1.8 MB a face, the refiner's inputs) are left out."""
        def own(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array.copy()

        return replace(self, points=self.points.copy(), crop_points=self.crop_points.copy(),
                       mirror_crop_points=own(self.mirror_crop_points), iris_crop_points=own(self.iris_crop_points),
                       mirror_iris_crop_points=own(self.mirror_iris_crop_points),
                       features=None, mirror_features=None, pixels=None, mirror_pixels=None)

    @cached_property
    def next_roi(self) -> Roi:
        """The ROI the next frame is cropped from (tracking mode); computed once, several stages ask."""
        return roi_from_mesh(self.points)


def roi_from_detection(det: Detection) -> Roi:
    """Mesh ROI for a fresh detection: its box, rotated along the detected eye line."""
    x0, y0, x1, y1 = det.bbox
    corners = np.array([[x0, y0], [x1, y1]])
    # Rotate about the box centre: measure the box in the eye-aligned frame.
    roi = roi_from_points(corners, det.keypoints[RIGHT_EYE], det.keypoints[LEFT_EYE], 1.0)
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    return Roi(cx=0.5 * (x0 + x1), cy=0.5 * (y0 + y1), size=float(max(side, 1.0)), angle=roi.angle)


def roi_from_mesh(points: np.ndarray) -> Roi:
    """ROI for the next frame from this frame's 468 mesh points (tracking mode)."""
    return roi_from_points(points[:, :2], points[MESH_RIGHT_EYE_OUTER, :2], points[MESH_LEFT_EYE_OUTER, :2], ROI_SCALE)


def unmirror_crop_x(x: np.ndarray) -> np.ndarray:
    """x of points the mesh found on a mirrored crop, in the unmirrored crop's pixels: the pixel-centre flip,
    shared by every prediction mapped back from the mirror pass (landmarks, irises)."""
    return (MESH_INPUT - 1) - x


FEATURE_MAPS = ("features_48", "features_24")  # what the refiner samples
# The network's "left" iris is the one on the crop's left: the subject's right eye (mesh points 33-133).
IRIS_OUTPUTS = ("left_iris", "right_iris")


class FaceMesh:
    def __init__(self, backend: str = "auto", threads: int | None = None, features: bool = False,
                 max_batch: int = 2) -> None:
        """``max_batch``: the crops (and mirrors) of one call a TensorRT engine is built for."""
        outputs = ["landmarks", "face_flag", *IRIS_OUTPUTS, *(FEATURE_MAPS if features else ())]
        self.features = features
        self.session = create_session(MESH_MODEL, backend, outputs=outputs, threads=threads, max_batch=max_batch)

    def run(self, image: np.ndarray, rois: list[Roi], mirror: bool = False) -> list[MeshResult]:
        """Mesh for each ROI of a BGR uint8 frame, in one batch; with ``mirror`` the batch also
        holds each crop's horizontal mirror (the reliability check)."""
        if not rois:
            return []
        crops = np.stack([crop(image, roi, MESH_INPUT) for roi in rois])
        if mirror:
            crops = np.concatenate([crops, crops[:, :, ::-1]])
        rgb = crops[..., ::-1]
        batch = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32) * (1.0 / 255.0)
        out = self.session.run(batch)
        raw = out["landmarks"].reshape(len(crops), 468, 3).astype(np.float64)
        presence = 1.0 / (1.0 + np.exp(-np.clip(out["face_flag"].reshape(-1).astype(np.float64), -100.0, 100.0)))
        n = len(rois)
        irises = np.stack([out[name].reshape(len(crops), 5, 2) for name in IRIS_OUTPUTS], 1).astype(np.float64)
        maps = [out[name] for name in FEATURE_MAPS] if self.features else None
        return [
            MeshResult(roi=roi, crop_points=raw[i], points=crop_points_to_image(raw[i], roi, MESH_INPUT),
                       presence=float(presence[i]), mirror_crop_points=raw[n + i] if mirror else None,
                       features=(maps[0][i], maps[1][i]) if maps else None,
                       mirror_features=(maps[0][n + i], maps[1][n + i]) if maps and mirror else None,
                       pixels=batch[i] if maps else None, mirror_pixels=batch[n + i] if maps and mirror else None,
                       iris_crop_points=irises[i], mirror_iris_crop_points=irises[n + i] if mirror else None)
            for i, roi in enumerate(rois)
        ]
