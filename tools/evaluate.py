#!/usr/bin/env python3
"""Landmark accuracy of the real tracker (detector included) on a folder of images + .pts.

Reports detection rate of the annotated face, NME normalised by the outer-eye-corner
distance (36/45) overall, on the jaw (0-16) and on the inner 51 points (17-67),
failure rates at NME 0.08 and 0.10, and AUC@0.08 of the cumulative error curve.
A missed face counts as a failure (NME = inf) in the failure rates and AUC, and is
left out of the mean NME (which is over found faces).

    python tools/evaluate.py                      # afw, held out from training
    python tools/evaluate.py --images DIR --json results.json --no-write --worst OUT

The folder's images (its subfolders' too) need a .pts of the same name beside them; files that cannot be used (no
.pts, a .pts that is no 68-point annotation, an image OpenCV cannot read) are left out and said on stderr, not
counted as faces missed. Without --no-write a run adds or rewrites the folder's own section of BENCHMARKS.md and
its CED plot in docs/.
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
from landmark_data import (
    LANDMARKS68,
    LabelledImage,
    inter_ocular,
    load_folder,
    match_face,
    say_left_out_files,
)
from report import file_to_write, folder_to_write, update_section

from tracker.backends import BACKENDS, BackendError
from tracker.pipeline import FaceTracker, TrackerConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BACKEND = "onnxruntime"
JAW = slice(0, 17)
INNER = slice(17, 68)


def nme_scores(prediction: np.ndarray, truth: np.ndarray, visible: np.ndarray | None = None) -> dict:
    """One face's NME over the 68 points, the jaw and the inner 51, as the per-face row keys
    :func:`summarise` reads (hidden points left out where ``visible`` is given)."""
    d = np.linalg.norm(prediction - truth, axis=1) / inter_ocular(truth)
    if visible is not None:
        d = np.where(visible, d, np.nan)
    return {"nme": float(np.nanmean(d)), "nme_jaw": float(np.nanmean(d[JAW])),
            "nme_inner": float(np.nanmean(d[INNER]))}


def auc(errors: np.ndarray, limit: float) -> float:
    """Area under the cumulative error distribution up to ``limit``, normalised to [0, 1]."""
    grid = np.linspace(0.0, limit, 1001)
    ced = (errors[None, :] <= grid[:, None]).mean(1)
    return float(np.trapz(ced, grid) / limit)


def summarise(per_face: list[dict]) -> dict:
    """Mean NMEs over the found faces (rows with "found" and, when found, "nme", "nme_jaw" and
    "nme_inner"); a missed face counts as a failure in the failure rates and the AUC."""
    found = [r for r in per_face if r["found"]]
    errors = np.array([r.get("nme", np.inf) for r in per_face])
    mean = lambda key: float(np.mean([r[key] for r in found])) if found else float("nan")
    return {
        "images": len(per_face),
        "detection_rate": len(found) / max(len(per_face), 1),
        "nme": mean("nme"), "nme_jaw": mean("nme_jaw"), "nme_inner51": mean("nme_inner"),
        "failure_rate_0.08": float((errors > 0.08).mean()),
        "failure_rate_0.10": float((errors > 0.10).mean()),
        "auc_0.08": auc(errors, 0.08),
    }


def table_cells(q: dict) -> str:
    """A summary's found, NME, jaw NME, inner-51 NME, failure rates and AUC as Markdown table cells (a mean over
    no found face as —)."""
    def percent(value: float, digits: int) -> str:
        return "—" if np.isnan(value) else f"{100 * value:.{digits}f}%"

    return (f"{percent(q['detection_rate'], 1)} | {percent(q['nme'], 2)} | {percent(q['nme_jaw'], 2)} | "
            f"{percent(q['nme_inner51'], 2)} | {percent(q['failure_rate_0.08'], 1)} | "
            f"{percent(q['failure_rate_0.10'], 1)} | {q['auc_0.08']:.3f}")


def evaluate(folder: Path, items: list[LabelledImage], config: TrackerConfig,
             say_left_out: bool = True) -> dict:
    """The summary and per-face rows of one pipeline on the folder's annotated ``items`` (load_folder's);
    ``say_left_out``: warn on stderr of the pictures left out (a second pipeline on the same items leaves out the
    same)."""
    tracker = FaceTracker(config)
    per_face, unreadable, off_picture = [], [], []
    for item in tqdm(items, desc=f"evaluating on {folder.name}", unit="img"):
        image = cv2.imread(str(item.image_path))
        if image is None:  # a file whose header OpenCV reads but whose picture it cannot decode
            unreadable.append(str(item.image_path.relative_to(folder)))
            continue
        (x0, y0), (x1, y1) = item.points.min(0), item.points.max(0)
        if x1 < 0 or y1 < 0 or x0 > image.shape[1] - 1 or y0 > image.shape[0] - 1:  # not a face of this picture
            off_picture.append(str(item.image_path.relative_to(folder)))
            continue
        faces = tracker.process(image, still=True).faces
        index = match_face([f.landmarks for f in faces], item.points)
        face = None if index is None else faces[index]
        row = {"image": str(item.image_path), "found": face is not None, "truth": item.points.tolist()}
        if face is not None:
            row["prediction"] = face.landmarks.tolist()
            row.update(nme_scores(face.landmarks, item.points))
        per_face.append(row)
    for left_out, why in ((unreadable, "an image OpenCV could not decode"),
                          (off_picture, "an image annotated wholly off the picture")):
        if left_out and say_left_out:
            say_left_out_files(folder, why, left_out)
    if not per_face:
        raise SystemExit(f"error: none of the annotated images in {folder} can be used (see the warnings)")
    return {**summarise(per_face), "per_face": per_face}


CURVE_COLOURS = ((40, 40, 220), (150, 150, 150))  # BGR: default red, baseline grey


def draw_ced(reports: dict, limit: float, path: Path) -> None:
    """Cumulative error distribution (share of faces with NME ≤ x) of each pipeline, as a PNG."""
    w, h, m = 640, 420, 50
    img = np.full((h, w, 3), 255, np.uint8)
    x_of = lambda e: int(m + (w - 2 * m) * e / limit)
    y_of = lambda f: int(h - m - (h - 2 * m) * f)
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for k in range(5):
        e, f = limit * k / 4, k / 4
        cv2.putText(img, f"{100 * e:.0f}%", (x_of(e) - 12, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{f:.2f}", (8, y_of(f) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "NME (inter-ocular)", (w // 2 - 60, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "cumulative error distribution", (m, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    for k, (name, report) in enumerate(reports.items()):
        errors = np.sort([r.get("nme", np.inf) for r in report["per_face"]])
        grid = np.linspace(0, limit, 200)
        ced = (errors[None, :] <= grid[:, None]).mean(1)
        pts = np.array([[x_of(e), y_of(f)] for e, f in zip(grid, ced)], np.int32)
        cv2.polylines(img, [pts], False, CURVE_COLOURS[k % 2], 2, cv2.LINE_AA)
        label = f"{name.split(':')[0]}: AUC@{limit:.2f} {report['auc_0.08']:.3f}"
        cv2.putText(img, label, (m + 10, m + 22 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, CURVE_COLOURS[k % 2], 1)
    cv2.imwrite(str(path), img)


def draw_worst(report: dict, path: Path, count: int = 12) -> None:
    """A sheet of the ``count`` worst faces: truth green, prediction red, NME written on each."""
    rows = sorted(report["per_face"], key=lambda r: -r.get("nme", np.inf))[:count]
    tiles = []
    for r in rows:
        image = cv2.imread(r["image"])
        truth = np.array(r["truth"])
        lo, hi = truth.min(0), truth.max(0)
        pad = 0.3 * (hi - lo).max()
        x0, y0 = np.maximum((lo - pad).astype(int), 0)
        x1, y1 = np.minimum((hi + pad).astype(int), [image.shape[1], image.shape[0]])
        tile = image[y0:y1, x0:x1].copy()
        scale = 200.0 / max(tile.shape[:2])
        tile = cv2.resize(tile, None, fx=scale, fy=scale)
        for points, colour in ((truth, (0, 200, 0)), (np.array(r.get("prediction", [])), (0, 0, 255))):
            for x, y in ((points - (x0, y0)) * scale).astype(int).tolist() if len(points) else []:
                cv2.circle(tile, (x, y), 2, colour, -1, cv2.LINE_AA)
        canvas = np.full((200, 200, 3), 255, np.uint8)
        canvas[: tile.shape[0], : tile.shape[1]] = tile
        label = f"{100 * r['nme']:.1f}%" if "nme" in r else "not found"
        cv2.putText(canvas, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(canvas)
    while len(tiles) % 6:
        tiles.append(np.full((200, 200, 3), 255, np.uint8))
    sheet = np.vstack([np.hstack(tiles[i : i + 6]) for i in range(0, len(tiles), 6)])
    cv2.imwrite(str(path), sheet)


def without_nan(value: object) -> object:
    """``value`` with its NaN and infinite numbers as None (JSON's null): a folder whose faces were all missed has no
    mean NME, and strict JSON readers refuse NaN."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def run_names(images: Path, detector: str, backend: str) -> tuple[str, str, str, str]:
    """A run's folder name, BENCHMARKS.md section, plot name and command line. A detector or backend other
    than the default is in the last three, so such a run neither overwrites the default run's section and
    plots nor hides how it was made."""
    folder = images.resolve().name  # resolved: `--images .` has no name of its own
    options = (("" if images == LANDMARKS68 / "afw" else f" --images {images}")
               + ("" if detector == "short" else f" --detector {detector}")
               + ("" if backend == DEFAULT_BACKEND else f" --backend {backend}"))
    backend_suffix = "" if backend == DEFAULT_BACKEND else f"-{backend}"
    detector_suffix = "" if detector == "short" else f"-{detector}"
    return (folder, f"landmarks-{folder}-{detector}{backend_suffix}",
            f"{folder}{detector_suffix}{backend_suffix}", f"python tools/evaluate.py{options}")


def shown(path: Path) -> str:
    """``path`` as the section shows it: relative to the repository (where BENCHMARKS.md links from) when
    inside it, else as it is."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw", help="folder of images with .pts files")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    parser.add_argument("--detector", default="short", choices=("short", "full"))
    parser.add_argument("--json", type=file_to_write, help="also write the report (with per-face rows) here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--plots", type=folder_to_write,
                        help="folder for the CED plot (default: docs/, or the --worst folder with --no-write, "
                             "so a trial run leaves the committed plot alone)")
    parser.add_argument("--worst", type=folder_to_write, default=REPO / "out",
                        help="folder for the sheet of the 12 worst faces (dataset pixels: kept out of the repo)")
    args = parser.parse_args()
    if not args.images.is_dir():
        print(f"error: {args.images} " + ("is not a folder" if args.images.exists() else "not found"), file=sys.stderr)
        return 2
    folder_name, section, plot_name, command = run_names(args.images, args.detector, args.backend)
    started = time.perf_counter()
    # Several faces per image are tracked so the annotated one is found even when it is not the largest.
    # The baseline (face mesh + linear 68-point map) runs on the same faces in the same run.
    configs = {
        "default: refiner + mirror fusion": TrackerConfig(backend=args.backend, detector=args.detector, max_faces=8),
        "baseline: face mesh + linear map (`--refiner none --no-mirror`)": TrackerConfig(
            backend=args.backend, detector=args.detector, max_faces=8, refiner=False, mirror_check=False),
    }
    items = load_folder(args.images, subfolders=True)
    if not items:
        print(f"error: no images with .pts files in {args.images}", file=sys.stderr)
        return 1
    try:
        reports = {name: evaluate(args.images, items, config, say_left_out=k == 0)
                   for k, (name, config) in enumerate(configs.items())}
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    r = next(iter(reports.values()))
    rows = [f"| {name} | {table_cells(q)} |" for name, q in reports.items()]
    body = "\n".join([
        (f"`{folder_name}` ({r['images']} images, held out: the 68-point map and the refiner are trained on "
         f"helen_train), detector `{args.detector}` included, backend {args.backend}."),
        "",
        ("| pipeline | annotated face found | NME | jaw NME (0-16) | inner-51 NME | failures @0.08 | failures @0.10 "
        "| AUC@0.08 |"),
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        ("NME: mean point-to-point error over the 68 points divided by the outer-eye-corner distance (36-45). "
         "A missed face is a failure in the failure rates and AUC."),
        "",
        f"Command: `{command}`",
    ])
    print(f"{folder_name}: {r['images']} images in {time.perf_counter() - started:.0f} s")
    print(body)
    if args.json:  # before the plots: the figures are kept whatever the drawing meets
        args.json.write_text(json.dumps(without_nan(reports), indent=1, allow_nan=False))
    plots = args.plots or (args.worst if args.no_write else REPO / "docs")
    plots.mkdir(parents=True, exist_ok=True)
    args.worst.mkdir(parents=True, exist_ok=True)
    ced, worst = plots / f"ced_{plot_name}.png", args.worst / f"worst_{plot_name}.png"
    draw_ced(reports, 0.08, ced)
    draw_worst(r, worst)
    body += (f"\n\n![CED]({shown(ced)}) — the sheet of the 12 worst faces (prediction red, truth green) is "
             f"written to `{shown(worst)}`, not committed: it holds dataset pixels.")
    print(f"plots: {ced}, {worst}")
    if not args.no_write:
        update_section(section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
