#!/usr/bin/env python3
"""Speed of our pipeline against MediaPipe's own FaceMesh, same frames, same run.

Both trackers run in tracking mode (one face, landmarks only) over every frame
of the clip, decoded once beforehand so decoding is not timed. The order of the
two alternates between repeats and the medians over repeats are reported,
because these machines are shared and noisy. Start-up time (a fresh process
importing, loading the models and tracking the first frame) and peak memory (a
fresh process tracking the whole clip) are measured in subprocesses.
Results go to BENCHMARKS.md (section "speed") unless --no-write.

    python tools/bench.py
    python tools/bench.py --clip ../shared/data/video/talking_d3.mp4 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import SHARED_DATA
from report import import_mediapipe, positive_int, publish

DEFAULT_CLIP = SHARED_DATA / "video" / "talking_d10.mp4"

# Run in a fresh interpreter: imports, model loading and the first frame, then the whole clip.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import cv2
cap = cv2.VideoCapture(sys.argv[2])
ok, frame = cap.read()
if sys.argv[1] == "ours":
    from tracker.pipeline import FaceTracker, TrackerConfig
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))
    step = lambda img: tracker.process(img)
else:
    import mediapipe as mp
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    step = lambda img: mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
step(frame)
startup = time.perf_counter() - t0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    step(frame)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"startup_s": startup, "peak_rss_mb": hwm_kb / 1024}))
"""


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"error: no frames could be read from {path}")
    return frames


def make_ours(full: bool, mirror: bool = True):
    """Ours with the same work as MediaPipe's FaceMesh (mesh, 68 landmarks, smoothing), or the full default
    (without its mirror check when ``mirror`` is False: what `--no-mirror` saves)."""
    from tracker.pipeline import FaceTracker, TrackerConfig

    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1, fit_3d=full, mirror_check=full and mirror,
                                        refiner=full))

    def step(image):
        return len(tracker.process(image).faces)

    return step


def make_ours_stream():
    """Ours, the full default, pipelined as the command line tracks files (FaceTracker.process_stream): a
    whole clip per call, timed as a whole."""
    from tracker.pipeline import FaceTracker, TrackerConfig

    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))

    def run(frames: list[np.ndarray]) -> int:
        return sum(len(r.faces) > 0 for r in tracker.process_stream((f, i, i / 30.0) for i, f in enumerate(frames)))

    return run


def make_mediapipe():
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)

    def step(image):
        res = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return len(res.multi_face_landmarks or [])

    return step


def time_run(make, frames: list[np.ndarray]) -> tuple[float, float, int]:
    """Mean and median ms/frame over one pass of the clip with a fresh tracker, and frames with a face.
    A pipelined tracker has no time per frame: its mean is the clip's time over its frames, its median NaN."""
    if make is make_ours_stream:
        run = make()
        run(frames[:1])  # warm-up outside the timing, as below
        t = time.perf_counter()
        found = run(frames)
        return 1000 * (time.perf_counter() - t) / len(frames), float("nan"), found
    step = make()
    step(frames[0])  # warm-up outside the timing (first inference allocates)
    times, found = [], 0
    for frame in frames:
        t = time.perf_counter()
        found += step(frame) > 0
        times.append(time.perf_counter() - t)
    return 1000 * float(np.mean(times)), 1000 * float(np.median(times)), found


def child_stats(which: str, clip: Path) -> dict:
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(clip)], capture_output=True, text=True, cwd=repo,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if not args.clip.is_file():
        print(f"error: clip {args.clip} not found", file=sys.stderr)
        return 2
    import_mediapipe()  # the peer, timed after ours: a missing one must not waste that time
    frames = read_frames(args.clip)
    h, w = frames[0].shape[:2]
    print(f"{args.clip.name}: {len(frames)} frames {w}x{h}, {args.repeats} repeats")
    makers = {"ours": lambda: make_ours(False), "mediapipe": make_mediapipe, "ours_full": lambda: make_ours(True),
              "ours_no_mirror": lambda: make_ours(True, mirror=False), "ours_stream": make_ours_stream}
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in makers}
    for r in range(args.repeats):
        order = tuple(makers) if r % 2 == 0 else tuple(reversed(makers))
        for name in order:
            runs[name].append(time_run(makers[name], frames))
            mean, median, found = runs[name][-1]
            print(f"  repeat {r + 1} {name:14s}: mean {mean:.2f} ms/frame, median {median:.2f}, face in {found}")
    # Start-up and memory of the default pipeline (the child runs `ours` with the default config).
    stats = {"ours_full": child_stats("ours", args.clip), "mediapipe": child_stats("mediapipe", args.clip)}

    def med(name: str, k: int) -> float:
        return float(np.median([run[k] for run in runs[name]]))

    ratio = med("ours", 0) / med("mediapipe", 0)
    ratio_full = med("ours_full", 0) / med("mediapipe", 0)
    ratio_stream = med("ours_stream", 0) / med("mediapipe", 0)
    rows = [
        "| tracker | mean ms/frame | median ms/frame | frames with a face | start-up s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    labels = (("ours", "ours, landmarks only (`--refiner none --no-fit --no-mirror`: the same work as FaceMesh)"),
              ("mediapipe", "MediaPipe FaceMesh 0.10.21 (`refine_landmarks=True`: the same network as ours)"),
              ("ours_full", "ours, default (+ refiner, + mirror check, + 3D fit)"),
              ("ours_no_mirror", "ours, default without the mirror check (`--no-mirror`)"),
              ("ours_stream", "ours, default, pipelined as `run_tracker.py` tracks a file (`process_stream`)"))
    for name, label in labels:
        startup = f"{stats[name]['startup_s']:.2f}" if name in stats else "—"
        memory = f"{stats[name]['peak_rss_mb']:.0f}" if name in stats else "—"
        median = "—" if np.isnan(med(name, 1)) else f"{med(name, 1):.2f}"
        rows.append(f"| {label} | {med(name, 0):.2f} | {median} | {runs[name][0][2]}/{len(frames)} | "
                    f"{startup} | {memory} |")
    command = "python tools/bench.py" + ("" if args.clip == DEFAULT_CLIP else f" --clip {args.clip}")
    body = "\n".join([
        (f"Clip `{args.clip.name}` ({len(frames)} frames, {w}×{h}), one face, tracking mode, decoding not timed; "
         f"medians over {args.repeats} alternating repeats."),
        "",
        *rows,
        "",
        (f"**Time ratio ours / MediaPipe, same work: {ratio:.2f}×** (target ≤ 1.2×); "
        f"full default pipeline: {ratio_full:.2f}× frame by frame, {ratio_stream:.2f}× pipelined."),
        "",
        ("Start-up: a fresh process from interpreter start to the first frame tracked (imports and model loading "
         "included). Peak RSS: that process after tracking the whole clip. Pipelined: the next frame's mesh "
         "stage runs on a second thread while this frame is described (refiner, 3D fit, gaze, smoothing); the "
         "results are the same; live sources are tracked pipelined too (their latency: the latency section)."),
        "",
        f"Command: `{command} --repeats {args.repeats}`",
    ])
    publish("speed", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
