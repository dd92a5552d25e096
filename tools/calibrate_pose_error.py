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

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_confidence import isotonic
from evaluate_renders import render_set, rotation_errors, track_clips, track_stills
from render_ict import IctModel, load_ict_for_tool
from report import file_to_write, invocation, positive_int, publish

from tracker.backends import ENGINES_DIR
from tracker.reliability import POSE_ERROR_FILE, PoseErrorCalibration

CALIBRATION_SEED = 40_000
HELD_OUT_SEED = 41_000
KNOTS = 12
SIZE = 512
FRAMES = 120
BACKEND = "onnxruntime"  # as tools/evaluate_renders.py's default


def fit_calibration(fit_rms: np.ndarray, error_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot table of PoseErrorCalibration: an isotonic fit of the error on the residual."""
    return isotonic(fit_rms, error_deg, KNOTS)


def track_renders(model: IctModel, seed: int, stills: int, clips: int) -> dict[str, np.ndarray]:
    """Residuals and true rotation errors of the faces fitted in ``stills`` stills and ``clips`` clips rendered from
    ``seed``, and how many frames each set has, tracked by tools/evaluate_renders.py's loops (smoothing on in the
    clips, as users get the pose) without the rating being calibrated."""
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="pose_error_") as tmp:
        folder = Path(tmp)
        render_set(model, folder, clips, FRAMES, stills, SIZE, seed)
        for kind, rows in (("still", track_stills(folder / "images", model, BACKEND, pose_error=False)),
                           ("tracked", track_clips(folder / "clips", model, BACKEND, pose_error=False)[0])):
            a = rows.arrays()
            fitted = np.isfinite(a["est_fit_rms"])
            out[f"{kind}_rms"], out[f"{kind}_error"] = a["est_fit_rms"][fitted], rotation_errors(a, fitted)
            out[f"{kind}_frames"] = len(fitted)
    return out


def quarter_rows(label: str, expected: np.ndarray, error: np.ndarray, digits: int = 1) -> list[str]:
    """Table rows: the faces by quarter of their expected error, its range and mean, and their true error's mean and
    median, to ``digits`` decimals."""
    quarters = np.array_split(np.argsort(expected), 4)
    return [f"| {label} | {k + 1} | {expected[q].min():.{digits}f}-{expected[q].max():.{digits}f} | "
            f"{expected[q].mean():.{digits}f} | {error[q].mean():.{digits}f} | {np.median(error[q]):.{digits}f} |"
            for k, q in enumerate(quarters)]


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
    fit = track_renders(model, CALIBRATION_SEED, args.stills, args.clips)
    (still_x, still_y), (tracked_x, tracked_y) = (fit_calibration(fit["still_rms"], fit["still_error"]),
                                                  fit_calibration(fit["tracked_rms"], fit["tracked_error"]))
    table = {"fit_rms_still": still_x, "error_deg_still": still_y,
             "fit_rms_tracked": tracked_x, "error_deg_tracked": tracked_y}
    calibration = PoseErrorCalibration(table=table)
    held = track_renders(model, HELD_OUT_SEED, args.held_out_stills, args.held_out_clips)
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
