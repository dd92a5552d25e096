#!/usr/bin/env python3
"""Calibrate the head pose's expected error from the 3D fit's residual, and measure how well it ranks.

Renders ICT faces with known pose, tracks them with the real tracker (detector, mesh, refiner, mirror check,
3D fit, smoothing in clips) at their true focal length, and pairs each pose's tracker.reliability.pose_signal
(the fit's residual RMS, inter-ocular units, plus a term for the brows, nose and eyes beyond the frame's edge)
with its true error: the angle between the tracked and the true head rotation. Two monotone (isotonic) maps
from one to the other go to engines/pose_error_calibration.npz, one for stills and one for tracked video frames
(a track's fit is warm-started, holds its identity and its pose is smoothed, so the same signal means another
error there); the tracker writes the map's reading as each pose's `expected_error_deg`.

- stills: tools/render_ict.py `render_image` (random identity, expression, yaw ±60°, pitch ±25°, roll ±20°,
  light and background);
- clips: tools/evaluate_renders.py's clips (yaw sweeps covering ±60°, pitch and roll wobble, the key
  blendshapes driven), 120 frames at 25 fps;
- faces cut by the frame: tools/evaluate_cut_renders.py's clips (150 frames, the face drifting until 35% of it
  is beyond the bottom, top, left or right edge, and back), and stills from their cut frames.

Calibration renders come from seed 40,000 (the cut clips from 40,500), held-out ones (which only score the maps)
from seed 41,000 (41,500): no training, other calibration or evaluation uses any of them (the refiner's renders
are seeds below 1000 and 10,000-27,999; evaluate_renders.py's held-out set is seed 1000's children). Reports the
Spearman ρ of the expected error with the true error on the held-out renders, and the expected against the true
error by quarter of the expected; writes BENCHMARKS.md section "pose-error" unless --no-write.

    python tools/calibrate_pose_error.py
    python tools/calibrate_pose_error.py --stills 400 --clips 12 --held-out-stills 400 --held-out-clips 8 --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_renders import rotation_errors
from rating_calibration import CUT_SEED_OFFSET, FRAMES, SIZE, calibrate_and_score, knots_text, parse_arguments
from render_ict import load_ict_for_tool
from report import invocation, publish

from tracker.backends import ENGINES_DIR
from tracker.reliability import POSE_BEYOND_WEIGHT, POSE_ERROR_FILE, PoseErrorCalibration

CALIBRATION_SEED = 40_000
HELD_OUT_SEED = 41_000


def rated_poses(a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The signals and the true rotation errors of the fitted faces of a set's Rows.arrays()."""
    fitted = np.isfinite(a["est_pose_signal"])
    return a["est_pose_signal"][fitted], rotation_errors(a, fitted)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, ENGINES_DIR / POSE_ERROR_FILE, argv)
    model = load_ict_for_tool()
    if model is None:
        return 2
    table, tables = calibrate_and_score(
        model, args, (CALIBRATION_SEED, HELD_OUT_SEED), rated_poses, ("signal", "error_deg"),
        lambda table: PoseErrorCalibration(table=table).expected_deg, mean_digits=2, quarter_digits=1, unit="°",
        pose_error=False)
    knots = knots_text(table, "signal", "error_deg", digits=1, unit="°")
    body = "\n".join([
        ("Each pose's `expected_error_deg`: its signal, the 3D fit's residual RMS (inter-ocular units) plus "
         f"{POSE_BEYOND_WEIGHT} × the share of the brows, nose and eyes (landmarks 17-47) beyond the frame's edge, "
         "mapped by an isotonic fit "
         "onto the angle between the tracked and the true head rotation, one map for stills and one for tracked "
         f"video frames (warm-started fits, a held identity, the pose smoothed). Fitted on ICT renders from seed "
         f"{CALIBRATION_SEED:,} ({SIZE} px; stills: yaw ±60°, pitch ±25°, roll ±20°, random identity, expression, "
         f"light and background; clips of {FRAMES} frames: `tools/evaluate_renders.py`'s yaw sweeps) and "
         f"{args.cut_clips} clips from seed {CALIBRATION_SEED + CUT_SEED_OFFSET:,} whose face drifts until 35% of it is "
         "beyond an edge of the frame and back (`tools/evaluate_cut_renders.py`), with stills from their cut "
         "frames; tracked by the default pipeline at their true focal length. Scored on held-out renders of the "
         f"same kinds from seeds {HELD_OUT_SEED:,} and {HELD_OUT_SEED + CUT_SEED_OFFSET:,} ({args.held_out_cut_clips} "
         "cut clips), never fitted on:"),
        "",
        *tables,
        "",
        (f"The maps' knots (signal → expected error), {knots}; past the last knot the error grows in proportion "
         "to the signal. The renders' faces are ICT's: on real faces the residual runs from the same causes "
         "(points no one head explains: a misread jaw, a picture out of shape), but the scale of the maps is the "
         "renders'."),
        "",
        f"Command: `{invocation()}`",
    ])
    publish("pose-error", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
