#!/usr/bin/env python3
"""Capture-to-send latency: a video played as a live source, tracked, sent over VMC.

The clip is played at its own frame rate by the live reader (a thread that keeps
only the newest frame, as for a camera), every frame the tracker takes is tracked
with the default pipeline and sent with the real VMC sender to a loopback port
that a local socket drains. Latency per frame = time after the send returns minus
the frame's grab time. Reports median and p95 latency, processing time, dropped
frames, and whether latency grows (last third vs first third of the run): a
growing queue would show there. Results go to BENCHMARKS.md (section "latency").

    python tools/latency.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import SHARED_DATA
from report import update_section

from tracker.avatar import VmcSender
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.sources import open_source

DEFAULT_CLIP = SHARED_DATA / "video" / "talking_d10.mp4"


def drain(sock: socket.socket, stop: threading.Event) -> None:
    """Receive and discard the datagrams, so sends never meet a closed port."""
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            sock.recv(65536)
        except OSError:
            continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--seconds", type=float, default=20.0, help="stop after this long")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.clip.is_file():
        print(f"error: clip {args.clip} not found", file=sys.stderr)
        return 2
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=drain, args=(receiver, stop), daemon=True)
    thread.start()
    sender = VmcSender("127.0.0.1", receiver.getsockname()[1])
    # Warm up (model loading, JIT) before the clock starts, as a live app does at start-up.
    warm = open_source(str(args.clip))
    for frame in warm:
        tracker.process(frame.image, frame.index, frame.time_s, frame.source)
        break
    warm.close()
    tracker.reset()
    latencies, processing = [], []
    source = open_source(str(args.clip), live=True)
    started = time.perf_counter()
    try:
        for frame in source:
            t0 = time.perf_counter()
            result = tracker.process(frame.image, frame.index, frame.time_s, frame.source)
            sender.send(result)
            done = time.perf_counter()
            latencies.append(1000.0 * (done - frame.grabbed_at))
            processing.append(1000.0 * (done - t0))
            if done - started > args.seconds:
                break
    finally:
        source.close()
        sender.close()
        stop.set()
        thread.join()
        receiver.close()
    lat, proc = np.array(latencies), np.array(processing)
    third = max(1, len(lat) // 3)
    period = 1000.0 / (source.fps or 30.0)
    median, p95 = float(np.median(lat)), float(np.percentile(lat, 95))
    body = "\n".join([
        (f"`{args.clip.name}` played as a live source at its own {source.fps or 30:.0f} fps (newest-frame reader "
         "thread), default pipeline (3D fit, mirror check, smoothing), each result sent over VMC to a loopback "
         "receiver. Latency = send returned − frame grabbed."),
        "",
        ("| frames tracked | dropped by the reader | latency median ms | latency p95 ms | processing median ms | "
        "frame period ms | latency first third / last third (median ms) |"),
        "|---|---|---|---|---|---|---|",
        (f"| {len(lat)} | {source.dropped} | {median:.1f} | {p95:.1f} | {np.median(proc):.1f} | {period:.1f} | "
         f"{np.median(lat[:third]):.1f} / {np.median(lat[-third:]):.1f} |"),
        "",
        (f"Target: median ≤ one frame period + processing time = {period + np.median(proc):.1f} ms: "
         f"**{'met' if median <= period + np.median(proc) else 'missed'}**; no growing queue: latency in the last "
         f"third is {np.median(lat[-third:]) - np.median(lat[:third]):+.1f} ms from the first third."),
        "",
        "Command: `python tools/latency.py`",
    ])
    print(body)
    if not args.no_write:
        update_section("latency", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
