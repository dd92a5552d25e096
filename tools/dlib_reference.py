#!/usr/bin/env python3
"""dlib's 68-point shape predictor as a reference beside our tracker, on the same faces in the same run.

dlib's ``shape_predictor_68_face_landmarks.dat`` (the file shipped in the
``face-recognition-models`` package) was trained on 300-W, which includes afw and
helen: its numbers on afw are on its own training data, a reference and not a fair
peer. A second table compares both models on held-out ICT renders (seeds >= 1000,
tools/evaluate_renders.py's stills, |yaw| <= 45°), faces neither model has seen (though
our refiner trains on other renders of the same ICT model, which favours ours).

dlib runs as it is meant to: its HOG frontal face detector (upsample 1) on the RGB
image, then the shape predictor on each face it finds. Where it finds no face near
the annotated one, our tracker's detector box (BlazeFace, mapped onto dlib's box
convention by the median offset and scale between the two detectors' boxes of the
faces both found in this run, no ground truth used) is the fallback. Both rows are
reported: dlib's own detector alone (a missed face is a failure) and with the
fallback. Our tracker runs as tools/evaluate.py runs it (default config, still mode,
up to 8 faces). Metrics and face matching are tools/evaluate.py's and
tools/landmark_data.py's.

Tool-time only: ``pip install dlib-bin face-recognition-models``.

    python tools/dlib_reference.py                        # afw + 160 held-out renders -> BENCHMARKS.md
    python tools/dlib_reference.py --images DIR --renders 0 --no-write
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import nme_scores, summarise, table_cells
from evaluate_renders import DEFAULT_SEED, YAW_LIMIT, read_jsonl, render_set
from landmark_data import LANDMARKS68, LabelledImage, load_folder, match_face
from render_ict import ICT_PATH, load_ict
from report import file_to_write, non_negative_int, positive_int, update_section

from tracker.pipeline import FaceTracker, TrackerConfig

PIPELINES = ("ours", "dlib", "dlib_fallback")
LABELS = {
    "ours": "ours, default (refiner + mirror fusion)",
    "dlib": "dlib, own HOG detector only",
    "dlib_fallback": "dlib, our detector box where HOG finds nothing",
}


def predictor_path() -> Path:
    """The 68-point model inside face_recognition_models (without importing it if pkg_resources is gone)."""
    try:
        import face_recognition_models

        return Path(face_recognition_models.pose_predictor_model_location())
    except ImportError:  # its __init__ needs pkg_resources, which recent setuptools no longer ship
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise
        return Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


def summarise_timed(per_face: list[dict]) -> dict:
    """tools/evaluate.py's summary, plus the mean time per image."""
    return {**summarise(per_face), "ms_per_image": float(np.mean([r["ms"] for r in per_face])), "per_face": per_face}


@dataclass
class Sample:
    image_path: Path
    points: np.ndarray  # 68×2 truth
    visible: np.ndarray | None = None  # 68 bools (renders only)


def _box_xyxy(rect) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def box_mapping(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Median (dx, dy, scale) taking our detector's box onto dlib's: centre shift in units of our box's size."""
    if len(pairs) < 3:
        return np.array([0.0, 0.0, 1.0])
    ours, theirs = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    size = (ours[:, 2:] - ours[:, :2]).mean(1)
    shift = ((theirs[:, :2] + theirs[:, 2:]) - (ours[:, :2] + ours[:, 2:])) / 2 / size[:, None]
    scale = (theirs[:, 2:] - theirs[:, :2]).mean(1) / size
    return np.array([*np.median(shift, 0), np.median(scale)])


def run(samples: list[Sample], desc: str = "", backend: str = "onnxruntime", predictor: Path | None = None) -> dict:
    """Our default tracker and dlib on each sample; per-face rows and summaries of the three pipelines."""
    import dlib  # tool-time only

    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(predictor or predictor_path()))
    tracker = FaceTracker(TrackerConfig(backend=backend, max_faces=8))  # as tools/evaluate.py runs it
    landmarks = lambda rgb, rect: np.array([[p.x, p.y] for p in shape(rgb, rect).parts()], np.float64)
    rows = {name: [] for name in PIPELINES}
    predictor_ms, dlib_faces, pairs, misses = [], 0, [], []
    if samples:  # warm-up (JIT compiles, sessions, caches), left out of the timings
        image = cv2.imread(str(samples[0].image_path))
        tracker.process(image, still=True)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        landmarks(rgb, next(iter(hog(rgb, 1)), dlib.rectangle(0, 0, 100, 100)))
    for k, s in enumerate(tqdm(samples, desc=desc or "dlib reference", unit="img")):
        image = cv2.imread(str(s.image_path))
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        base = {"image": str(s.image_path), "truth": s.points.tolist()}
        # Ours, timed per image (detection, mesh, refiner, mirror pass, 3D fit, all faces).
        t0 = time.perf_counter()
        faces = tracker.process(image, still=True).faces
        ours_ms = 1000 * (time.perf_counter() - t0)
        i = match_face([f.landmarks for f in faces], s.points)
        row = {**base, "found": i is not None, "ms": ours_ms}
        if i is not None:
            row.update(prediction=faces[i].landmarks.tolist(), **nme_scores(faces[i].landmarks, s.points, s.visible))
        rows["ours"].append(row)
        # dlib: HOG detector (upsample 1), then the predictor on every face it found.
        t0 = time.perf_counter()
        rects = list(hog(rgb, 1))
        t1 = time.perf_counter()
        shapes = [landmarks(rgb, r) for r in rects]
        t2 = time.perf_counter()
        dlib_faces += len(rects)
        if rects:
            predictor_ms.append(1000 * (t2 - t1) / len(rects))
        i = match_face(shapes, s.points)
        row = {**base, "found": i is not None, "ms": 1000 * (t2 - t0)}
        if i is not None:
            row.update(prediction=shapes[i].tolist(), **nme_scores(shapes[i], s.points, s.visible))
        rows["dlib"].append(row)
        rows["dlib_fallback"].append(dict(row, source="hog"))
        # Our detector's boxes: paired with dlib's for the box mapping, kept for the fallback.
        ours_boxes = [d.bbox.astype(np.float64) for d in tracker.detector.detect(image)]
        for box in ours_boxes:
            best = max(rects, key=lambda r, b=box: _iou(b, _box_xyxy(r)), default=None)
            if best is not None and _iou(box, _box_xyxy(best)) > 0.3:
                pairs.append((box, _box_xyxy(best)))
        if i is None:
            misses.append((k, ours_boxes))
    # Fallback where HOG found nothing near the annotated face: our boxes, mapped onto dlib's convention.
    mapping = box_mapping(pairs)
    for k, boxes in misses:
        s = samples[k]
        rgb = cv2.cvtColor(cv2.imread(str(s.image_path)), cv2.COLOR_BGR2RGB)
        shapes = []
        for b in boxes:
            size = (b[2] - b[0] + b[3] - b[1]) / 2
            cx, cy = (b[0] + b[2]) / 2 + mapping[0] * size, (b[1] + b[3]) / 2 + mapping[1] * size
            half = mapping[2] * size / 2
            shapes.append(landmarks(rgb, dlib.rectangle(round(cx - half), round(cy - half),
                                                        round(cx + half), round(cy + half))))
        i = match_face(shapes, s.points)
        row = rows["dlib_fallback"][k]
        row["source"] = "our box" if i is not None else "none"
        if i is not None:
            row.update(found=True, prediction=shapes[i].tolist(), **nme_scores(shapes[i], s.points, s.visible))
    out = {name: summarise_timed(r) for name, r in rows.items()}
    out["dlib_predictor_ms_per_face"] = float(np.mean(predictor_ms)) if predictor_ms else float("nan")
    out["dlib_faces_per_image"] = dlib_faces / max(len(samples), 1)
    out["box_mapping"] = {"dx": float(mapping[0]), "dy": float(mapping[1]), "scale": float(mapping[2]),
                          "pairs": len(pairs)}
    out["fallback_used"] = sum(r.get("source") == "our box" for r in rows["dlib_fallback"])
    # Like for like: both models on the faces dlib's own detector found (its easier ones).
    both = [(a["nme"], b["nme"]) for a, b in zip(rows["ours"], rows["dlib"], strict=True) if a["found"] and b["found"]]
    out["both_found"] = {"faces": len(both), "ours_nme": float(np.mean([a for a, _ in both])) if both else float("nan"),
                         "dlib_nme": float(np.mean([b for _, b in both])) if both else float("nan")}
    return out


def afw_samples(folder: Path, limit: int | None = None) -> list[Sample]:
    items: list[LabelledImage] = load_folder(folder)[:limit]
    return [Sample(item.image_path, item.points) for item in items]


def render_samples(folder: Path, count: int, seed: int, size: int = 512) -> list[Sample]:
    """``count`` held-out stills rendered into ``folder`` (evaluate_renders' stills); those with |yaw| <= 45°."""
    render_set(load_ict(ICT_PATH), folder, 0, 0, count, size, seed)
    samples = []
    for rec in read_jsonl(folder / "images" / "truth.jsonl"):
        if abs(rec["yaw"]) <= YAW_LIMIT:
            samples.append(Sample(folder / "images" / rec["file"], np.asarray(rec["landmarks"], np.float64),
                                  ~np.asarray(rec["occluded"], bool)))
    return samples


def table(result: dict) -> list[str]:
    lines = [("| pipeline | face found | NME | jaw NME (0-16) | inner-51 NME | failures @0.08 | failures @0.10 "
              "| AUC@0.08 | ms per image |"), "|---|---|---|---|---|---|---|---|---|"]
    for name in PIPELINES:
        q = result[name]
        lines.append(f"| {LABELS[name]} | {table_cells(q)} | {q['ms_per_image']:.1f} |")
    b = result["both_found"]
    lines += ["", (f"Same faces: on the {b['faces']} faces dlib's own detector found, NME ours "
                   f"{100 * b['ours_nme']:.2f}%, dlib {100 * b['dlib_nme']:.2f}%. "
                   f"dlib's predictor alone: {result['dlib_predictor_ms_per_face']:.2f} ms per face; HOG found "
                   f"{result['dlib_faces_per_image']:.2f} faces per image; fallback used on "
                   f"{result['fallback_used']} faces (box mapping from {result['box_mapping']['pairs']} face pairs: "
                   f"shift {result['box_mapping']['dx']:+.3f}, {result['box_mapping']['dy']:+.3f}, "
                   f"scale {result['box_mapping']['scale']:.3f}).")]
    return lines


def report_body(afw: dict | None, renders: dict | None, afw_name: str, render_note: str, command: str) -> str:
    lines = [("**A reference, not a fair peer.** dlib's 68-point model (`shape_predictor_68_face_landmarks.dat` "
              "from `face-recognition-models`, dlib's HOG frontal face detector, upsample 1) was trained on 300-W, "
              "which includes afw and helen: its afw numbers are on its own training data. Ours is trained on "
              "helen_train and ICT renders, so afw is held out for us and not for dlib. Faces neither model has "
              "seen are in the second table, but they favour ours: our refiner trains on other renders of the "
              "same ICT model (seeds below 1000), dlib on photographs only. The fallback rows add the faces HOG misses, predicted by dlib from our "
              "detector's box: a measure of dlib's predictor on those faces, not of its detector.")]
    if afw is not None:
        lines += ["", (f"**`{afw_name}`** ({afw['ours']['images']} images, dlib's training data): both models on "
                       "the same faces in the same run; ours as `tools/evaluate.py` runs it (detector included, "
                       "up to 8 faces per image)."), "", *table(afw)]
    if renders is not None:
        lines += ["", (f"**Held-out ICT renders** ({renders['ours']['images']} stills with \\|yaw\\| ≤ 45°; "
                       f"{render_note}). Caveat: the ICT model's 68 landmark vertices follow a slightly different "
                       "definition from iBUG's annotators (the jaw especially), which affects both models alike; "
                       "points hidden by the face itself (ICT's z-buffer) are left out of the means, since "
                       "300-W-style annotations put them on the visible contour instead."), "", *table(renders)]
    lines += ["", ("NME: mean point-to-point error divided by the outer-eye-corner distance (36-45); mean NMEs over "
                   "found faces, a missed face is a failure in the failure rates and AUC. ms per image: the whole "
                   "pipeline on all faces it finds; ours includes the mirror pass and the 3D fit (pose, "
                   "blendshapes), which dlib does not do. Timings on a shared 2-core machine."),
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw", help="folder of images with .pts files")
    parser.add_argument("--limit", type=positive_int, help="only the first N images of --images")
    parser.add_argument("--renders", type=non_negative_int, default=160,
                        help="held-out stills to render (those with |yaw| <= 45° are kept); 0: none")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED,
                        help="render seed (< 1000: not held out)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--predictor", type=Path, help="shape_predictor_68_face_landmarks.dat (default: the package's)")
    parser.add_argument("--json", type=file_to_write, help="also write the report (with per-face rows) here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("dlib") is None:
        print("error: dlib is not installed (pip install dlib-bin face-recognition-models)", file=sys.stderr)
        return 1
    if args.renders and not ICT_PATH.is_file():  # checked before the afw part, not after it
        print(f"error: {ICT_PATH} not found (the shared ICT face model; --renders 0 leaves the renders out)",
              file=sys.stderr)
        return 2
    if args.seed < DEFAULT_SEED and args.renders:
        print(f"warning: seed {args.seed} < {DEFAULT_SEED} is in the calibration range; not held out",
              file=sys.stderr)
    started = time.perf_counter()
    results: dict = {}
    if args.images.is_dir():
        samples = afw_samples(args.images, args.limit)
        if samples:
            results["images"] = run(samples, f"dlib vs ours on {args.images.name}", args.backend, args.predictor)
    else:
        print(f"warning: {args.images} not found; skipping it", file=sys.stderr)
    if args.renders:
        with tempfile.TemporaryDirectory(prefix="dlib_renders_") as tmp:
            samples = render_samples(Path(tmp), args.renders, args.seed)
            results["renders"] = run(samples, "dlib vs ours on held-out renders", args.backend, args.predictor)
    if not results:
        print("error: nothing to evaluate", file=sys.stderr)
        return 2
    command = "python tools/dlib_reference.py" + "".join(
        f" {flag} {v}" for flag, v, d in (("--images", args.images, LANDMARKS68 / "afw"), ("--limit", args.limit, None),
                                          ("--renders", args.renders, 160), ("--seed", args.seed, DEFAULT_SEED))
        if v != d)
    render_note = (f"seed {args.seed}, {args.renders} rendered at 512 px, tools/evaluate_renders.py's random stills: "
                   "random identity, sparse expression, pitch ±25°, roll ±20°, random light and background")
    body = report_body(results.get("images"), results.get("renders"), args.images.name, render_note, command)
    print(f"done in {time.perf_counter() - started:.0f} s\n")
    print(body)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.no_write:
        update_section("dlib-reference", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
