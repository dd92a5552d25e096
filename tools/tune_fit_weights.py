#!/usr/bin/env python3
"""Choose the 3D fit's weights (tracker/fitting.py) on renders no evaluation uses.

Renders ICT stills, runs the real tracker on each (still mode, true focal length)
once per candidate value, and prints pose MAE, bias and gain per axis and the MAE of
the six key blendshapes for |yaw| <= 45°.

- ``depth`` (DEPTH_WEIGHT, the mesh's relative depth rows): seeds 500..500+N-1, training
  renders (evaluation uses 1000 and up; tools/calibrate_landmarks.py uses 0..399). The
  weight to set is the one with the lowest worst-axis pose MAE that leaves the blendshape
  MAE where it is without depth.
- ``hint`` (HINT_WEIGHT, the pull of each expression towards the refiner's image-based
  reading): seeds 900..999, the renders the refiner's expression head never trained on
  (they only selected its checkpoint, tools/train_refiner.py train-expression), so the
  head is not judged on its own training faces. The weight to set is the smallest whose
  mean key-blendshape MAE is within 0.005 of the lowest: the head has seen renders only,
  and a weight that leaves the points some say is the safer one on real faces.

With ``--clips`` (depth only), the tracker runs in tracking mode on 18 rendered clips instead of the stills:
tools/evaluate_renders.py's held-out clip generator with the tuning seeds 700, 701 and 702 (6 clips
each; that tool's evaluation uses seed 1000), for the weights that also matter frame to frame.

- ``expression-smoothing`` (tracker/smoothing.py's EXPRESSION_PARAMS, the One Euro filter on the
  52 weights): those 18 clips, tracked once unsmoothed, then each candidate filter run over each
  clip's weights as the pipeline runs it; prints the key-blendshape MAE per candidate. Choosing
  also needs each candidate's jitter and lag on the real clips: ``python tools/jitter.py --grid``.
- ``rotation-smoothing`` (ROTATION_PARAMS, the quaternion One Euro filter on the head rotation) and
  ``landmark-smoothing`` (LANDMARK_PARAMS, the filter on the 68 points, with the tracker's landmark
  confidence): the same 18 clips tracked once unsmoothed, each candidate filter run over each clip as the
  pipeline runs it; prints the pose MAE, or the mean landmark error (visible points, % of the inter-ocular
  distance), per candidate. The yaw sweeps of these clips are faster than the real clips' turns, so a
  filter that lags fast motion shows here; its jitter and lag on the real clips come from
  ``python tools/jitter.py --grid``.

    python tools/tune_fit_weights.py depth
    python tools/tune_fit_weights.py depth --clips
    python tools/tune_fit_weights.py hint
    python tools/tune_fit_weights.py expression-smoothing
    python tools/tune_fit_weights.py rotation-smoothing
    python tools/tune_fit_weights.py landmark-smoothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import evaluate_renders
from jitter import describe
from render_ict import ICT_PATH, KEY_SHAPES, load_ict_for_tool, render_image
from report import non_negative_float

from tracker import fitting
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.pose import euler_to_matrix, matrix_to_euler, matrix_to_quaternion, quaternion_to_matrix
from tracker.smoothing import (
    EXPRESSION_PARAMS,
    LANDMARK_PARAMS,
    ROTATION_PARAMS,
    STEADY_PARAMS,
    FaceSmoother,
    OneEuro,
    OneEuroParams,
    QuaternionOneEuro,
)

AXES = ("yaw", "pitch", "roll")
CLIP_SEEDS = (700, 701, 702)  # evaluate_renders.py's clip generator; its evaluation uses seed 1000
# name: (first seed, number of renders, candidate values)
PARAMETERS = {
    "depth": (500, 150, (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)),
    "hint": (900, 100, (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)),
}
# (min_cutoff Hz, beta per weight/s, d_cutoff Hz) candidates for the expression filter.
EXPRESSION_FILTERS = tuple(OneEuroParams(*p) for p in (
    (1.0, 5.0, 1.0), (1.0, 5.0, 2.0), (1.0, 5.0, 3.0), (0.5, 5.0, 2.0), (0.5, 5.0, 3.0), (0.75, 5.0, 2.0),
    (2.0, 5.0, 1.0), (1.0, 10.0, 2.0)))
# (min_cutoff Hz, beta per rad/s, d_cutoff Hz, order) candidates for the rotation filter: the first-order
# setting chosen before and the second-order settings of `python tools/jitter.py --grid` with pooled lag <=
# 0.95 frame that remove the most rotation jitter on the real clips (59.4-60.0%, against 56.2% first order).
ROTATION_FILTERS = tuple(OneEuroParams(*p) for p in (
    (3.0, 10.0, 0.5, 1), (9.0, 2.0, 0.5, 2), (9.0, 5.0, 0.5, 2), (8.0, 10.0, 0.5, 2), (9.0, 10.0, 0.5, 2)))
# The same for the landmark filter (beta per IOD/s): the first-order setting chosen before and a neighbour,
# and second-order settings of `python tools/jitter.py --grid`: the most jitter within 1 frame of lag
# (12 Hz, 0), the most within 0.95 frame (12 Hz, 2), and those around them with a larger beta; last, --steady's.
LANDMARK_FILTERS = (*(OneEuroParams(*p) for p in (
    (5.0, 5.0, 0.5, 1), (4.0, 10.0, 0.5, 1), (12.0, 0.0, 0.5, 2), (12.0, 2.0, 0.5, 2), (12.0, 3.0, 0.5, 2),
    (11.0, 7.0, 0.5, 2), (12.0, 5.0, 0.5, 2), (11.0, 10.0, 0.5, 2), (10.0, 12.0, 0.5, 2), (10.0, 15.0, 0.5, 2),
    (12.0, 10.0, 0.5, 2))), STEADY_PARAMS["landmark_params"])


def still_rows(ict, first: int, count: int) -> list[tuple[np.ndarray, dict]]:
    """Rendered stills with |yaw| <= 45° (image, truth), seeds first..first+count-1."""
    renders = [render_image(ict, np.random.default_rng(first + k), 512)
               for k in tqdm(range(count), desc="rendering", unit="img")]
    return [(image, truth) for image, truth in renders if abs(truth["yaw"]) <= evaluate_renders.YAW_LIMIT]


def score_stills(tracker: FaceTracker, renders: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracked and true pose (n, 3) and key-blendshape errors (n, 6) of the stills where a pose was found."""
    est, true, shape_err = [], [], []
    for image, truth in renders:
        tracker.config.focal_px = truth["focal"]
        faces = tracker.process(image, still=True).faces
        if faces and faces[0].pose is not None:
            pose = faces[0].pose
            est.append([pose.yaw, pose.pitch, pose.roll])
            true.append([truth[a] for a in AXES])
            shape_err.append([faces[0].blendshapes[k] - truth["blendshapes"][k] for k in KEY_SHAPES])
    return np.array(est), np.array(true), np.array(shape_err)


def score_clips(ict, folders: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same over the frames of tracked clips with |true yaw| <= 45° where a pose was found."""
    rows = [evaluate_renders.track_clips(folder, ict, "onnxruntime")[0].arrays() for folder in folders]
    true, est = (np.concatenate([r[k] for r in rows]) for k in ("true_pose", "est_pose"))
    shape_err = np.concatenate([r["est_shapes"] - r["true_shapes"] for r in rows])
    keep = (np.abs(true[:, 0]) <= evaluate_renders.YAW_LIMIT) & np.isfinite(est).all(1)
    return est[keep], true[keep], shape_err[keep]


def render_clip_folders(ict, tmp: Path) -> list[Path]:
    folders = []
    for seed in CLIP_SEEDS:
        evaluate_renders.render_set(ict, tmp / str(seed), 6, 120, 0, 512, seed)
        folders.append(tmp / str(seed) / "clips")
    print(f"18 clips × 120 frames, seeds {', '.join(map(str, CLIP_SEEDS))}, frames with |yaw| <= 45°")
    return folders


def unsmoothed_clip_rows(ict, folders: list[Path]) -> list[dict[str, np.ndarray]]:
    """The tuning clips tracked once with the pipeline's output smoothing off: the filters run afterwards."""
    return [evaluate_renders.track_clips(folder, ict, "onnxruntime", smooth=False)[0].arrays() for folder in folders]


def through_filter(rows: dict[str, np.ndarray], values: np.ndarray, make_filter, step) -> np.ndarray:
    """``values`` (one per frame of ``rows``) through a fresh filter per clip, as one per track in the pipeline,
    frames in media time: ``step(filter, value, t, i)`` gives frame i's output. A frame without a face (NaN)
    goes to the filter too, which passes it through."""
    out = values.copy()
    for clip in np.unique(rows["group"]):
        f = make_filter()
        for k, i in enumerate(np.flatnonzero(rows["group"] == clip)):
            out[i] = step(f, out[i], k / evaluate_renders.FPS, i)
    return out


def filter_label(params: OneEuroParams | None, default: OneEuroParams) -> str:
    """A candidate's row label: tools/jitter.py's description of the setting, or "none"."""
    return "none" if params is None else describe(params) + (" (default)" if params == default else "")


def tune_expression_smoothing(ict, folders: list[Path]) -> None:
    """Key-blendshape MAE of each EXPRESSION_FILTERS candidate (and none) on the tuning clips."""
    rows = unsmoothed_clip_rows(ict, folders)
    print("| expression filter: min_cutoff, beta, d_cutoff (order) | " + " | ".join(KEY_SHAPES)
          + " | key blendshapes MAE |")
    print("|---|" + "---|" * (len(KEY_SHAPES) + 1))
    for params in (None, *EXPRESSION_FILTERS):
        errors = []
        for r in rows:
            est = r["est_shapes"] if params is None else through_filter(
                r, r["est_shapes"], lambda p=params: OneEuro(*p), lambda f, x, t, _: np.clip(f(x, t), 0.0, 1.0))
            keep = (np.abs(r["true_pose"][:, 0]) <= evaluate_renders.YAW_LIMIT) & np.isfinite(est).all(1)
            errors.append((est - r["true_shapes"])[keep])
        mae = np.abs(np.concatenate(errors)).mean(0)
        print(f"| {filter_label(params, EXPRESSION_PARAMS)} | " + " | ".join(f"{v:.3f}" for v in mae)
              + f" | {mae.mean():.4f} |", flush=True)


def _rotation_step(f: QuaternionOneEuro, pose: np.ndarray, t: float, _frame: int) -> np.ndarray:
    if not np.isfinite(pose).all():
        return pose  # as the filter does with a rotation it cannot use
    return np.array(matrix_to_euler(quaternion_to_matrix(f(matrix_to_quaternion(euler_to_matrix(*pose)), t))))


def tune_rotation_smoothing(ict, folders: list[Path]) -> None:
    """Pose MAE of each ROTATION_FILTERS candidate (and none) on the tuning clips."""
    rows = unsmoothed_clip_rows(ict, folders)
    print("| rotation filter: min_cutoff, beta, d_cutoff (order) | MAE yaw / pitch / roll | worst-axis MAE |")
    print("|---|---|---|")
    for params in (None, *ROTATION_FILTERS):
        errors = []
        for r in rows:
            est = r["est_pose"] if params is None else through_filter(
                r, r["est_pose"], lambda p=params: QuaternionOneEuro(*p), _rotation_step)
            keep = (np.abs(r["true_pose"][:, 0]) <= evaluate_renders.YAW_LIMIT) & np.isfinite(est).all(1)
            errors.append((est - r["true_pose"])[keep])
        mae = np.abs(np.concatenate(errors)).mean(0)
        print(f"| {filter_label(params, ROTATION_PARAMS)} | {' / '.join(f'{v:.2f}' for v in mae)} | {mae.max():.2f} |",
              flush=True)


def tune_landmark_smoothing(ict, folders: list[Path]) -> None:
    """Landmark error of each LANDMARK_FILTERS candidate (and none) on the tuning clips."""
    rows = unsmoothed_clip_rows(ict, folders)
    print("| landmark filter: min_cutoff, beta, d_cutoff (order) | landmark error, \\|yaw\\| ≤ 20° | ≤ 45° |")
    print("|---|---|---|")
    for params in (None, *LANDMARK_FILTERS):
        errors, yaws = [], []
        for r in rows:
            est = r["est_landmarks"]
            if params is not None:
                # The call tracker.pipeline._smooth makes: the frame's inter-ocular distance and confidence.
                def step(f: FaceSmoother, lm: np.ndarray, t: float, i: int, conf=r["est_confidence"]) -> np.ndarray:
                    usable = np.isfinite(conf[i]).all()
                    return f(t, lm, float(np.linalg.norm(lm[36] - lm[45])), confidence=conf[i] if usable else None)[0]

                est = through_filter(r, est, lambda p=params: FaceSmoother(landmark_params=p), step)
            for i in range(len(est)):
                off = evaluate_renders.landmark_offsets(est[i], r["true_landmarks"][i], r["true_roll"][i],
                                                        r["true_hidden"][i] > 0.5)
                d = np.linalg.norm(off, axis=1)
                d = d[np.isfinite(d)]  # visible points of a frame with a face
                errors.append(d.mean() if len(d) else np.nan)
            yaws.append(np.abs(r["true_pose"][:, 0]))
        err, yaw = np.array(errors), np.concatenate(yaws)
        cells = [100 * np.nanmean(err[yaw <= limit]) for limit in (20.0, evaluate_renders.YAW_LIMIT)]
        steady = " (--steady)" if params == STEADY_PARAMS["landmark_params"] else ""
        print(f"| {filter_label(params, LANDMARK_PARAMS)}{steady} | {cells[0]:.2f}% | {cells[1]:.2f}% |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parameter", choices=(*PARAMETERS, *SMOOTHING))
    parser.add_argument("--values", type=non_negative_float, nargs="+",
                        help="candidate values (default: a built-in grid)")
    parser.add_argument("--clips", action="store_true", help="score tracked clips (seeds 700-702), not stills")
    args = parser.parse_args()
    if args.clips and args.parameter == "hint":
        parser.error("--clips tunes the depth weight only (each clip's tracker takes the fitter's default hint weight)")
    if args.parameter in SMOOTHING and args.values:
        parser.error(f"{args.parameter} scores its built-in candidates; --values does not apply")
    if (ict := load_ict_for_tool(ICT_PATH)) is None:
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.parameter in SMOOTHING:  # on clips whether or not --clips is given
            SMOOTHING[args.parameter](ict, render_clip_folders(ict, Path(tmp)))
            return 0
        first, count, grid = PARAMETERS[args.parameter]
        if args.clips:  # evaluate_renders.track_clips makes a tracker per clip
            folders = render_clip_folders(ict, Path(tmp))
        else:
            tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))
            renders = still_rows(ict, first, count)
            print(f"{len(renders)} renders with |yaw| <= 45°, seeds {first}..{first + count - 1}")
        print(f"| {args.parameter} weight | found | MAE yaw / pitch / roll | bias | gain | worst-axis MAE | "
              + " | ".join(KEY_SHAPES) + " | key blendshapes MAE |")
        print("|---|---|---|---|---|---|" + "---|" * (len(KEY_SHAPES) + 1))
        for value in args.values or grid:
            if args.parameter == "depth":
                fitting.DEPTH_WEIGHT = value  # read at each fit
            else:
                tracker.fitter.hint_weight = value
            est, true, shape_err = score_clips(ict, folders) if args.clips else score_stills(tracker, renders)
            shape_mae = np.abs(shape_err).mean(0)
            err = est - true
            mae = np.abs(err).mean(0)
            gain = [np.polyfit(true[:, k], est[:, k], 1)[0] for k in range(3)]
            found = f"{len(est)} frames" if args.clips else f"{len(est)}/{len(renders)}"
            print(f"| {value:g} | {found} | {' / '.join(f'{v:.2f}' for v in mae)} | "
                  f"{' / '.join(f'{v:+.2f}' for v in err.mean(0))} | {' / '.join(f'{v:.2f}' for v in gain)} | "
                  f"{mae.max():.2f} | " + " | ".join(f"{v:.3f}" for v in shape_mae) + f" | {shape_mae.mean():.3f} |",
                  flush=True)
    return 0


SMOOTHING = {"expression-smoothing": tune_expression_smoothing, "rotation-smoothing": tune_rotation_smoothing,
             "landmark-smoothing": tune_landmark_smoothing}


if __name__ == "__main__":
    sys.exit(main())
