#!/usr/bin/env python3
"""What the tracker reports on pictures it cannot fully see, measured on afw.

Three cases, each made from afw's annotated faces (faces at least 40 px between the eye corners):
- faces cut by the frame edge: the image cut through the face, 20% or 35% of its annotated box off at
  one side. Of the points the tracker places beyond the edge, how many are flagged
  `occluded` and how much they are trusted; and how far pose and blendshapes move against the same
  face uncut (the head did not move). Cutting a picture moves its centre, which the tracker takes for the
  camera's axis, so the pose is also compared as the head's turn from its line of sight (line_of_sight_turn),
  which a moved centre leaves alone.
- faces turned by quarter turns (a picture without its orientation tag): how many are reported, how wrong
  their points are and how much they are trusted, and how far their pose, gaze and blendshapes read from
  the same faces upright.
- a group photo: faces tiled 6 × 5 in 200 px cells (faces about 120 px wide, 1200 × 1000 px), as a
  still with --max-faces 30, by each detector: how many are found.
- no face at all: textured backgrounds (tools/render_ict.py's, from this tool's own seed), as stills: on how
  many a face is reported, by the tracker and by MediaPipe FaceMesh, and how the tracker rates what it reports.
Writes BENCHMARKS.md section "hard-cases" unless --no-write.

    python tools/evaluate_hard_cases.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import LANDMARKS68, inter_ocular, load_folder, match_face
from render_ict import random_background
from report import import_mediapipe, invocation, positive_int, publish

from tracker.detector import CORNERS, TURNS
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.pose import matrix_to_euler, quaternion_to_matrix
from tracker.roi import outside_image
from tracker.types import Pose

SIDES = ("left", "right", "top", "bottom")
CUTS = (0.2, 0.35)
INNER = slice(27, 68)
GRID_COLUMNS, GRID_ROWS, GRID_CELL = 6, 5, 200
NO_FACE_SEED = 45_000  # this tool's own: no other tool draws backgrounds from it
NO_FACE_SIZE = 512


@dataclass
class Sample:
    name: str
    image: np.ndarray
    points: np.ndarray  # 68×2, the annotation


def cut_at_edge(image: np.ndarray, points: np.ndarray, side: str, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The image cut through the face's annotated box, ``fraction`` of it off at ``side``; the points moved
    with it."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    if side == "left":
        c = int(x0 + fraction * (x1 - x0))
        return image[:, c:], points - (c, 0)
    if side == "right":
        return image[:, :int(x1 - fraction * (x1 - x0))], points
    if side == "top":
        c = int(y0 + fraction * (y1 - y0))
        return image[c:], points - (0, c)
    return image[:int(y1 - fraction * (y1 - y0))], points


def line_of_sight_turn(pose: Pose) -> tuple[float, float]:
    """(yaw, pitch) in degrees of the head's turn from its line of sight: its rotation after the camera is turned,
    the shortest way, to look straight at it. A head seen from the side of the frame looks turned in the camera's
    axes; a picture cut through the face moves its centre, which the tracker takes for the camera's axis, and so
    its camera-axis pose, but not this turn (what the picture itself shows)."""
    sight = np.asarray(pose.translation_mm, np.float64)
    sight = sight / np.linalg.norm(sight)
    # The shortest turn from the camera's axis z onto the line of sight, as a quaternion [1 + z·s, z × s].
    look = quaternion_to_matrix(np.concatenate([[1.0 + sight[2]], np.cross([0.0, 0.0, 1.0], sight)]))
    yaw, pitch, _ = matrix_to_euler(look.T @ pose.rotation)
    return yaw, pitch


def tracked(tracker: FaceTracker, image: np.ndarray, truth: np.ndarray):
    """The still's face that matches the annotated one, or None (a still forgets the faces before it)."""
    faces = tracker.process(np.ascontiguousarray(image), still=True).faces
    index = match_face([f.landmarks for f in faces], truth, tolerance=1.0)
    return None if index is None else faces[index]


def frame_edge_rows(tracker: FaceTracker, items: list) -> list[str]:
    uncut = {}
    for item in tqdm(items, desc="faces uncut", unit="img"):
        face = tracked(tracker, item.image, item.points)
        if face is not None and face.pose is not None:
            uncut[item.name] = face
    rows = []
    for side in SIDES:
        for fraction in CUTS:
            found, beyond, flagged, trust_beyond, trust_inside, yaw, pitch, shifts = 0, 0, 0, [], [], [], [], {}
            sight_turns = []
            error_cut, error_uncut = [], []
            rated, rated_shapes = [], []  # the pose's and the blendshapes' expected errors, cut and uncut
            for item in tqdm([i for i in items if i.name in uncut], desc=f"cut {fraction:.0%} at {side}",
                             unit="img", leave=False):
                image, truth = cut_at_edge(item.image, item.points, side, fraction)
                # The uncut picture's focal length (its width, the default): the same camera, cut.
                tracker.config.focal_px = float(item.image.shape[1])
                try:
                    face = tracked(tracker, image, truth)
                finally:
                    tracker.config.focal_px = None
                if face is None or face.pose is None:
                    continue
                found += 1
                out = outside_image(face.landmarks, image.shape)
                beyond += int(out.sum())
                flagged += int(face.occluded[out].sum())
                trust_beyond += face.landmark_confidence[out].tolist()
                trust_inside += face.landmark_confidence[~out].tolist()
                before = uncut[item.name]
                scale = inter_ocular(truth)
                error_cut += (np.linalg.norm(face.landmarks - truth, axis=1)[~out] / scale).tolist()
                error_uncut += (np.linalg.norm(before.landmarks - item.points, axis=1)[~out] / scale).tolist()
                yaw.append(face.pose.yaw - before.pose.yaw)
                pitch.append(face.pose.pitch - before.pose.pitch)
                sight_turns.append(np.subtract(line_of_sight_turn(face.pose), line_of_sight_turn(before.pose)))
                if face.pose.expected_error_deg is not None and before.pose.expected_error_deg is not None:
                    rated.append((face.pose.expected_error_deg, before.pose.expected_error_deg))  # both fits held
                if face.blendshapes_error is not None and before.blendshapes_error is not None:
                    rated_shapes.append((face.blendshapes_error, before.blendshapes_error))
                for name, value in face.blendshapes.items():
                    shifts.setdefault(name, []).append(value - before.blendshapes[name])
            top = max(shifts, key=lambda k: abs(np.mean(shifts[k]))) if shifts else None
            rows.append(
                f"| {side}, {fraction:.0%} | {found} of {len(uncut)} | {beyond} | "
                f"{100 * flagged / max(beyond, 1):.0f}% | {np.mean(trust_beyond) if trust_beyond else np.nan:.2f} | "
                f"{np.mean(trust_inside) if trust_inside else np.nan:.2f} | "
                f"{np.mean(error_cut):.3f} ({np.mean(error_uncut):.3f}) | {mean_change_cell(yaw)} | "
                f"{mean_change_cell(pitch)} | {mean_change_cell([t[0] for t in sight_turns])} | "
                f"{mean_change_cell([t[1] for t in sight_turns])} | {rated_cell(rated)} | "
                + (f"{top} {np.mean(shifts[top]):+.2f} | " if top else "– | ")
                + f"{rated_cell(rated_shapes, unit='', digits=3)} |")
    return rows


def rated_cell(rated: list[tuple[float, float]], unit: str = "°", digits: int = 1) -> str:
    """A rating (the pose's or the blendshapes' expected error), mean over the faces cut (uncut in brackets), and
    how many faces rate higher cut (of those rated both ways: a failed fit leaves a face unrated)."""
    if not rated:
        return "–"
    cut, uncut = np.array(rated).T
    return (f"{cut.mean():.{digits}f}{unit} ({uncut.mean():.{digits}f}{unit}), {int((cut > uncut).sum())} of "
            f"{len(cut)} higher")


def mean_change_cell(changes: list[float]) -> str:
    """A table cell: the mean change of an angle, its mean size in brackets."""
    values = np.array(changes, dtype=float) if changes else np.full(1, np.nan)
    return f"{np.mean(values):+.1f}° ({np.mean(np.abs(values)):.1f}°)"


SHIFT_PX = 9  # the reference row: the picture moved right and down, not turned
TURNED = (("upright", None, 0.0), ("turned 90° clockwise", cv2.ROTATE_90_CLOCKWISE, 90.0),
          ("turned 180°", cv2.ROTATE_180, 180.0), ("turned 90° anticlockwise", cv2.ROTATE_90_COUNTERCLOCKWISE, -90.0),
          (f"upright, moved {SHIFT_PX} px right and down", "shift", 0.0))


def turned_points(points: np.ndarray, rotate_code: int, w: int, h: int) -> np.ndarray:
    """Points (pixel centres) of a w×h picture, in the picture turned by cv2.rotate(picture, rotate_code)."""
    x, y = points[:, 0], points[:, 1]
    if rotate_code == cv2.ROTATE_90_CLOCKWISE:
        return np.stack([h - 1 - y, x], axis=1)
    if rotate_code == cv2.ROTATE_180:
        return np.stack([w - 1 - x, h - 1 - y], axis=1)
    if rotate_code == cv2.ROTATE_90_COUNTERCLOCKWISE:
        return np.stack([y, w - 1 - x], axis=1)
    raise ValueError(f"not a cv2.rotate code: {rotate_code!r}")


def angle_between(a: float, b: float) -> float:
    """a − b in degrees, wrapped into [−180, 180)."""
    return (a - b + 180.0) % 360.0 - 180.0


def turned_rows(tracker: FaceTracker, items: list) -> list[str]:
    """One row per turn: the inner points' error and confidence, and how far the pose, gaze and blendshapes
    read from the same face upright (a turned picture shows the same head: only the roll should change, by
    the turn; the face also sits elsewhere in the frame, which moves the perspective pose a little)."""
    rows, upright = [], {}
    for label, turn, degrees in TURNED:
        found, errors, trust, yaw, pitch, roll, gaze, weights = 0, [], [], [], [], [], [], []
        for item in tqdm(items, desc=f"faces {label}", unit="img", leave=False):
            image, truth = item.image, item.points
            h, w = item.image.shape[:2]
            if turn == "shift":  # the edge's pixels repeated into the strip uncovered
                image = cv2.warpAffine(image, np.float32([[1, 0, SHIFT_PX], [0, 1, SHIFT_PX]]), (w, h),
                                       borderMode=cv2.BORDER_REPLICATE)
                truth = item.points + SHIFT_PX
            elif turn is not None:
                image, truth = cv2.rotate(image, turn), turned_points(item.points, turn, w, h)
            face = tracked(tracker, image, truth)
            if face is None:
                continue
            found += 1
            errors.append(np.linalg.norm(face.landmarks[INNER] - truth[INNER], axis=1) / inter_ocular(truth))
            trust.append(face.landmark_confidence[INNER])
            if turn is None:
                upright[item.name] = face
            elif item.name in upright and face.pose is not None and upright[item.name].pose is not None:
                before = upright[item.name]
                yaw.append(abs(face.pose.yaw - before.pose.yaw))
                pitch.append(abs(face.pose.pitch - before.pose.pitch))
                roll.append(abs(angle_between(face.pose.roll - before.pose.roll, degrees)))
                if face.gaze is not None and before.gaze is not None:
                    gaze.append(np.hypot(face.gaze.yaw - before.gaze.yaw, face.gaze.pitch - before.gaze.pitch))
                weights.append(np.mean([abs(v - before.blendshapes[k]) for k, v in face.blendshapes.items()]))
        if not errors:
            rows.append(f"| {label} | 0 of {len(items)} | – | – | – | – | – | – | – |")
            continue
        e, c = np.concatenate(errors), np.concatenate(trust)
        against = (f"{np.mean(yaw):.1f}° / {np.mean(pitch):.1f}° / {np.mean(roll):.1f}° | "
                   f"{np.median(gaze):.1f}° | {np.mean(weights):.3f}") if yaw else "– | – | –"
        rows.append(f"| {label} | {found} of {len(items)} | {np.mean(e):.3f} | {100 * np.mean(e > 0.1):.0f}% | "
                    f"{np.mean(c):.2f} | {100 * np.mean(c >= 0.4):.0f}% | {against} |")
    return rows


def median_ms(run: Callable[..., object], *args: object, passes: int = 5, **kwargs: object) -> float:
    """The median over ``passes`` of the time of one call run(*args, **kwargs), in ms."""
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        run(*args, **kwargs)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def search_times(tracker: FaceTracker, items: list) -> str:
    """What the turned searches cost: the detector's time per picture upright, with one turn (a video's search)
    and with all three (a still's)."""
    def detect_each(turns: tuple[int, ...]) -> None:
        for item in items:
            tracker.detector.detect(item.image, turns=turns)

    times = [median_ms(detect_each, turns) / len(items) for turns in ((), TURNS[:1], TURNS)]
    return (f"What the turned searches cost here (the short-range detector, one thread, these {len(items)} pictures "
            f"upright, median of 5 passes): {times[0]:.1f} ms a search upright, {times[1]:.1f} ms with one "
            f"turn, as a video's other searches look, and {times[2]:.1f} ms with all three, as a still, a video's "
            "first frame and a new shot are searched.")


def group_photo(items: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first GRID_COLUMNS × GRID_ROWS faces, each scaled into its own cell (its annotated box × 1.6 across
    the cell), on grey; and their points in the grid."""
    grid = np.full((GRID_ROWS * GRID_CELL, GRID_COLUMNS * GRID_CELL, 3), 90, np.uint8)
    truths = []
    for k, item in enumerate(items[:GRID_COLUMNS * GRID_ROWS]):
        row, column = divmod(k, GRID_COLUMNS)
        (x0, y0), (x1, y1) = item.points.min(0), item.points.max(0)
        scale = GRID_CELL / (1.6 * max(x1 - x0, y1 - y0))
        shift = np.array([(column + 0.5) * GRID_CELL, (row + 0.5) * GRID_CELL]) - scale * np.array([x0 + x1, y0 + y1]) / 2
        warp = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
        tile = cv2.warpAffine(item.image, warp, (grid.shape[1], grid.shape[0]))
        cell = (slice(row * GRID_CELL, (row + 1) * GRID_CELL), slice(column * GRID_CELL, (column + 1) * GRID_CELL))
        grid[cell] = tile[cell]
        truths.append(item.points * scale + shift)
    return grid, truths


def faces_under(boxes: list[np.ndarray], truths: list[np.ndarray]) -> list[int]:
    """For each [x0, y0, x1, y1] box, the index of the one annotated face whose centre it holds (-1: none, or
    more than one)."""
    hits = []
    for box in boxes:
        inside = [k for k, t in enumerate(truths)
                  if box[0] <= t.mean(0)[0] <= box[2] and box[1] <= t.mean(0)[1] <= box[3]]
        hits.append(inside[0] if len(inside) == 1 else -1)
    return hits


def group_rows(items: list) -> list[str]:
    grid, truths = group_photo(items)
    rows = []
    for detector in ("short", "full"):
        tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=len(truths), detector=detector))
        faces = tracker.process(grid, still=True).faces
        found = sum(match_face([f.landmarks for f in faces], truth, tolerance=1.0) is not None for truth in truths)
        detect = tracker.detector.detect
        whole = len({k for k in faces_under([d.bbox for d in detect(grid, turns=TURNS)], truths) if k >= 0})
        times = [median_ms(detect, grid, tile_below=len(truths), corners=corners)
                 for corners in ((), CORNERS[:1], CORNERS)]
        rows.append(f"| `--detector {detector}` | {found} of {len(truths)} | {len(faces)} | {whole} | "
                    + " / ".join(f"{t:.1f}" for t in times) + " |")
    return rows


def no_face_pictures(count: int) -> list[np.ndarray]:
    """``count`` textured backgrounds, none showing a face, the same every run (NO_FACE_SEED)."""
    rng = np.random.default_rng(NO_FACE_SEED)
    return [random_background(rng, NO_FACE_SIZE) for _ in range(count)]


def mean_cell(values: list[float | None], digits: int, unit: str = "") -> str:
    """A table cell: the mean of the values given (None: not rated), or – where none is."""
    kept = [v for v in values if v is not None]
    return f"{np.mean(kept):.{digits}f}{unit}" if kept else "–"


def no_face_rows(pictures: list[np.ndarray], mediapipe: ModuleType) -> list[str]:
    """Per --max-faces: on how many of ``pictures`` (none shows a face) the tracker and MediaPipe FaceMesh (refined
    landmarks, as tools/bench.py runs it, but on still images) report a face, and the tracker's faces' ratings."""
    rows = []
    for max_faces in (1, 4):
        tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=max_faces))
        faces = [tracker.process(p, still=True).faces for p in pictures]
        reported = [f for found in faces for f in found]
        with mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                                    refine_landmarks=True) as peer:
            peer_hits = sum(bool(peer.process(cv2.cvtColor(p, cv2.COLOR_BGR2RGB)).multi_face_landmarks)
                            for p in pictures)
        rows.append(
            f"| {max_faces} | {sum(bool(found) for found in faces)} of {len(pictures)} | {len(reported)} | "
            f"{peer_hits} of {len(pictures)} | {mean_cell([f.score for f in reported], 2)} | "
            f"{mean_cell([float(np.mean(f.landmark_confidence)) for f in reported if f.landmark_confidence is not None], 2)} | "
            f"{mean_cell([f.pose.expected_error_deg for f in reported if f.pose is not None], 1, '°')} | "
            f"{mean_cell([f.blendshapes_error for f in reported], 3)} |")
    return rows


def face_count(text: str) -> int:
    """argparse type for --faces: at least the group photo's GRID_COLUMNS × GRID_ROWS faces."""
    value = positive_int(text)
    if value < GRID_COLUMNS * GRID_ROWS:
        raise argparse.ArgumentTypeError(f"the group photo needs at least {GRID_COLUMNS * GRID_ROWS} faces, "
                                         f"got '{text}'")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw")
    parser.add_argument("--faces", type=face_count, default=80,
                        help=f"afw faces to use (default: 80; at least {GRID_COLUMNS * GRID_ROWS}, for the "
                             "group photo)")
    parser.add_argument("--no-face-pictures", type=positive_int, default=300,
                        help="textured backgrounds without a face (default: 300)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    mediapipe = import_mediapipe()  # the no-face rows' peer, checked first: a missing one wastes no minutes
    labelled = load_folder(args.images) if args.images.is_dir() else []
    labelled = [i for i in labelled if inter_ocular(i.points) >= 40][:args.faces]
    if len(labelled) < GRID_COLUMNS * GRID_ROWS:
        print(f"error: fewer than {GRID_COLUMNS * GRID_ROWS} faces with .pts files and at least 40 px "
              f"between the eye corners in {args.images}", file=sys.stderr)
        return 2
    items = [Sample(i.image_path.name, cv2.imread(str(i.image_path)), i.points) for i in labelled]
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8))
    body = "\n".join([
        (f"The first {len(items)} faces of `{args.images.name}` at least 40 px between the eye corners, each a still "
         "(detector included), the default pipeline."),
        "",
        ("**Cut by the frame edge.** Points beyond the edge: those the tracker places outside the cut image. "
         "Error of the points inside: their distance from the annotated points, in inter-ocular distances (the "
         "same points of the same faces uncut in brackets). Yaw and pitch: mean change against the same face "
         "uncut (mean size in brackets), in the camera's axes as the tracker reports them, and as the head's turn "
         "from its line of sight: cutting the picture moves its centre, which the tracker takes for the camera's "
         "axis, so a head that did not turn reads turned in the camera's axes by about the angle its line of sight "
         "moved (a camera's own frame edge moves no centre). The cut picture is tracked with the uncut one's focal "
         "length (its width). The pose's `expected_error_deg`: its mean over the faces cut (uncut in brackets), and "
         "on how many faces it reads higher cut than uncut. The blendshape that moved most on average, and the "
         "blendshapes' `blendshapes_error` as the pose's expected error."),
        "",
        ("| cut off | found | points beyond the edge | of them `occluded` | their mean confidence | confidence "
         "of the points inside | error of the points inside | yaw | pitch | yaw from the line of sight | pitch "
         "from the line of sight | pose's expected error | blendshape | blendshapes' expected error |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *frame_edge_rows(tracker, items),
        "",
        ("**Turned.** Each picture turned by quarter turns, as a photo or video without its orientation tag "
         "shows it. The detector also searches each still turned by a quarter turn, a half and three quarters "
         "(one of them in a video's other searches, all three on its first frame and at a cut). Inner points "
         "27-67: error in inter-ocular distances, and "
         "`landmark_confidence`. Against the same face upright: the mean change of yaw and pitch, and of roll "
         "less the turn; the median change of the gaze; the mean change of a blendshape weight. A turned "
         "picture also shows the head elsewhere in the frame, which moves its perspective pose a little; the "
         f"last row, for reference, moves the upright pictures {SHIFT_PX} px instead of turning them."),
        "",
        ("| faces | reported | inner points' error, mean | over 0.1 | mean confidence | confidence ≥ 0.4 | "
         "yaw / pitch / roll against upright | gaze against upright | blendshapes against upright |"),
        "|---|---|---|---|---|---|---|---|---|",
        *turned_rows(tracker, items),
        "",
        search_times(tracker, items),
        "",
        (f"**A group photo.** The first {GRID_COLUMNS * GRID_ROWS} faces tiled {GRID_COLUMNS} × {GRID_ROWS}, "
         f"{GRID_CELL} px cells ({GRID_COLUMNS * GRID_CELL} × {GRID_ROWS * GRID_CELL} px), as one still with "
         f"`--max-faces {GRID_COLUMNS * GRID_ROWS}`; a face is found when a reported face lies on it. Looking for "
         "several faces, the tracker also searches the frame's four corners at a larger scale; the fourth column "
         "is the search of the whole frame alone (upright and turned), as with `--max-faces 1`. Search time: "
         "the detector on the whole picture upright, alone / with one corner, as a video's other searches look / "
         "with all four, as a still, a video's first frame and a new shot are searched (median of 5, one "
         "thread; the turned searches cost as above)."),
        "",
        "| detector | faces found | faces reported | found by the whole frame's search alone | search time, ms |",
        "|---|---|---|---|---|",
        *group_rows(items),
        "",
        (f"**No face.** {args.no_face_pictures} pictures without a face ({NO_FACE_SIZE} px, tools/render_ict.py's "
         f"textured backgrounds: gradients, blurred noise, stripes and patches, seed {NO_FACE_SEED:,}), each a still. "
         "Reported by the tracker, and by MediaPipe FaceMesh on the same pictures (static images, refined "
         "landmarks, as many faces at most). What the tracker's faces there read: the mesh's presence (`score`), "
         "the mean `landmark_confidence` (afw's faces upright: the mean confidence above), the pose's "
         "`expected_error_deg` and `blendshapes_error` (afw's faces uncut: the brackets of the first table)."),
        "",
        ("| `--max-faces` | pictures with a face reported | faces reported | MediaPipe FaceMesh: pictures with a face "
         "| their `score`, mean | mean `landmark_confidence` | `expected_error_deg`, mean | `blendshapes_error`, "
         "mean |"),
        "|---|---|---|---|---|---|---|---|",
        *no_face_rows(no_face_pictures(args.no_face_pictures), mediapipe),
        "",
        f"Command: `{invocation()}`",
    ])
    publish("hard-cases", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
