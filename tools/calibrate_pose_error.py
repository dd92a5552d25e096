#!/usr/bin/env python3
"""Calibrate the head pose's expected error from the 3D fit's residual, and measure how well it ranks.

Renders ICT faces with known pose, tracks them with the real tracker (detector, mesh, refiner, mirror check,
3D fit, smoothing in clips) at their true focal length, and pairs the fit's residual RMS (inter-ocular units)
with the pose's true error: the angle between the tracked and the true head rotation. Two monotone (isotonic)
maps from one to the other go to engines/pose_error_calibration.npz, one for stills and one for tracked video
frames (a track's fit is warm-started, holds its identity and its pose is smoothed, so the same residual
means another error there); the tracker writes the map's reading as each pose's `expected_error_deg`.

- stills: tools/render_ict.py `render_image` (random identity, expression, yaw ±60°, pitch ±25°, roll ±20°,
  light and background);
- clips: tools/evaluate_renders.py's clips (yaw sweeps covering ±60°, pitch and roll wobble, the key
  blendshapes driven), 120 frames at 25 fps.

Calibration renders come from seed 40,000, held-out ones (which only score the maps) from seed 41,000: no
training, other calibration or evaluation uses either (the refiner's renders are seeds below 1000 and
10,000-27,999; evaluate_renders.py's held-out set is seed 1000's children). Reports the Spearman ρ of the
expected error with the true error on the held-out renders, and the expected against the true error by
quarter of the expected; writes BENCHMARKS.md section "pose-error" unless --no-write.

    python tools/calibrate_pose_error.py
    python tools/calibrate_pose_error.py --stills 400 --clips 12 --held-out-stills 400 --held-out-clips 8 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_confidence import isotonic
from evaluate_renders import read_jsonl, render_set, rotation_error_deg
from render_ict import IctModel, load_ict_for_tool
from report import file_to_write, invocation, positive_int, publish

from tracker.backends import ENGINES_DIR
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.reliability import POSE_ERROR_FILE, PoseErrorCalibration

CALIBRATION_SEED = 40_000
HELD_OUT_SEED = 41_000
KNOTS = 12
SIZE = 512
FRAMES = 120


def fit_calibration(fit_rms: np.ndarray, error_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot table of PoseErrorCalibration: an isotonic fit of the error on the residual."""
    return isotonic(fit_rms, error_deg, KNOTS)


def residuals_and_errors(faces: list, truths: list[dict]) -> tuple[list[float], list[float]]:
    rms, error = [], []
    for face, truth in zip(faces, truths, strict=True):
        if face is None or face.fit_rms is None:
            continue
        rms.append(face.fit_rms)
        error.append(rotation_error_deg(np.array([truth["yaw"], truth["pitch"], truth["roll"]]),
                                        np.array([face.pose.yaw, face.pose.pitch, face.pose.roll])))
    return rms, error


def track_renders(model: IctModel, seed: int, stills: int, clips: int, what: str) -> dict[str, np.ndarray]:
    """Residuals and true rotation errors of the faces found in ``stills`` stills and ``clips`` clips rendered
    from ``seed``; also how many frames were rendered and how many had no fitted face."""
    with tempfile.TemporaryDirectory(prefix="pose_error_") as tmp:
        folder = Path(tmp)
        render_set(model, folder, clips, FRAMES, stills, SIZE, seed)
        out: dict[str, np.ndarray] = {}
        truths = read_jsonl(folder / "images" / "truth.jsonl") if stills else []
        tracker = FaceTracker(TrackerConfig(max_faces=1, pose_error=False))
        faces = []
        for i, truth in enumerate(tqdm(truths, unit="still", desc=f"{what} stills")):
            tracker.config.focal_px = truth["focal"]  # each still has its own camera
            found = tracker.process(cv2.imread(str(folder / "images" / truth["file"])), i, 0.0, truth["file"],
                                    still=True).faces
            faces.append(found[0] if found else None)
        rms, error = residuals_and_errors(faces, truths)
        out["still_rms"], out["still_error"], out["still_frames"] = np.array(rms), np.array(error), len(truths)
        rms, error, frames = [], [], 0
        for video in tqdm(sorted(folder.glob("clips/clip_*.mp4")), unit="clip", desc=f"{what} clips"):
            truths = read_jsonl(video.with_suffix(".jsonl"))
            # One tracker per clip: a fresh track and the clip's camera; smoothing on, as users get the pose.
            tracker = FaceTracker(TrackerConfig(max_faces=1, focal_px=truths[0]["focal"], pose_error=False))
            cap = cv2.VideoCapture(str(video))
            faces = []
            for truth in truths:
                ok, image = cap.read()
                if not ok:
                    raise SystemExit(f"error: {video} ends before frame {truth['frame']} of its truth")
                found = tracker.process(image, truth["frame"], truth["time_s"], video.name).faces
                faces.append(found[0] if found else None)
            cap.release()
            clip_rms, clip_error = residuals_and_errors(faces, truths)
            rms += clip_rms
            error += clip_error
            frames += len(truths)
        out["tracked_rms"], out["tracked_error"], out["tracked_frames"] = np.array(rms), np.array(error), frames
    return out


def quarter_rows(label: str, expected: np.ndarray, error: np.ndarray) -> list[str]:
    quarters = np.array_split(np.argsort(expected), 4)
    return [f"| {label} | {k + 1} | {expected[q].min():.1f}-{expected[q].max():.1f} | {expected[q].mean():.1f} | "
            f"{error[q].mean():.1f} | {np.median(error[q]):.1f} |" for k, q in enumerate(quarters)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stills", type=positive_int, default=400, help="calibration stills")
    parser.add_argument("--clips", type=positive_int, default=12, help="calibration clips, 120 frames each")
    parser.add_argument("--held-out-stills", type=positive_int, default=400, help="held-out stills")
    parser.add_argument("--held-out-clips", type=positive_int, default=8, help="held-out clips, 120 frames each")
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / POSE_ERROR_FILE,
                        help="the calibration file to write (default: the tracker's, engines/pose_error_calibration.npz)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md and the calibration file alone")
    args = parser.parse_args(argv)
    if args.stills < 2 * KNOTS:
        parser.error(f"--stills must be at least {2 * KNOTS} (two per knot of a map)")
    model = load_ict_for_tool()
    if model is None:
        return 2
    fit = track_renders(model, CALIBRATION_SEED, args.stills, args.clips, "calibration")
    (still_x, still_y), (tracked_x, tracked_y) = (fit_calibration(fit["still_rms"], fit["still_error"]),
                                                  fit_calibration(fit["tracked_rms"], fit["tracked_error"]))
    table = {"fit_rms_still": still_x, "error_deg_still": still_y,
             "fit_rms_tracked": tracked_x, "error_deg_tracked": tracked_y}
    calibration = PoseErrorCalibration(table=table)
    held = track_renders(model, HELD_OUT_SEED, args.held_out_stills, args.held_out_clips, "held-out")
    rows, quarters = [], []
    for kind, label, tracked in (("still", "stills", False), ("tracked", "clip frames", True)):
        error = held[f"{kind}_error"]
        expected = np.array([calibration.expected_deg(r, tracked=tracked) for r in held[f"{kind}_rms"]])
        rho = float(spearmanr(expected, error).correlation)
        rows.append(f"| {label} | {len(fit[f'{kind}_rms'])} of {fit[f'{kind}_frames']} | {len(error)} of "
                    f"{held[f'{kind}_frames']} | {rho:.3f} | {expected.mean():.2f}° | {error.mean():.2f}° | "
                    f"{np.median(error):.2f}° |")
        quarters += quarter_rows(label, expected, error)
    if not args.no_write:
        np.savez_compressed(args.out, **table)
    knots = "; ".join(f"{label}: " + ", ".join(f"{x:.3f} → {y:.1f}°" for x, y in zip(xs, ys))
                      for label, xs, ys in (("stills", still_x, still_y), ("tracked", tracked_x, tracked_y)))
    body = "\n".join([
        ("Each pose's `expected_error_deg`: the 3D fit's residual RMS (inter-ocular units) mapped by an isotonic fit "
         "onto the angle between the tracked and the true head rotation, one map for stills and one for tracked "
         f"video frames (warm-started fits, a held identity, the pose smoothed). Fitted on ICT renders from seed "
         f"{CALIBRATION_SEED:,} ({SIZE} px; stills: yaw ±60°, pitch ±25°, roll ±20°, random identity, expression, "
         f"light and background; clips of {FRAMES} frames: `tools/evaluate_renders.py`'s yaw sweeps), tracked by "
         "the default pipeline at their true focal length. Scored on held-out renders of the same kinds from seed "
         f"{HELD_OUT_SEED:,}, never fitted on:"),
        "",
        ("| set | calibration faces | held-out faces | Spearman ρ, expected with true error, held out | expected, "
         "mean | true, mean | true, median |"),
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Held out, by quarter of the expected error:",
        "",
        "| set | quarter | expected, range | expected, mean | true error, mean | true error, median |",
        "|---|---|---|---|---|---|",
        *quarters,
        "",
        (f"The maps' knots (residual → expected error), {knots}; past the last knot the error grows in proportion "
         "to the residual. The renders' faces are ICT's: on real faces the residual runs from the same causes "
         "(points no one head explains: a misread jaw, a picture out of shape), but the scale of the maps is the "
         "renders'."),
        "",
        f"Command: `{invocation()}`",
    ])
    publish("pose-error", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
