#!/usr/bin/env python3
"""Capture-to-send latency: a video played as a live source, tracked, sent over VMC.

A clip is played at its own frame rate by the live reader (a thread that keeps
only the newest frame, as for a camera), every frame the tracker takes is tracked
with the default pipeline and sent with the real VMC sender to a loopback port
that a local socket drains. Latency per frame = time after the send returns minus
the frame's grab time. Each clip is played twice, tracked frame by frame
(FaceTracker.process) and pipelined as run_tracker.py tracks it (process_stream:
the next frame read and meshed while this one is described). Reports median and
p95 latency, frames tracked and dropped by the reader, processing time (frame by
frame), and whether latency grows (last third vs first third of the run): a
growing queue would show there. The default clips: a talking head (one face), and
four talking heads tiled 2×2 as in a video call (made from four shared clips into
a temporary file; max four faces), where frame by frame falls below the clip's
rate. Results go to BENCHMARKS.md (section "latency").

    python tools/latency.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import SHARED_DATA
from report import invocation, positive_float, positive_int, publish

from tracker.avatar import VmcSender
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.sources import open_source

ONE_FACE = SHARED_DATA / "video" / "talking_d10.mp4"
GRID_CLIPS = [SHARED_DATA / "video" / f"talking_{name}.mp4" for name in ("d10", "d14", "d3", "d9")]  # all 30 fps
GRID_TILE = 480


def make_grid(clips: list[Path], out: Path) -> Path:
    """Four clips tiled 2×2 (each GRID_TILE px square), as long as the shortest, at the first one's rate."""
    caps = [cv2.VideoCapture(str(clip)) for clip in clips]
    fps = caps[0].get(cv2.CAP_PROP_FPS) or 30.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (2 * GRID_TILE, 2 * GRID_TILE))
    try:
        while True:
            tiles = []
            for cap in caps:
                ok, image = cap.read()
                if not ok:
                    return out
                tiles.append(cv2.resize(image, (GRID_TILE, GRID_TILE), interpolation=cv2.INTER_AREA))
            writer.write(np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]))
    finally:
        writer.release()
        for cap in caps:
            cap.release()


def drain(sock: socket.socket, stop: threading.Event) -> None:
    """Receive and discard the datagrams, so sends never meet a closed port."""
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            sock.recv(65536)
        except OSError:
            continue


def play(tracker: FaceTracker, clip: Path, sender: VmcSender, seconds: float, pipelined: bool) -> dict:
    """Track `clip` played live for up to `seconds`; the run's latencies (ms) and counts."""
    tracker.reset()
    source = open_source(str(clip), live=True)
    read: deque = deque()

    def inputs():
        for frame in source:
            read.append(frame)
            yield frame.image, frame.index, frame.time_s, frame.source

    results = (tracker.process_stream(inputs()) if pipelined
               else (tracker.process(*item) for item in inputs()))
    latencies, processing = [], []
    started = t0 = time.perf_counter()
    try:
        for result in results:
            sender.send(result)
            done = time.perf_counter()
            frame = read.popleft()
            latencies.append(1000.0 * (done - frame.grabbed_at))
            processing.append(1000.0 * (done - max(t0, frame.grabbed_at)))  # frame by frame: this frame's work
            t0 = done
            if done - started > seconds:
                break
    finally:
        source.close()
        results.close()
    return {"latency": np.array(latencies), "processing": np.array(processing), "dropped": source.dropped,
            "period": 1000.0 / (source.fps or 30.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, help="one clip instead of the default two")
    parser.add_argument("--max-faces", type=positive_int, default=1, help="with --clip")
    parser.add_argument("--seconds", type=positive_float, default=20.0, help="stop each run after this long")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    for clip in [args.clip] if args.clip else [ONE_FACE, *GRID_CLIPS]:
        if not clip.is_file():
            print(f"error: clip {clip} not found", file=sys.stderr)
            return 2
    scratch = tempfile.TemporaryDirectory(prefix="latency-")
    clips = ([(args.clip, args.max_faces)] if args.clip
             else [(ONE_FACE, 1), (make_grid(GRID_CLIPS, Path(scratch.name) / "four_talking_heads.mp4"), 4)])
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=drain, args=(receiver, stop), daemon=True)
    thread.start()
    sender = VmcSender("127.0.0.1", receiver.getsockname()[1])
    rows = []
    try:
        for clip, max_faces in clips:
            tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=max_faces))
            # Warm up (model loading, JIT) before the clock starts, as a live app does at start-up.
            with open_source(str(clip)) as warm:
                for frame in warm:
                    tracker.process(frame.image, frame.index, frame.time_s, frame.source)
                    break
            for pipelined in (False, True):
                run = play(tracker, clip, sender, args.seconds, pipelined)
                rows.append((clip, max_faces, pipelined, run))
                print(f"{clip.name} {'pipelined' if pipelined else 'frame by frame'}: "
                      f"median {np.median(run['latency']):.1f} ms, {len(run['latency'])} tracked, "
                      f"{run['dropped']} dropped", file=sys.stderr)
    finally:
        sender.close()
        stop.set()
        thread.join()
        receiver.close()
        scratch.cleanup()
    lines = [
        ("Each clip played as a live source at its own frame rate (newest-frame reader thread), default pipeline "
         "(3D fit, mirror check, smoothing; the four faces of the 2×2 grid are talking_d10, d14, d3 and d9 at 480 "
         "px each), each result sent over VMC to a loopback receiver. Latency = send "
         f"returned − frame grabbed; each run {args.seconds:.0f} s. Pipelined is how `run_tracker.py` tracks "
         "every source (the next frame read and meshed while this one is described); frame by frame is "
         "`FaceTracker.process`. Processing = the time a frame took from when it was grabbed, or the previous "
         "result sent if later: per frame's work frame by frame, the interval between results pipelined."),
        "",
        ("| clip (max faces) | tracked | frames tracked | dropped by the reader | latency median ms | latency p95 ms "
         "| processing median ms | frame period ms | latency first third / last third (median ms) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for clip, max_faces, pipelined, run in rows:
        lat, proc, period = run["latency"], run["processing"], run["period"]
        third = max(1, len(lat) // 3)
        median = float(np.median(lat))
        lines.append(
            f"| {clip.stem} ({max_faces}) | {'pipelined' if pipelined else 'frame by frame'} | {len(lat)} | "
            f"{run['dropped']} | {median:.1f} | {np.percentile(lat, 95):.1f} | {np.median(proc):.1f} | "
            f"{period:.1f} | {np.median(lat[:third]):.1f} / {np.median(lat[-third:]):.1f} |")
        if pipelined:
            # The allowance is the same clip's frame-by-frame processing time: pipelining must not add latency.
            allowed = period + float(np.median(next(r["processing"] for c, _, p, r in rows if c == clip and not p)))
            growth = np.median(lat[-third:]) - np.median(lat[:third])
            verdicts.append(f"{clip.stem}: pipelined median {median:.1f} ms against {allowed:.1f} allowed (frame "
                            f"period + frame-by-frame processing): **{'met' if median <= allowed else 'missed'}**; "
                            f"last third {growth:+.1f} ms from the first.")
    body = "\n".join([*lines, "", "Target: median ≤ one frame period + processing time, no growing queue. "
                      + " ".join(verdicts), "", f"Command: `{invocation()}`"])
    publish("latency", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
