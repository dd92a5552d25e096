#!/usr/bin/env python3
"""Calibrate the blendshapes' expected error, and measure how well it ranks.

Renders ICT faces with known expression, tracks them with the real tracker (detector, mesh, refiner, mirror check,
3D fit, blendshape calibration, smoothing in clips) at their true focal length, and pairs each face's
tracker.reliability.blendshape_signal (how far the refiner's expression readings of the crop and of its mirror
disagree on the key shapes, plus the landmarks' mean distrust and their share beyond the frame's edge) with the key
weights' true error: the mean absolute
difference of the tracked jawOpen, eyeBlinkLeft/Right, mouthSmileLeft/Right and browInnerUp from the rendered ones
(tracker.reliability.RATED_SHAPES). Two monotone (isotonic) maps from one to the other go to
engines/blendshape_error_calibration.npz, one for stills and one for tracked video frames (warm-started fits,
smoothed weights); the tracker writes the map's reading as each face's `blendshapes_error`.

- stills: tools/render_ict.py `render_image` (random identity, a sparse random expression with each key shape
  group on half the time, yaw ±60°, pitch ±25°, roll ±20°, light and background);
- clips: tools/evaluate_renders.py's clips (yaw sweeps covering ±60°, pitch and roll wobble, the key
  blendshapes driven), 120 frames at 25 fps;
- faces cut by the frame: tools/evaluate_cut_renders.py's clips (150 frames, the face drifting until 35% of it
  is beyond the bottom, top, left or right edge, and back), and stills from their cut frames.

Calibration renders come from seed 42,000 (the cut clips from 42,500), held-out ones (which only score the maps)
from seed 43,000 (43,500): no training, other calibration or evaluation uses any of them. Reports the Spearman ρ of
the expected error with the true
error on the held-out renders, and the expected against the true error by quarter of the expected; writes
BENCHMARKS.md section "blendshape-error" unless --no-write.

    python tools/calibrate_blendshape_error.py
    python tools/calibrate_blendshape_error.py --stills 400 --clips 12 --held-out-stills 400 --held-out-clips 8 --no-write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_renders import shape_errors
from rating_calibration import CUT_SEED_OFFSET, FRAMES, SIZE, calibrate_and_score, knots_text, parse_arguments
from render_ict import KEY_SHAPES, load_ict_for_tool
from report import invocation, publish

from tracker.backends import ENGINES_DIR
from tracker.reliability import (
    BLENDSHAPE_BEYOND_WEIGHT,
    BLENDSHAPE_ERROR_FILE,
    RATED_SHAPES,
    UNCONFIDENCE_WEIGHT,
    BlendshapeErrorCalibration,
)

CALIBRATION_SEED = 42_000
HELD_OUT_SEED = 43_000


def rated_blendshapes(a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The signals and the key weights' true mean absolute errors of the fitted faces of a set's Rows.arrays()."""
    fitted = np.isfinite(a["est_shape_signal"]) & np.isfinite(a["est_shapes"][:, 0])
    return a["est_shape_signal"][fitted], shape_errors(a, fitted)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, ENGINES_DIR / BLENDSHAPE_ERROR_FILE, argv)
    if tuple(KEY_SHAPES) != RATED_SHAPES:
        print("error: tools/render_ict.py's KEY_SHAPES are not the tracker's RATED_SHAPES", file=sys.stderr)
        return 2
    model = load_ict_for_tool()
    if model is None:
        return 2
    table, tables = calibrate_and_score(
        model, args, (CALIBRATION_SEED, HELD_OUT_SEED), rated_blendshapes, ("signal", "error"),
        lambda table: BlendshapeErrorCalibration(table=table).expected, mean_digits=3, quarter_digits=3,
        blendshape_error=False)
    knots = knots_text(table, "signal", "error", digits=3)
    body = "\n".join([
        ("Each face's `blendshapes_error`: the expected mean absolute error of its key weights (" +
         ", ".join(RATED_SHAPES) + "). Its signal is the mean absolute difference between the refiner's readings "
         f"of those weights in the crop and in its mirror, plus {UNCONFIDENCE_WEIGHT} × the 68 landmarks' mean "
         f"distrust (1 − `landmark_confidence`, 0 beyond the frame's edge), plus {BLENDSHAPE_BEYOND_WEIGHT} × their "
         "share beyond the frame's edge. An isotonic fit maps it onto the true error, one map for stills and one "
         f"for tracked video frames. Fitted on ICT renders from seed {CALIBRATION_SEED:,} ({SIZE} px; stills: yaw "
         "±60°, pitch ±25°, roll ±20°, random identity, a sparse random expression, light and background; clips of "
         f"{FRAMES} frames: `tools/evaluate_renders.py`'s yaw sweeps with the key shapes driven) and "
         f"{args.cut_clips} clips from seed {CALIBRATION_SEED + CUT_SEED_OFFSET:,} whose face drifts until 35% of it is "
         "beyond an edge of the frame and back (`tools/evaluate_cut_renders.py`), with stills from their cut "
         "frames; tracked by the default pipeline at their true focal length. Scored on held-out renders of the "
         f"same kinds from seeds {HELD_OUT_SEED:,} and {HELD_OUT_SEED + CUT_SEED_OFFSET:,} ({args.held_out_cut_clips} "
         "cut clips), never fitted on:"),
        "",
        *tables,
        "",
        (f"The maps' knots (signal → expected error), {knots}; past the last knot the error grows in proportion "
         "to the signal. The renders' faces are ICT's and their expressions are driven at random: the scale of the "
         "maps is the renders'."),
        "",
        f"Command: `{invocation()}`",
    ])
    publish("blendshape-error", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
