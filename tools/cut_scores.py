#!/usr/bin/env python3
"""How the tracker tells a cut in a video: the frame-to-frame correlation of `frame_signature`.

For each clip, the lowest correlations between consecutive frames (a cut reads below
tracker.tracking.CUT_MAX_CORRELATION), the same frame's correlation under sudden changes of
exposure and white balance (no cut), and the signature's cost per frame. This is what
CUT_MAX_CORRELATION was chosen from. Prints only; BENCHMARKS.md quotes it.

    python tools/cut_scores.py                      # the shared clips in ../shared/data/video
    python tools/cut_scores.py --videos DIR_OR_FILE [...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from landmark_data import SHARED_DATA

from tracker.tracking import CUT_MAX_CORRELATION, ShotCuts, frame_signature

SHARED_VIDEO = SHARED_DATA / "video"
# Gains per BGR channel: a jump in white balance, then in exposure either way.
LIGHTING = ((1.3, 0.85, 1.0), (1.4, 1.4, 1.4), (0.6, 0.6, 0.6))


def correlations(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(frame-to-frame correlations, index of the later frame of each, the first frame)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # FFmpeg alone: OpenCV's own reader is loud on non-videos
    values, frames, cuts, first, k = [], [], ShotCuts(), None, 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        first = image if first is None else first
        value = cuts.correlation(image)  # as the tracker compares frames
        if value is not None:
            values.append(value)
            frames.append(k)
        k += 1
    cap.release()
    return np.array(values), np.array(frames), first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", type=Path, default=[SHARED_VIDEO],
                        help="video files or folders of .mp4 (default: the shared clips)")
    args = parser.parse_args(argv)
    paths = sorted(p for v in args.videos for p in ([v] if v.is_file() else v.glob("*.mp4")))
    if not paths:
        print(f"error: no videos in {', '.join(map(str, args.videos))}", file=sys.stderr)
        return 2
    print(f"cut threshold CUT_MAX_CORRELATION = {CUT_MAX_CORRELATION}")
    print("| clip | frames | lowest correlations (frame) | under the threshold | lighting jumps, lowest |")
    print("|---|---|---|---|---|")
    for path in paths:
        values, frames, first = correlations(path)
        if first is None or not len(values):
            print(f"| {path.name} | unreadable or flat | | | |")
            continue
        order = np.argsort(values)[:3]
        lowest = ", ".join(f"{values[i]:.2f} ({frames[i]})" for i in order)
        base = frame_signature(first)
        lit = [float(frame_signature(np.clip(first * np.float32(g), 0, 255).astype(np.uint8)) @ base)
               for g in LIGHTING] if base is not None else [float("nan")]
        print(f"| {path.name} | {len(values) + 1} | {lowest} | {int((values < CUT_MAX_CORRELATION).sum())} "
              f"| {min(lit):.3f} |")
    for size in ((512, 512), (1920, 1080)):
        image = np.random.default_rng(0).uniform(0, 255, (*size[::-1], 3)).astype(np.uint8)
        frame_signature(image)
        times = []
        for _ in range(200):
            start = time.perf_counter()
            frame_signature(image)
            times.append(time.perf_counter() - start)
        print(f"frame_signature on a {size[0]}x{size[1]} frame: {1e3 * float(np.median(times)):.3f} ms (median of 200)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
