#!/usr/bin/env python3
"""Move the face model's observed points to where our detector puts them.

The fit observes the 17 jaw landmarks and a set of face-mesh points (tracker/fitting.py
"rows"). The jaw landmarks follow the human annotators' definitions (the 68-point map
is fitted on helen_train), the mesh points MediaPipe's; the model's points follow
ICT's and a geometric mesh correspondence. Where they disagree, the fit turns the
disagreement into a pose bias (pitch) and false expressions. This tool renders ICT faces
with known identity, expression and pose (tools/render_ict.py, seeds below 1000,
which evaluation never uses), runs the real detector + mesh + 68-point map on them,
and solves, per observed row, the 3D offset in model space whose projection best
explains the 2D disagreement across all the renders' poses (least squares with a
small ridge). Jaw landmarks are compared with the silhouette point of their
contour line under the true pose, as the fit uses them. Writes
engines/landmark_offsets.npz.

    python tools/calibrate_landmarks.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from render_ict import ICT_PATH, load_ict, render_image
from report import file_to_write, non_negative_int, positive_int

from tracker.backends import ENGINES_DIR
from tracker.fitting import EYE_ROWS, JAW_ROWS, OFFSETS_FILE, FaceFitter, FaceModel, choose_contour_points
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix

RIDGE = 1e-2  # in px² per cm² of offset, summed over renders: keeps unobservable directions near 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=positive_int, default=400)
    parser.add_argument("--size", type=positive_int, default=512)
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="renders use seeds seed..seed+renders-1 (keep < 1000)")
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / OFFSETS_FILE)
    args = parser.parse_args()
    if args.seed + args.renders > 1000:
        print("error: calibration seeds must stay below 1000 (evaluation uses 1000 and up)", file=sys.stderr)
        return 2
    if not ICT_PATH.is_file():
        print(f"error: {ICT_PATH} not found (the shared ICT face model)", file=sys.stderr)
        return 2
    ict = load_ict()
    model = FaceModel.load(offsets=None)
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1, fit_3d=False))
    rows = len(model.candidates)
    normal = np.zeros((rows, 3, 3))
    rhs = np.zeros((rows, 3))
    before, used = [], 0
    for k in tqdm(range(args.renders), desc="calibration renders", unit="img"):
        rng = np.random.default_rng(args.seed + k)
        image, truth = render_image(ict, rng, args.size)
        faces = tracker.process(image, still=True).faces
        if not faces or abs(truth["yaw"]) > 60:
            continue
        obs = FaceFitter.observations(faces[0].landmarks, faces[0].mesh.points)[:, :2]
        rot = euler_to_matrix(truth["yaw"], truth["pitch"], truth["roll"])
        rb = rot @ MODEL_TO_CAMERA
        ident = np.array(truth["identity"])[: model.identity.shape[0]]
        expr = np.array([truth["blendshapes"][n] for n in model.names])
        shape = model.mean + np.tensordot(ident, model.identity, 1) + np.tensordot(expr, model.expression, 1)
        cam = shape @ rb.T + np.array(truth["translation_mm"]) / 10.0
        chosen = choose_contour_points(shape @ rb.T, model.candidates, model.slide)
        f, (cx, cy) = truth["focal"], truth["principal_point"]
        p = cam[chosen]
        gt = np.stack([f * p[:, 0] / p[:, 2] + cx, f * p[:, 1] / p[:, 2] + cy], axis=1)
        d = obs - gt
        eyes = np.linalg.norm(gt[EYE_ROWS[0]] - gt[EYE_ROWS[1]])
        if np.abs(d).max() > 0.5 * eyes:
            continue  # the tracker locked onto something else: not a definition difference
        used += 1
        before.append(np.linalg.norm(d, axis=1).mean() / eyes)
        for i in range(rows):
            x, y, z = p[i]
            # Perspective projection's Jacobian for a model-space displacement at this point.
            jac = (f / z) * np.array([[1.0, 0.0, -x / z], [0.0, 1.0, -y / z]]) @ rb
            normal[i] += jac.T @ jac
            rhs[i] += jac.T @ d[i]
    if used < 50:
        print(f"error: only {used} usable renders", file=sys.stderr)
        return 1
    offsets = np.stack([np.linalg.solve(normal[i] + RIDGE * used * np.eye(3), rhs[i]) for i in range(rows)])
    np.savez_compressed(args.out, offsets=offsets.astype(np.float32), renders=used, seed=args.seed)
    size = np.linalg.norm(offsets, axis=1)
    print(f"{used} renders; mean disagreement before: {100 * np.mean(before):.2f}% of inter-ocular")
    print(f"offsets (cm): median {np.median(size):.2f}, max {size.max():.2f} at row {int(size.argmax())}")
    print(f"  jaw rows mean offset (x, y, z) cm: {np.round(offsets[:JAW_ROWS].mean(0), 2)}")
    print(f"  mesh rows mean offset (x, y, z) cm: {np.round(offsets[JAW_ROWS:].mean(0), 2)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
