#!/usr/bin/env python3
"""Draw docs/pose_convention.png: the head-pose sign convention on rendered ICT faces.

Four renders of the same face (frontal, yaw +30°, pitch +20°, roll +20°), each with the
head's own axes drawn from the nose tip (red: subject's left, green: up, blue: out of
the face) and the angle it illustrates. Uses tools/render_ict.py and tracker/pose.py,
so the picture is the convention the code implements.

    python tools/draw_pose_convention.py [--out PNG]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from render_ict import ICT_PATH, load_ict, random_light, render

from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix

PANELS = (("frontal: 0, 0, 0", (0, 0, 0)), ("yaw +30: turns to own left", (30, 0, 0)),
          ("pitch +20: looks up", (0, 20, 0)), ("roll +20: tilts to own left", (0, 0, 20)))
SIZE = 320


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "pose_convention.png",
                        help="PNG to write")
    out = parser.parse_args(argv).out
    if not ICT_PATH.is_file():
        print(f"error: {ICT_PATH} not found", file=sys.stderr)
        return 2
    model = load_ict()
    identity = np.zeros(model.id_basis.shape[0], np.float32)
    expression = np.zeros(model.exp_basis.shape[0], np.float32)
    focal, translation = 1.2 * SIZE, np.array([0.0, 1.5, 60.0])
    background = np.full((SIZE, SIZE, 3), 235, np.uint8)
    # A fixed, frontal key light and no sensor noise, so the four panels differ only in pose.
    key = np.array([0.3, -0.4, -0.87])
    light = replace(random_light(np.random.default_rng(3)), direction=key / np.linalg.norm(key), noise_sigma=0.0)
    tiles = []
    for label, (yaw, pitch, roll) in PANELS:
        rot = euler_to_matrix(yaw, pitch, roll)
        image, landmarks, _ = render(model, identity, expression, rot, translation, focal, SIZE, light,
                                     background, np.random.default_rng(0))
        nose = landmarks[30]
        axes = rot @ MODEL_TO_CAMERA
        for k, colour in enumerate(((0, 0, 220), (0, 170, 0), (220, 0, 0))):
            tip = nose + 70 * axes[:2, k]
            cv2.arrowedLine(image, tuple(np.round(nose).astype(int).tolist()), tuple(np.round(tip).astype(int).tolist()),
                            colour, 2, cv2.LINE_AA, tipLength=0.15)
        cv2.putText(image, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        tiles.append(image)
    sheet = np.concatenate(tiles, axis=1)
    legend = np.full((30, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(legend, "camera view, not mirrored. axes from the nose: red = subject's left, green = up, "
                "blue = out of the face. R = R_roll * R_pitch * R_yaw", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (20, 20, 20), 1, cv2.LINE_AA)
    if not out.parent.is_dir() or not cv2.imwrite(str(out), np.concatenate([sheet, legend])):
        print(f"error: cannot write {out}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
