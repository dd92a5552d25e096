"""Reading the shared 68-point datasets (iBUG .pts beside each image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
LANDMARKS68 = SHARED_DATA / "landmarks68"


@dataclass
class LabelledImage:
    image_path: Path
    points: np.ndarray  # 68×2, 0-based pixel coordinates


def read_pts(path: Path) -> np.ndarray:
    """Points of an iBUG .pts file, converted from its 1-based to 0-based pixel coordinates."""
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    end = lines.index("}")
    pts = np.array([[float(v) for v in line.split()] for line in lines[start:end]], dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points, found {len(pts)}")
    return pts - 1.0


def load_folder(folder: Path) -> list[LabelledImage]:
    """Every image in ``folder`` that has a .pts file beside it, sorted by name."""
    items = []
    for pts in sorted(Path(folder).glob("*.pts")):
        for suffix in (".jpg", ".png", ".jpeg"):
            image = pts.with_suffix(suffix)
            if image.is_file():
                items.append(LabelledImage(image, read_pts(pts)))
                break
    return items


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the outer eye corners (iBUG 36 and 45), the NME normaliser."""
    return float(np.linalg.norm(points[36] - points[45]))


def match_face(candidates: list[np.ndarray], truth: np.ndarray, tolerance: float = 0.5) -> int | None:
    """Index of the candidate point set (N×2 each) whose centroid is nearest the annotated one, or None.

    A face counts as found when that centroid lies within ``tolerance`` times the
    annotated inter-ocular distance of the annotated centroid: a tracker that
    locked onto another face, or onto background, is far further off.
    """
    if not candidates:
        return None
    d = [float(np.linalg.norm(np.asarray(c)[:, :2].mean(0) - truth.mean(0))) for c in candidates]
    best = int(np.argmin(d))
    return best if d[best] <= tolerance * inter_ocular(truth) else None


def annotated_faces(tracker, mapping, items):
    """For each item: (item, image, the mesh and the 68-point prediction of its annotated face), the
    last two None when no face matches.

    The tracker's own detection and second mesh pass find the faces (``tracker.detect_meshes``, from a
    reset tracker); ``mapping`` (a tracker.landmarks68.Mesh68Mapping) predicts each face once, and
    the annotated one is picked by :func:`match_face` on the direct prediction.
    """
    import cv2

    from tracker.mesh import MESH_INPUT
    from tracker.roi import crop_points_to_image

    for item in items:
        image = cv2.imread(str(item.image_path))
        tracker.reset()
        meshes = tracker.detect_meshes(image, limit=8)
        predictions = [mapping.predict(m) for m in meshes]
        index = match_face([crop_points_to_image(p.direct, m.roi, MESH_INPUT) for p, m in zip(predictions, meshes)],
                           item.points)
        yield (item, image, None, None) if index is None else (item, image, meshes[index], predictions[index])
