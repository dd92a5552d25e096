#!/usr/bin/env python3
"""Occlusion flags and landmark confidence on afw with synthetic occluders.

Each afw face gets one occluder covering 10-40% of its annotated box: a textured
patch cut from another afw image, a hand-like skin-coloured blob (palm and four
fingers), or a bar. Ground truth: the annotated landmarks under the occluder. The
real tracker (detector included) runs on the occluded image; its `occluded` flags
are scored (precision, recall), and so are the refiner's visibility and the
confidence as rankings (recall at 80% precision, from the precision-recall curve
over thresholds), also per occluder kind.
Writes BENCHMARKS.md section "occlusion" unless --no-write.

    python tools/evaluate_occlusion.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import LANDMARKS68, load_folder, match_face
from report import invocation, non_negative_int, publish

from tracker.pipeline import FaceTracker, TrackerConfig

KINDS = ("patch", "hand", "bar")


def recall_at_precision(hidden: np.ndarray, score: np.ndarray, precision: float) -> float:
    """Best recall of ``hidden`` when the lowest scores are called hidden, keeping ``precision``."""
    order = np.argsort(score)
    hits = np.cumsum(hidden[order])
    ok = hits / np.arange(1, len(order) + 1) >= precision
    return float((hits[ok] / max(hidden.sum(), 1)).max()) if ok.any() else 0.0


def occluder_mask(shape: tuple[int, int], box: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A mask covering 10-40% of ``box`` (x0, y0, x1, y1) with one occluder of ``kind``."""
    h, w = shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    target = rng.uniform(0.10, 0.40) * bw * bh
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    if kind == "patch":
        aspect = rng.uniform(0.5, 2.0)
        pw, ph = np.sqrt(target * aspect), np.sqrt(target / aspect)
        cv2.rectangle(mask, (int(cx - pw / 2), int(cy - ph / 2)), (int(cx + pw / 2), int(cy + ph / 2)), 1, -1)
    elif kind == "hand":
        r = np.sqrt(target / (np.pi * 1.6))  # palm plus fingers ≈ 1.6 palm areas
        angle = rng.uniform(0, 360)
        cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(0.8 * r)), angle, 0, 360, 1, -1)
        for k in range(4):
            a = np.radians(angle - 45 + 30 * k)
            fx, fy = cx + 1.3 * r * np.cos(a), cy + 1.3 * r * np.sin(a)
            cv2.ellipse(mask, (int(fx), int(fy)), (int(0.6 * r), int(0.18 * r)), np.degrees(a), 0, 360, 1, -1)
    else:
        length = 1.5 * max(bw, bh)
        thickness = target / length
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)]) * length / 2
        p0, p1 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
        cv2.line(mask, tuple(p0.astype(int).tolist()), tuple(p1.astype(int).tolist()), 1, max(2, int(thickness)))
    return mask.astype(bool)


def paint(image: np.ndarray, mask: np.ndarray, kind: str, donor: np.ndarray, rng: np.random.Generator) -> None:
    if kind == "hand":
        skin = np.array([rng.uniform(60, 140), rng.uniform(110, 180), rng.uniform(160, 230)])  # BGR
        shade = rng.normal(0, 8, size=mask.shape + (1,))
        image[mask] = np.clip(skin + shade[mask], 0, 255).astype(np.uint8)
    else:
        texture = cv2.resize(donor, (image.shape[1], image.shape[0]))
        if kind == "bar":
            texture = np.full_like(image, rng.integers(0, 255, 3, dtype=np.uint8)) // 2 + texture // 2
        image[mask] = texture[mask]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    items = load_folder(args.images) if args.images.is_dir() else []
    if not items:
        print(f"error: no images with .pts files in {args.images}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8))
    truth, flags, confidence, visibility, kinds, found = [], [], [], [], [], 0
    for i, item in enumerate(tqdm(items, desc="occluded afw", unit="img")):
        image = cv2.imread(str(item.image_path))
        donor = cv2.imread(str(items[(i + 7) % len(items)].image_path))
        box = np.concatenate([item.points.min(0), item.points.max(0)])
        kind = KINDS[i % len(KINDS)]
        mask = occluder_mask(image.shape[:2], box, kind, rng)
        paint(image, mask, kind, donor, rng)
        faces = tracker.process(image, still=True).faces
        index = match_face([f.landmarks for f in faces], item.points, tolerance=1.0)
        if index is None:
            continue
        found += 1
        face = faces[index]
        xy = np.clip(np.round(item.points).astype(int), 0, [image.shape[1] - 1, image.shape[0] - 1])
        hidden = mask[xy[:, 1], xy[:, 0]]
        truth.append(hidden)
        flags.append(face.occluded)
        confidence.append(face.landmark_confidence)
        visibility.append(face.landmark_visibility)
        kinds.append(np.full(68, i % len(KINDS)))
    t, f, c = np.concatenate(truth), np.concatenate(flags), np.concatenate(confidence)
    v, k = np.concatenate(visibility), np.concatenate(kinds)
    tp = float((t & f).sum())
    precision = tp / max(f.sum(), 1)
    recall = tp / max(t.sum(), 1)
    recall_at_80 = recall_at_precision(t, c, 0.8)
    per_kind = ", ".join(f"{kind} {100 * recall_at_precision(t[k == j], v[k == j], 0.8):.1f}%"
                         for j, kind in enumerate(KINDS))
    mean_conf_hidden, mean_conf_visible = float(c[t].mean()), float(c[~t].mean())
    body = "\n".join([
        (f"`{args.images.name}`, {len(items)} faces, one synthetic occluder each (textured patch, hand-like blob or "
         f"bar, 10-40% of the annotated box); the annotated face was found on {found}. Ground truth: landmarks "
         f"under the occluder ({100 * t.mean():.1f}% of all)."),
        "",
        "| measure | value |",
        "|---|---|",
        f"| `occluded` flags: precision / recall | {100 * precision:.1f}% / {100 * recall:.1f}% |",
        (f"| `landmark_visibility` as a ranking: recall at 80% precision | "
         f"{100 * recall_at_precision(t, v, 0.8):.1f}% (target ≥ 50%; by occluder: {per_kind}) |"),
        f"| `landmark_confidence` as a ranking: recall at 80% precision | {100 * recall_at_80:.1f}% |",
        f"| mean visibility, hidden / visible landmarks | {v[t].mean():.3f} / {v[~t].mean():.3f} |",
        f"| mean confidence, hidden / visible landmarks | {mean_conf_hidden:.3f} / {mean_conf_visible:.3f} |",
        "",
        ("`occluded` = the refiner's visibility below 0.5, or self-occluded by the 3D fit (which this ground "
         "truth does not know about, so those flags count against precision here)."),
        "",
        f"Command: `{invocation()}`",
    ])
    publish("occlusion", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
