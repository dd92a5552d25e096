#!/usr/bin/env python3
"""Landmark accuracy of the real tracker (detector included) on a folder of images + .pts.

Reports detection rate of the annotated face, NME normalised by the outer-eye-corner
distance (36/45) overall, on the jaw (0-16) and on the inner 51 points (17-67),
failure rates at NME 0.08 and 0.10, and AUC@0.08 of the cumulative error curve.
A missed face counts as a failure (NME = inf) in the failure rates and AUC, and is
left out of the mean NME (which is over found faces).

    python tools/evaluate.py                      # afw, held out from training
    python tools/evaluate.py --images DIR --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import LANDMARKS68, inter_ocular, load_folder, match_face
from report import update_section

from tracker.pipeline import FaceTracker, TrackerConfig

JAW = slice(0, 17)
INNER = slice(17, 68)


def auc(errors: np.ndarray, limit: float) -> float:
    """Area under the cumulative error distribution up to ``limit``, normalised to [0, 1]."""
    grid = np.linspace(0.0, limit, 1001)
    ced = (errors[None, :] <= grid[:, None]).mean(1)
    return float(np.trapz(ced, grid) / limit)


def evaluate(folder: Path, config: TrackerConfig) -> dict:
    items = load_folder(folder)
    if not items:
        raise SystemExit(f"error: no images with .pts files in {folder}")
    tracker = FaceTracker(config)
    per_face = []
    for item in tqdm(items, desc=f"evaluating on {folder.name}", unit="img"):
        image = cv2.imread(str(item.image_path))
        faces = tracker.process(image, still=True).faces
        index = match_face([f.landmarks for f in faces], item.points)
        face = None if index is None else faces[index]
        row = {"image": item.image_path.name, "found": face is not None}
        if face is not None:
            d = np.linalg.norm(face.landmarks - item.points, axis=1) / inter_ocular(item.points)
            row.update(nme=float(d.mean()), nme_jaw=float(d[JAW].mean()), nme_inner=float(d[INNER].mean()))
        per_face.append(row)
    found = [r for r in per_face if r["found"]]
    all_errors = np.array([r.get("nme", np.inf) for r in per_face])
    return {
        "images": len(per_face),
        "detection_rate": len(found) / len(per_face),
        "nme": float(np.mean([r["nme"] for r in found])),
        "nme_jaw": float(np.mean([r["nme_jaw"] for r in found])),
        "nme_inner51": float(np.mean([r["nme_inner"] for r in found])),
        "failure_rate_0.08": float((all_errors > 0.08).mean()),
        "failure_rate_0.10": float((all_errors > 0.10).mean()),
        "auc_0.08": auc(all_errors, 0.08),
        "per_face": per_face,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw", help="folder of images with .pts files")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--detector", default="short", choices=("short", "full"))
    parser.add_argument("--json", type=Path, help="also write the report (with per-face rows) here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if not args.images.is_dir():
        print(f"error: {args.images} not found", file=sys.stderr)
        return 2
    started = time.perf_counter()
    # Several faces per image are tracked so the annotated one is found even when it is not the largest.
    report = evaluate(args.images, TrackerConfig(backend=args.backend, detector=args.detector, max_faces=8))
    r = report
    body = "\n".join([
        (f"`{args.images.name}` ({r['images']} images, held out: the 68-point map is fitted on helen_train), "
        f"detector `{args.detector}` included, backend {args.backend}."),
        "",
        "| annotated face found | NME | jaw NME (0-16) | inner-51 NME | failures @0.08 | failures @0.10 | AUC@0.08 |",
        "|---|---|---|---|---|---|---|",
        (f"| {100 * r['detection_rate']:.1f}% | {100 * r['nme']:.2f}% | {100 * r['nme_jaw']:.2f}% | "
        f"{100 * r['nme_inner51']:.2f}% | {100 * r['failure_rate_0.08']:.1f}% | {100 * r['failure_rate_0.10']:.1f}% | "
        f"{r['auc_0.08']:.3f} |"),
        "",
        ("NME: mean point-to-point error over the 68 points divided by the outer-eye-corner distance (36-45). "
        "A missed face is a failure in the failure rates and AUC."),
        "",
        (f"Command: `python tools/evaluate.py{'' if args.images == LANDMARKS68 / 'afw' else f' --images {args.images}'}"
        f"{'' if args.detector == 'short' else f' --detector {args.detector}'}`"),
    ])
    print(f"{args.images.name}: {r['images']} images in {time.perf_counter() - started:.0f} s")
    print(body)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if not args.no_write:
        update_section(f"landmarks-{args.images.name}-{args.detector}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
