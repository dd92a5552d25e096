#!/usr/bin/env python3
"""Choose the 3D fit's depth weight (tracker/fitting.py DEPTH_WEIGHT) on training renders.

Renders ICT stills with seeds 500..500+N-1 (below 1000: evaluation uses 1000 and up;
tools/calibrate_landmarks.py uses 0..399), runs the real tracker on each (still mode,
true focal length) once per candidate weight, and prints pose MAE, bias and gain per
axis and the mean MAE of the six key blendshapes for |yaw| <= 45°. The weight to set
is the one with the lowest worst-axis pose MAE (the bar is per axis) that leaves the
blendshape MAE where it is without depth.

    python tools/tune_depth_weight.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from render_ict import ICT_PATH, KEY_SHAPES, load_ict, render_image

from tracker import fitting
from tracker.pipeline import FaceTracker, TrackerConfig

FIRST_SEED = 500
AXES = ("yaw", "pitch", "roll")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=150)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    args = parser.parse_args()
    if FIRST_SEED + args.renders > 1000:
        print("error: tuning seeds must stay below 1000 (evaluation uses 1000 and up)", file=sys.stderr)
        return 2
    ict = load_ict(ICT_PATH)
    renders = [render_image(ict, np.random.default_rng(FIRST_SEED + k), 512)
               for k in tqdm(range(args.renders), desc="rendering", unit="img")]
    renders = [(image, truth) for image, truth in renders if abs(truth["yaw"]) <= 45.0]
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))
    print(f"{len(renders)} renders with |yaw| <= 45°, seeds {FIRST_SEED}..{FIRST_SEED + args.renders - 1}")
    print("| depth weight | found | MAE yaw / pitch / roll | bias | gain | worst-axis MAE | key blendshapes MAE |")
    print("|---|---|---|---|---|---|---|")
    for weight in args.weights:
        fitting.DEPTH_WEIGHT = weight
        est, true, shape_err = [], [], []
        for image, truth in renders:
            tracker.config.focal_px = truth["focal"]
            faces = tracker.process(image, still=True).faces
            if faces and faces[0].pose is not None:
                pose = faces[0].pose
                est.append([pose.yaw, pose.pitch, pose.roll])
                true.append([truth[a] for a in AXES])
                shape_err.append([faces[0].blendshapes[k] - truth["blendshapes"][k] for k in KEY_SHAPES])
        est, true = np.array(est), np.array(true)
        err = est - true
        mae = np.abs(err).mean(0)
        gain = [np.polyfit(true[:, k], est[:, k], 1)[0] for k in range(3)]
        print(f"| {weight:g} | {len(est)}/{len(renders)} | {' / '.join(f'{v:.2f}' for v in mae)} | "
              f"{' / '.join(f'{v:+.2f}' for v in err.mean(0))} | {' / '.join(f'{v:.2f}' for v in gain)} | "
              f"{mae.max():.2f} | {np.abs(shape_err).mean():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
