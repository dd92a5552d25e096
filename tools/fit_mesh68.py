#!/usr/bin/env python3
"""Fit the linear 468-mesh → 68-landmark map on helen_train (never on afw).

Runs the real tracker (detector + face mesh) on each training image and on its
mirror image (with the iBUG left/right swap), expresses the annotated points in
the face crop's frame, and solves a ridge regression whose strength is chosen
by 5-fold cross-validation on helen_train itself. Writes engines/mesh68_ridge.npz.

    python tools/fit_mesh68.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import LANDMARKS68, inter_ocular, load_folder, match_face
from report import file_to_write

from tracker.backends import ENGINES_DIR
from tracker.landmarks68 import IBUG68_MIRROR, MAPPING_FILE, mesh_features
from tracker.mesh import MESH_INPUT
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.roi import image_points_to_crop

LAMBDAS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2)
MIN_FACES = 50  # annotated faces (each with its mirror); helen_train has 870


def collect(folder: Path, tracker: FaceTracker) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Mesh features X, crop-space targets Y and inter-ocular distances (crop units) per face."""
    xs, ys, iods, misses = [], [], [], 0
    for item in tqdm(load_folder(folder), desc=f"meshes on {folder.name}", unit="img"):
        image = cv2.imread(str(item.image_path))
        w = image.shape[1]
        mirrored = item.points.copy()
        mirrored[:, 0] = w - 1 - mirrored[:, 0]
        for img, truth in ((image, item.points), (image[:, ::-1].copy(), mirrored[IBUG68_MIRROR])):
            tracker.reset()
            meshes = tracker.detect_meshes(img, limit=8)
            # The mesh also covers the forehead, so its centroid sits higher than the
            # 68 points': a looser tolerance than evaluate.py's, still one face wide.
            index = match_face([m.points for m in meshes], truth, tolerance=1.0)
            if index is None:
                misses += 1
                continue
            mesh = meshes[index]
            target = image_points_to_crop(truth, mesh.roi, MESH_INPUT) / MESH_INPUT
            xs.append(mesh_features(mesh.crop_points))
            ys.append(target.reshape(-1))
            iods.append(inter_ocular(target))
    return np.array(xs), np.array(ys), np.array(iods), misses


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on centred data (the bias is not penalised); λ scaled by the number of samples."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    a = xc.T @ xc + lam * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(a, xc.T @ (y - my))
    return w, my - mx @ w


def nme(x: np.ndarray, y: np.ndarray, iods: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    err = np.linalg.norm((x @ w + b - y).reshape(len(x), 68, 2), axis=2).mean(1)
    return float((err / iods).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=LANDMARKS68 / "helen_train")
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / MAPPING_FILE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.train.is_dir():
        print(f"error: training folder {args.train} not found", file=sys.stderr)
        return 2
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8))
    started = time.perf_counter()
    x, y, iods, misses = collect(args.train, tracker)
    print(f"{len(x)} training faces (images + mirrors), {misses} not found, {time.perf_counter() - started:.0f} s")
    if len(x) < 2 * MIN_FACES:  # five folds, each with faces to validate on and far more to fit
        print(f"error: {len(x) // 2} annotated faces found in {args.train}; the map needs at least {MIN_FACES}",
              file=sys.stderr)
        return 2

    # Folds keep an image and its mirror together (consecutive rows) so validation is honest.
    rng = np.random.default_rng(args.seed)
    pairs = rng.permutation(len(x) // 2 + 1)
    fold_of_row = np.empty(len(x), dtype=int)
    fold_of_row[:] = pairs[np.arange(len(x)) // 2] % 5
    scores = {}
    for lam in LAMBDAS:
        errs = []
        for k in range(5):
            tr, va = fold_of_row != k, fold_of_row == k
            w, b = ridge(x[tr], y[tr], lam)
            errs.append(nme(x[va], y[va], iods[va], w, b))
        scores[lam] = float(np.mean(errs))
        print(f"  lambda {lam:g}: 5-fold NME {100 * scores[lam]:.2f}%")
    best = min(scores, key=scores.get)
    w, b = ridge(x, y, best)
    np.savez_compressed(
        args.out,
        weights=w.astype(np.float32),
        bias=b.astype(np.float32),
        ridge_lambda=best,
        train_faces=len(x),
        cv_nme=scores[best],
    )
    print(f"wrote {args.out} (lambda {best:g}, 5-fold NME on helen_train {100 * scores[best]:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
