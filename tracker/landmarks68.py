"""468 mesh points → 68 iBUG landmarks: a linear map, then the trained refiner.

The map works in the face crop's own frame (rotation and scale already
removed by the ROI), so one ridge regression covers all faces;
``tools/fit_mesh68.py`` fits it on helen_train. Its points are the refiner's
starting shape: the refiner (tracker/refiner.py) moves them using the mesh
network's feature maps sampled at the points.

Each of the four predictions (map and refiner, on the crop and on its mirror)
then loses its constant offset from the annotations, measured on helen_train
(``tools/calibrate_crop_offsets.py``): there the refined points sit about 0.2 crop px
left of the annotation on the crop and 0.7 px left on the mirror (engines/REFINER.md). The likely
cause: the 300-W annotations are not mirror-symmetric to the pixel, and models
trained with mirror images learn the average, each pass keeping a share of the
offset (the mirror pass with the other sign of the refiner's own bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.backends import ENGINES_DIR
from tracker.engines import load_engine_arrays
from tracker.mesh import MESH_INPUT, MeshResult
from tracker.refiner import Refiner
from tracker.roi import crop_points_to_image

MAPPING_FILE = "mesh68_ridge.npz"
OFFSETS_FILE = "crop_offsets.npz"

# iBUG 68 index pairs that swap under a horizontal mirror (subject's left <-> right).
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48]  # upper outer lip
    + [59, 58, 57, 56, 55]  # lower outer lip
    + [64, 63, 62, 61, 60]  # upper inner lip
    + [67, 66, 65]  # lower inner lip
)


@dataclass
class CropLandmarks:
    """One face's 68 landmarks in its crop's pixels, from the crop and (if run) from its mirror."""

    direct: np.ndarray  # 68×2
    mirror: np.ndarray | None = None  # 68×2 in the mirrored crop's pixels and iBUG order
    initial: np.ndarray | None = None  # the linear map's 68×2 before the refiner moved them (None: no refiner)
    mirror_initial: np.ndarray | None = None  # the same for the mirrored crop
    visibility: np.ndarray | None = None  # 68 in [0, 1] (refiner only): not hidden by an occluder
    mirror_visibility: np.ndarray | None = None  # the same from the mirrored crop, in its iBUG order
    expression: np.ndarray | None = None  # 52 ARKit weights in [0, 1] (refiner only), as the crop shows them
    mirror_expression: np.ndarray | None = None  # the same from the mirrored crop (its Left is the face's Right)
    camera: np.ndarray | None = None  # 2×4 (refiner only): the 3D branch's affine camera of the face model, crop px


def mesh_features(crop_points: np.ndarray) -> np.ndarray:
    """Regression input: the 468×3 crop-space mesh, normalised to the crop size."""
    return (np.asarray(crop_points, np.float64) / MESH_INPUT).reshape(-1)


# Rows of the offsets file: each prediction's mean offset from the annotation (crop px, x and y), all
# measured in the unmirrored crop's frame (mirror predictions after mapping back).
OFFSET_ROWS = ("initial", "refined", "mirror_initial", "mirror_refined")


def remove_offset(points: np.ndarray, offset: np.ndarray, mirrored: bool) -> np.ndarray:
    """Points in their crop's pixels minus an offset measured in the unmirrored crop's frame (for a
    prediction on the mirrored crop, whose x runs the other way, the offset's x changes sign)."""
    offset = np.asarray(offset, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) - (offset * (-1.0, 1.0) if mirrored else offset)


class Mesh68Mapping:
    def __init__(self, path: Path | None = None, refiner: Refiner | None = None,
                 offsets: np.ndarray | None = None) -> None:
        """``offsets``: 4×2 (rows OFFSET_ROWS, crop px) to subtract; None reads engines/crop_offsets.npz."""
        self.refiner = refiner
        path = path or ENGINES_DIR / MAPPING_FILE
        data = load_engine_arrays(path, "landmark mapping", "refit it with `python tools/fit_mesh68.py`")
        # float32 as stored: the per-frame product reads all 190k weights, mostly from memory, and half
        # the bytes take half the time (the points differ by under 1e-4 crop px from a float64 product).
        self.weights = np.ascontiguousarray(data["weights"], dtype=np.float32)  # 1404×136
        self.bias = np.asarray(data["bias"], dtype=np.float32)  # 136
        if offsets is None:
            offsets = load_engine_arrays(ENGINES_DIR / OFFSETS_FILE, "crop offsets", "measure them with "
                                         "`python tools/calibrate_crop_offsets.py`")["offsets"]
        self.offsets = np.asarray(offsets, dtype=np.float64).reshape(len(OFFSET_ROWS), 2)

    def _unbiased(self, points: np.ndarray, row: str) -> np.ndarray:
        return remove_offset(points, self.offsets[OFFSET_ROWS.index(row)], mirrored=row.startswith("mirror"))

    def crop_landmarks(self, crop_points: np.ndarray) -> np.ndarray:
        """68×2 landmarks in crop pixels from the linear map alone (the refiner's starting shape)."""
        product = mesh_features(crop_points).astype(np.float32) @ self.weights + self.bias
        return product.reshape(68, 2).astype(np.float64) * MESH_INPUT

    def predict(self, mesh: MeshResult) -> CropLandmarks:
        """The crop's 68 landmarks and, if the mesh ran on it, its mirror's; refined (with visibility and
        expression weights) when a refiner is set and the mesh kept its feature maps."""
        return self.predict_batch([mesh])[0]

    def predict_batch(self, meshes: list[MeshResult]) -> list[CropLandmarks]:
        """:meth:`predict` for several faces, their crops and mirrors refined in one batch: part of the
        refiner graph's cost is per call, not per face (at batch 8, four faces and their mirrors, 1.9 ms
        per face against 2.4 ms at batch 2)."""
        if not meshes:
            return []
        shapes, maps, pixels, rows = [], [], [], []
        for mesh in meshes:
            rows.append(len(shapes))
            shapes.append(self.crop_landmarks(mesh.crop_points))
            maps.append(mesh.features)
            pixels.append(mesh.pixels)
            if mesh.mirror_crop_points is not None:
                shapes.append(self.crop_landmarks(mesh.mirror_crop_points))
                maps.append(mesh.mirror_features)
                pixels.append(mesh.mirror_pixels)
        refine = self.refiner is not None and all(m is not None for m in (*maps, *pixels))
        if refine:
            # All crops in one batch, each from the map's own points (what the refiner was trained on).
            out = self.refiner.refine(np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps]),
                                      np.stack(shapes), np.stack(pixels))
            refined, visibility, expression = (a.astype(np.float64)
                                               for a in (out.landmarks, out.visibility, out.expression))
        predictions = []
        for mesh, i in zip(meshes, rows):
            j = None if mesh.mirror_crop_points is None else i + 1  # the mirror's row, right after the face's
            initial = self._unbiased(shapes[i], "initial")
            mirror_initial = None if j is None else self._unbiased(shapes[j], "mirror_initial")
            if not refine:
                predictions.append(CropLandmarks(direct=initial, mirror=mirror_initial))
                continue
            predictions.append(CropLandmarks(
                direct=self._unbiased(refined[i], "refined"),
                mirror=None if j is None else self._unbiased(refined[j], "mirror_refined"),
                initial=initial, mirror_initial=mirror_initial,
                visibility=visibility[i], mirror_visibility=None if j is None else visibility[j],
                expression=expression[i], mirror_expression=None if j is None else expression[j],
                camera=out.camera[i].astype(np.float64)))
        return predictions

    def landmarks(self, mesh: MeshResult) -> np.ndarray:
        """68×2 landmarks in image pixels (the direct prediction)."""
        return crop_points_to_image(self.predict(mesh).direct, mesh.roi, MESH_INPUT)
