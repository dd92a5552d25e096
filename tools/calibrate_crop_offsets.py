#!/usr/bin/env python3
"""Measure each 68-point prediction's constant offset from the annotations, on helen_train.

The tracker makes four predictions per face in its 192-px crop: the linear map's and
the refiner's, on the crop and on its horizontal mirror (mapped back). The 300-W
annotations are not mirror-symmetric to the pixel, and everything upstream was trained
with mirror images, so each prediction keeps a small constant offset (the mirror pass
with its own sign): on helen_train the refined points sit about 0.2 crop px left of the
annotation on the crop and 0.7 px on the mirror. This tool runs the tracker's own
detection and mirror pass on every helen_train face (training data: `afw` stays held
out), with the offsets switched off, and writes the mean offset of each prediction
(crop px, x and y, in the unmirrored crop's frame) to engines/crop_offsets.npz, which
tracker/landmarks68.py subtracts.

    python tools/calibrate_crop_offsets.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from landmark_data import LANDMARKS68, annotated_faces, load_folder
from report import file_to_write

from tracker.backends import ENGINES_DIR
from tracker.landmarks68 import OFFSET_ROWS, OFFSETS_FILE, Mesh68Mapping
from tracker.mesh import MESH_INPUT
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.refiner import Refiner
from tracker.reliability import mirror_back
from tracker.roi import image_points_to_crop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "helen_train")
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / OFFSETS_FILE)
    args = parser.parse_args()
    items = load_folder(args.images) if args.images.is_dir() else []
    if not items:
        print(f"error: no images with .pts files in {args.images}", file=sys.stderr)
        return 2
    if args.images.name == "afw":
        print("error: afw is the held-out evaluation set; measure the offsets on training data", file=sys.stderr)
        return 2
    # The tracker only detects and meshes here; the 68 points come from a mapping without offsets.
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=True))
    mapping = Mesh68Mapping(refiner=Refiner("onnxruntime"), offsets=np.zeros((len(OFFSET_ROWS), 2)))
    offsets = []
    for item, _, mesh, prediction in annotated_faces(tracker, mapping, tqdm(items, desc=f"mirror pass on "
                                                                          f"{args.images.name}", unit="img")):
        if mesh is None:
            continue
        truth = image_points_to_crop(item.points, mesh.roi, MESH_INPUT)
        rows = (prediction.initial, prediction.direct, mirror_back(prediction.mirror_initial),
                mirror_back(prediction.mirror))
        offsets.append([(points - truth).mean(0) for points in rows])
    offsets = np.array(offsets)  # faces × 4 × 2
    mean = offsets.mean(0)
    sem = offsets.std(0) / np.sqrt(len(offsets))
    print(f"{len(offsets)} of {len(items)} {args.images.name} faces; mean offset from the annotation, crop px "
          "(192-px crop), ± standard error:")
    for name, m, e in zip(OFFSET_ROWS, mean, sem):
        print(f"  {name:15s} x {m[0]:+.3f} ± {e[0]:.3f}   y {m[1]:+.3f} ± {e[1]:.3f}")
    np.savez(args.out, offsets=mean.astype(np.float32), rows=np.array(OFFSET_ROWS), faces=len(offsets),
             images=args.images.name)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
