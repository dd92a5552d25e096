#!/usr/bin/env python3
"""Fit the blendshape calibration (tracker/expression.py) on tracked renders with known weights.

Renders the 18 tuning clips of tools/tune_fit_weights.py (tools/evaluate_renders.py's clip
generator with seeds 700, 701 and 702; that tool's held-out evaluation uses seed 1000), tracks
them with the pipeline's smoothing and calibration off, and fits, for each of the six key
shapes the renders drive (jawOpen, the blinks, the smiles, browInnerUp), the map

    w' = clip(a·w + b + far·(c·w + d), 0, 1),   far = max(0, ±tracked yaw / 45°)

that minimises the mean absolute error against the true weights (the bar's measure) over every
frame with a face. The Left and Right shapes of a pair share one map, with ``far`` taken on each
one's own side; jawOpen and browInnerUp have no side and fit a and b only. The other shapes,
which the renders leave at 0, keep the identity map. Writes engines/expression_calibration.npz
and BENCHMARKS.md section "expression-calibration" (the tuning clips' error before and after:
in-sample; the held-out figures are tools/evaluate_renders.py's) unless --no-write.

    python tools/calibrate_expression.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import evaluate_renders
from render_ict import ICT_PATH, KEY_SHAPES, load_ict_for_tool
from report import file_to_write, invocation, update_section
from tune_fit_weights import CLIP_SEEDS, render_clip_folders

from tracker.backends import ENGINES_DIR
from tracker.expression import CALIBRATION_FILE, ExpressionCalibration, calibrate, far_side, side_of
from tracker.fitting import FaceModel

# Shapes fitted together: a Left/Right pair shares its map (the face is symmetric; only the side turned
# away differs, which ``far`` carries).
GROUPS = (("jawOpen",), ("eyeBlinkLeft", "eyeBlinkRight"), ("mouthSmileLeft", "mouthSmileRight"), ("browInnerUp",))


def fit_group(weights: np.ndarray, truth: np.ndarray, far: np.ndarray) -> np.ndarray:
    """(a, b, c, d) minimising the mean absolute error of the map over frames × shapes of one group;
    c = d = 0 where the group has no side (``far`` all 0)."""
    sided = bool(far.any())
    n = 4 if sided else 2

    def mae(p: np.ndarray) -> float:
        coefficients = np.zeros((weights.shape[1], 4))
        coefficients[:, :n] = p
        return float(np.mean(np.abs(calibrate(weights, far, coefficients) - truth)))

    start = np.array([1.0, 0.0, 0.0, 0.0])[:n]
    best = minimize(mae, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-5, "fatol": 1e-8}).x
    return np.concatenate([best, np.zeros(4 - n)])


def fit_calibration(names: list[str], weights: np.ndarray, truth: np.ndarray, yaw: np.ndarray) -> ExpressionCalibration:
    """The calibration of the 52 shapes ``names`` from frames' tracked key-shape ``weights`` [N, 6] (KEY_SHAPES
    order), their true weights and the tracked yaw (degrees)."""
    calibration = ExpressionCalibration.identity(names)
    for group in GROUPS:
        cols = [KEY_SHAPES.index(n) for n in group]
        far = far_side(np.array([side_of(n) for n in group], np.float64), yaw)
        coefficients = fit_group(weights[:, cols], truth[:, cols], far)
        for n in group:
            calibration.coefficients[names.index(n)] = coefficients
    return calibration


def report_body(calibration: ExpressionCalibration, weights: np.ndarray, truth: np.ndarray, yaw: np.ndarray,
                true_yaw: np.ndarray, n_frames: int) -> str:
    keys = [calibration.names.index(n) for n in KEY_SHAPES]
    sides, coefficients = calibration.sides[keys], calibration.coefficients[keys]
    after = calibrate(weights, far_side(sides, yaw), coefficients)
    within = np.abs(true_yaw) <= evaluate_renders.YAW_LIMIT
    lines = [
        (f"Fitted on the 18 tuning clips (tools/evaluate_renders.py's clip generator, seeds "
        f"{', '.join(map(str, CLIP_SEEDS))}; its held-out evaluation uses seed 1000): {n_frames} frames with a face, "
        "tracked with the pipeline's smoothing and calibration off. Map per shape (tracker/expression.py): "
        "w' = clip(a·w + b + far·(c·w + d), 0, 1), far = max(0, ±tracked yaw / 45°) on the shape's own side; "
        "each Left/Right pair shares one map; the other 46 shapes keep the identity. In-sample error below: "
        "the held-out figures are in the renders section."),
        "",
        "| shape | a | b | c | d | MAE before, all frames | after | MAE before, \\|yaw\\| ≤ 45° | after | bias before / after, \\|yaw\\| ≤ 45° |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, name in enumerate(KEY_SHAPES):
        a, b, c, d = coefficients[k]
        e0, e1 = weights[:, k] - truth[:, k], after[:, k] - truth[:, k]
        lines.append(f"| {name} | {a:.3f} | {b:+.3f} | {c:+.3f} | {d:+.3f} | {np.abs(e0).mean():.3f} | "
                     f"{np.abs(e1).mean():.3f} | {np.abs(e0[within]).mean():.3f} | {np.abs(e1[within]).mean():.3f} | "
                     f"{e0[within].mean():+.3f} / {e1[within].mean():+.3f} |")
    lines += ["", f"Command: `{invocation()}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / CALIBRATION_FILE)
    parser.add_argument("--no-write", action="store_true", help="print only; write neither the calibration nor BENCHMARKS.md")
    args = parser.parse_args(argv)
    if (ict := load_ict_for_tool(ICT_PATH)) is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="expression_calibration_") as tmp:
        rows = [evaluate_renders.track_clips(folder, ict, "onnxruntime", smooth=False, calibrate_expression=False)[0]
                .arrays() for folder in render_clip_folders(ict, Path(tmp))]
    weights, truth, pose, true_pose = (np.concatenate([r[k] for r in rows])
                                       for k in ("est_shapes", "true_shapes", "est_pose", "true_pose"))
    found = np.isfinite(weights).all(1) & np.isfinite(pose).all(1)
    weights, truth, yaw, true_yaw = weights[found], truth[found], pose[found, 0], true_pose[found, 0]
    calibration = fit_calibration(FaceModel.load().names, weights, truth, yaw)
    body = report_body(calibration, weights, truth, yaw, true_yaw, int(found.sum()))
    print(body)
    if not args.no_write:
        calibration.save(args.out)
        print(f"wrote {args.out}")
        update_section("expression-calibration", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
