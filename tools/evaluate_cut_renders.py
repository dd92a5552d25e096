#!/usr/bin/env python3
"""Faces cut by the frame's edge, with truth: how the tracker and its two ratings fare while part of a face is
out of the picture.

ICT render clips (tools/evaluate_renders.py's held-out yaw sweeps and key shapes, 150 frames at 25 fps) whose head
drifts until 35% of the face (of its 68 landmarks' height or width) is beyond one edge of the frame: whole for 30
frames, going out over 25, cut for 35, coming back over 20, whole for the last 40. Clip by clip the edge is the
bottom, the top, the left and the right. Each clip is rendered again without that drift (the same face, motion,
light and sensor noise), and both are tracked by the default pipeline at the true focal length, so every frame of
a cut clip has the same frame uncut to compare with.

    python tools/evaluate_cut_renders.py [--clips 12] [--seed 44000] [--no-write]

Seed 44,000 is this tool's own: no other tool renders from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_renders import (
    CLIP_PLANS,
    pose_error_stats,
    read_jsonl,
    render_held_out_clip,
    rotation_errors,
    set_seeds,
    shape_errors,
    shapes_error_stats,
    track_clips,
)
from render_ict import ICT_PATH, IctModel, load_ict_for_tool
from report import invocation, non_negative_int, positive_int, publish

from tracker.roi import outside_image

SEED = 44_000
SIZE = 512
CUT = 0.35  # of the face's height (bottom, top) or width (left, right) beyond the edge while cut
SIDES = ("bottom", "top", "left", "right")
# The clip's parts: (name, first frame, frames); on the two ramps the share cut grows or falls linearly.
OUT, CUT_PART, BACK = ("going out", 30, 25), ("cut", 55, 35), ("coming back", 90, 20)
PARTS = (("whole, before", 0, 30), OUT, CUT_PART, BACK, ("whole, after", 110, 40))
FRAMES = sum(n for _, _, n in PARTS)


def share_cut(frame: int) -> float:
    """How far into the cut a frame is: 0 whole, 1 with CUT of the face beyond the edge, linear in between."""
    (_, out_start, out_n), (_, cut_start, cut_n), (_, back_start, back_n) = OUT, CUT_PART, BACK
    if frame < out_start or frame >= back_start + back_n:
        return 0.0
    if frame < cut_start:
        return (frame - out_start + 1) / out_n
    if frame < cut_start + cut_n:
        return 1.0
    return 1.0 - (frame - back_start + 1) / back_n


def edge_shift(side: str) -> Callable[[int, np.ndarray, float], np.ndarray]:
    """render_ict.render_clip's ``shift``: the head moved across the frame (cm) until CUT of its landmarks' extent
    lies beyond ``side`` (the edge of the outer pixels' outer half), share_cut(frame) of that move while going
    out or coming back."""
    axis = 1 if side in ("bottom", "top") else 0
    far = side in ("bottom", "right")

    def shift(frame: int, points: np.ndarray, focal: float) -> np.ndarray:
        move = np.zeros(3)
        share = share_cut(frame)
        if share == 0.0:
            return move
        for _ in range(4):  # the face's extent in the picture changes as it moves (perspective): a few steps settle
            moved = points + move
            px = focal * moved[:, axis] / moved[:, 2] + (SIZE - 1) / 2.0
            extent = px.max() - px.min()
            needed = (SIZE - 0.5) - (px.max() - CUT * extent) if far else -0.5 - (px.min() + CUT * extent)
            move[axis] += needed * moved[:, 2].mean() / focal
        return share * move

    return shift


def render_clips(model: IctModel, folder: Path, clips: int, seed: int, cut: bool) -> None:
    """folder/clip_NNN.{mp4,jsonl}: ``clips`` clips from ``seed``, their face drifting beyond an edge and back
    (``cut``), or the same clips without that drift."""
    clip_seeds, _ = set_seeds(seed, clips, 0)
    folder.mkdir(parents=True)
    with tqdm(total=clips * FRAMES, unit="frame", desc="rendering cut clips" if cut else "rendering") as bar:
        for c in range(clips):
            render_held_out_clip(model, np.random.default_rng(clip_seeds[c]), SIZE, FRAMES,
                                 CLIP_PLANS[c % len(CLIP_PLANS)], folder / f"clip_{c:03d}.mp4",
                                 folder / f"clip_{c:03d}.jsonl", bar,
                                 shift=edge_shift(SIDES[c % len(SIDES)]) if cut else None)


def stills_from_cut_clips(clips: Path, out: Path, every: int = 5) -> None:
    """out/NNNNNN.png + truth.jsonl, as tools/evaluate_renders.py reads stills: every ``every``-th frame of the cut
    part of each clip in ``clips`` (render_clips with ``cut``), as a picture on its own."""
    out.mkdir(parents=True)
    _, first, count = CUT_PART
    written = 0
    with open(out / "truth.jsonl", "w", encoding="utf-8") as truth:
        for video in sorted(clips.glob("clip_*.mp4")):
            records = read_jsonl(video.with_suffix(".jsonl"))
            cap = cv2.VideoCapture(str(video))
            for frame in range(first + count):
                ok, image = cap.read()
                if not ok:
                    raise SystemExit(f"error: {video} ends before frame {frame}")
                if frame >= first and (frame - first) % every == 0:
                    name = f"{written:06d}.png"
                    written += 1
                    cv2.imwrite(str(out / name), image)
                    truth.write(json.dumps({"file": name, **records[frame]}, separators=(",", ":")) + "\n")
            cap.release()


def beyond_share(points: np.ndarray) -> np.ndarray:
    """Per row of (n, 68, 2) points, the share beyond the SIZE × SIZE frame, as the tracker tells it."""
    return outside_image(points.reshape(-1, 2), (SIZE, SIZE)).reshape(points.shape[:2]).mean(axis=1)


def part_row(label: str, cut: dict[str, np.ndarray], whole: dict[str, np.ndarray], rows: np.ndarray) -> str:
    """One table row for the frames ``rows`` of both runs (Rows.arrays())."""
    found_cut, found_whole = (np.isfinite(a["est_pose"][rows, 0]) for a in (cut, whole))
    both = rows[found_cut & found_whole]
    in_both = np.zeros(len(cut["group"]), bool)
    in_both[both] = True
    pose_cut, pose_whole = (rotation_errors(a, in_both) for a in (cut, whole))
    shapes = [shape_errors(a, in_both) for a in (cut, whole)]

    def pair(values: list[np.ndarray], digits: int, unit: str = "") -> str:
        a, b = (f"{np.nanmean(v):.{digits}f}{unit}" if len(v) else "–" for v in values)
        return f"{a} ({b})"

    placed = beyond_share(cut["est_landmarks"][both]) if len(both) else np.array([])
    return (f"| {label} | {len(rows)} | {found_cut.mean():.0%} ({found_whole.mean():.0%}) | "
            f"{beyond_share(cut['true_landmarks'][rows]).mean():.0%} | "
            f"{(placed.mean() if len(placed) else np.nan):.0%} | "
            f"{pair([pose_cut, pose_whole], 1, '°')} | "
            f"{pair([cut['est_pose_error'][both], whole['est_pose_error'][both]], 1, '°')} | "
            f"{pair(shapes, 3)} | "
            f"{pair([cut['est_shapes_error'][both], whole['est_shapes_error'][both]], 3)} |")


def report(cut: dict[str, np.ndarray], whole: dict[str, np.ndarray], clips: int, seed: int) -> str:
    frame = np.arange(len(cut["group"])) % FRAMES
    side = np.array([SIDES[int(g) % len(SIDES)] for g in cut["group"]])
    rows = [part_row(f"{name}, frames {first}-{first + n - 1}", cut, whole,
                     np.flatnonzero((frame >= first) & (frame < first + n))) for name, first, n in PARTS]
    _, cut_first, cut_n = CUT_PART
    in_cut = (frame >= cut_first) & (frame < cut_first + cut_n)
    rows += [part_row(f"cut, {s} edge", cut, whole, np.flatnonzero(in_cut & (side == s))) for s in SIDES
             if np.any(side == s)]
    pose, shapes = pose_error_stats(cut), shapes_error_stats(cut)
    return "\n".join([
        (f"{clips} ICT render clips (seed {seed:,}, {SIZE} px, {FRAMES} frames at 25 fps: `tools/evaluate_renders.py`'s "
         f"held-out yaw sweeps and key shapes) whose head drifts until {CUT:.0%} of the face (its landmarks' height "
         "or width) is beyond the frame's edge, bottom, top, left and right clip by clip, and back (clip c takes "
         f"edge c mod {len(SIDES)} and yaw sweep c mod {len(CLIP_PLANS)}, so the bottom and left edges come with "
         "three of the sweeps and the top and right with the other three: compare an edge's cut frames with the "
         "same frames uncut, in brackets, rather than with another edge's); each tracked by "
         "the default pipeline at the true focal length, and so is the same clip rendered without that drift "
         "(figures in brackets). Error of the head's rotation: the angle between the tracked and the true one; "
         "blendshapes: the mean absolute error of the six key weights. Both, and the two ratings beside them, are "
         "means over the frames where both runs found the face."),
        "",
        ("| frames | count | face found | true landmarks beyond the edge | tracked ones placed beyond | rotation "
         "error | its `expected_error_deg` | key blendshapes' error | their `blendshapes_error` |"),
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        (f"Over every frame of the cut clips with a rated face, Spearman ρ of the rating with the true error: "
         f"pose {pose['rho']:.3f} ({pose['frames']} frames), blendshapes {shapes['rho']:.3f} ({shapes['frames']} "
         "frames)."),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=positive_int, default=12, help="clips (each rendered cut and whole)")
    parser.add_argument("--seed", type=non_negative_int, default=SEED, help="render seed (default: this tool's own)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--model", type=Path, default=ICT_PATH, help="ict_face.npz")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if (model := load_ict_for_tool(args.model)) is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="cut_renders_") as tmp:
        folder = Path(tmp)
        for kind in ("cut", "whole"):
            render_clips(model, folder / kind, args.clips, args.seed, cut=kind == "cut")
        cut, whole = (track_clips(folder / kind, model, args.backend)[0].arrays() for kind in ("cut", "whole"))
    body = report(cut, whole, args.clips, args.seed)
    publish("cut-renders", body + f"\n\nCommand: `{invocation()}`", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
