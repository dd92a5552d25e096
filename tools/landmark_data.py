"""Reading the shared 68-point datasets (iBUG .pts beside each image)."""

from __future__ import annotations

import os
import sys
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


# Image files an annotation may sit beside, in the order one is taken where a .pts has several (the first three
# as before other kinds were read).
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_NAMES_SHOWN = 3  # of the files left out for one reason, named in its line


class PtsError(ValueError):
    """A .pts file that is not a usable iBUG 68-point annotation: ``reason`` says why, the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def read_pts(path: Path) -> np.ndarray:
    """Points of an iBUG .pts file, converted from its 1-based to 0-based pixel coordinates; PtsError saying what is
    wrong with one that is not 68 finite points with the outer eye corners apart."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PtsError(path, f"cannot be read ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    try:
        start = lines.index("{") + 1
        end = lines.index("}", start)
    except ValueError:
        raise PtsError(path, "holds no '{' ... '}' block of points") from None
    rows = [line.split() for line in lines[start:end] if line]
    if any(len(row) != 2 for row in rows):
        raise PtsError(path, "has a point line that is not two numbers, x and y")
    try:
        pts = np.array(rows, dtype=np.float64).reshape(-1, 2)
    except ValueError:
        raise PtsError(path, "has a point that is not a number") from None
    if len(pts) != 68:
        raise PtsError(path, f"holds {len(pts)} points, not iBUG's 68")
    if not np.all(np.isfinite(pts)):
        raise PtsError(path, "has a point that is not finite (NaN or infinity)")
    pts -= 1.0
    if inter_ocular(pts) == 0.0:
        raise PtsError(path, "puts the outer eye corners (points 37 and 46) on one spot: no inter-ocular distance")
    return pts


def load_folder(folder: Path, subfolders: bool = False) -> list[LabelledImage]:
    """Every image in ``folder`` (and its ``subfolders``, when asked: a dataset's train/ and test/ would otherwise
    mix) with a .pts file of the same name beside it (any case of the extension), sorted by the .pts path. What
    cannot be used is left out and said on stderr, a line per reason: an annotation
    that is no 68-point one (:func:`read_pts`), an image in a format OpenCV cannot read, a .pts with no image and an
    image with no .pts, a link to nothing, and names that differ only in case. Where a .pts has several images, the
    first of IMAGE_SUFFIXES is taken."""
    import cv2

    folder = Path(folder)
    by_name: dict[Path, dict[str, Path]] = {}  # path without its extension -> extension (lower case) -> file
    left_out: dict[str, list[Path]] = {}
    walk = os.walk(folder) if subfolders else [(str(folder), [], os.listdir(folder))]
    for root, _, names in walk:  # os.walk follows no link to a folder: no loops
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():  # a folder (listed alone), a link to nothing, a device
                if not path.is_dir():
                    left_out.setdefault("not a file (a link to nothing, say)", []).append(path)
                continue
            same = by_name.setdefault(path.with_suffix(""), {})
            if path.suffix.lower() in same:  # a.jpg beside a.JPG: which is meant cannot be told
                clashing = left_out.setdefault("named as another but for case, and left out with it", [])
                clashing += [path] if same[path.suffix.lower()] is None else [path, same[path.suffix.lower()]]
                same[path.suffix.lower()] = None
                continue
            same[path.suffix.lower()] = path
    items = []
    for stem, files in sorted(by_name.items(), key=lambda entry: str(entry[1].get(".pts") or entry[0])):
        if None in files.values():
            continue
        images = [files[s] for s in IMAGE_SUFFIXES if s in files]
        if ".pts" not in files:
            for image in images:
                left_out.setdefault("an image with no .pts of its name beside it", []).append(image)
            continue
        pts = files[".pts"]
        if not images:
            left_out.setdefault("a .pts with no image of its name beside it", []).append(pts)
            continue
        if len(images) > 1:
            left_out.setdefault(f"an image sharing its .pts with another, taken first ({' '.join(IMAGE_SUFFIXES)})",
                                []).extend(images[1:])
        if not cv2.haveImageReader(str(images[0])):
            left_out.setdefault("an image in a format OpenCV cannot read", []).append(images[0])
            continue
        try:
            items.append(LabelledImage(images[0], read_pts(pts)))
        except PtsError as exc:
            left_out.setdefault(f"a .pts that {exc.reason}", []).append(pts)
    for reason, paths in left_out.items():
        say_left_out_files(folder, reason, [str(p.relative_to(folder)) for p in paths])
    return items


def say_left_out_files(folder: Path, reason: str, names: list[str]) -> None:
    """One warning line on stderr: the files of ``folder`` left out for ``reason``, the first few named."""
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    print(f"warning: {folder}: left out {len(names)} file{'s' * (len(names) != 1)}, each {reason}: "
          f"{', '.join(names[:_NAMES_SHOWN])}{more}", file=sys.stderr)


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
