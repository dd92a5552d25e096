#!/usr/bin/env python3
"""Blendshapes on a real clip: a plot of jawOpen and eyeBlinkLeft/Right over time, and evidence that they move.

Runs the tracker over the clip in tracking mode and draws (OpenCV only) the three
weights over time, above the openings measured directly from the 68 landmarks:
inner-lip gap (62-66) and each eye's lid gap (mean of 37-41, 38-40 / 43-47, 44-46),
all divided by the outer-eye-corner distance (36-45). Prints, and writes to
BENCHMARKS.md (section "blendshapes-real") unless --no-write:

- std, mean and range of each weight;
- blink events: eyeBlink rising above --threshold (and falling below 60% of it
  before the next one counts), per eye; and dips of the landmark eye opening below
  70% of its median, as a landmark-only count to compare with;
- Pearson r of jawOpen with the landmark mouth opening, and of eyeBlinkLeft/Right
  with minus each eye's landmark opening (the subject's left eye is 42-47).

The landmark openings are what the 3D fit sees, so high r shows the fit follows the
landmarks (not that the landmarks are right: tools/evaluate_renders.py scores that).

    python tools/plot_blendshapes.py
    python tools/plot_blendshapes.py --clip ../shared/data/video/talking_d3.mp4 --no-write
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from report import file_to_write, update_section

from tracker.backends import BACKENDS
from tracker.pipeline import FaceTracker, TrackerConfig

SHARED_VIDEO = REPO.parent / "shared" / "data" / "video"
DEFAULT_CLIP = SHARED_VIDEO / "talking_d10.mp4"
SERIES = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight")
# BGR; matplotlib's tab10 blue, orange, green, so the plot reads like a familiar one.
COLOURS = {"jawOpen": (180, 119, 31), "eyeBlinkLeft": (14, 127, 255), "eyeBlinkRight": (44, 160, 44)}
LANDMARK_LABELS = {"jawOpen": "mouth opening 62-66", "eyeBlinkLeft": "left eye opening (42-47)",
                   "eyeBlinkRight": "right eye opening (36-41)"}
EYE_DIP = 0.7  # a landmark blink: lid gap below 70% of the clip's median gap


@dataclass
class Track:
    time_s: np.ndarray  # (n,)
    weights: dict[str, np.ndarray]  # name -> (n,), NaN where no face
    openings: np.ndarray  # (n, 3): mouth, subject's left eye, subject's right eye; / inter-ocular; NaN: no face
    fps: float
    size: tuple[int, int]


def landmark_openings(lm: np.ndarray) -> np.ndarray:
    """Mouth (62-66), subject's left eye (42-47) and right eye (36-41) gaps over the 36-45 distance."""
    iod = max(float(np.linalg.norm(lm[45] - lm[36])), 1e-6)

    def eye(a: int) -> float:  # lids of the 6-point eye starting at a: (a+1, a+5) and (a+2, a+4)
        return 0.5 * float(np.linalg.norm(lm[a + 1] - lm[a + 5]) + np.linalg.norm(lm[a + 2] - lm[a + 4]))

    return np.array([float(np.linalg.norm(lm[62] - lm[66])), eye(42), eye(36)]) / iod


def track_clip(clip: Path, backend: str) -> Track:
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open {clip}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    tracker = FaceTracker(TrackerConfig(backend=backend, max_faces=1))
    weights: dict[str, list[float]] = {k: [] for k in SERIES}
    openings: list[np.ndarray] = []
    with tqdm(total=total, unit="frame", desc=f"tracking {clip.name}") as bar:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            i = len(openings)
            faces = tracker.process(image, i, i / fps, clip.name).faces
            face = faces[0] if faces else None
            for k in SERIES:
                value = face.blendshapes.get(k) if face is not None and face.blendshapes else None
                weights[k].append(np.nan if value is None else float(value))
            openings.append(landmark_openings(face.landmarks) if face is not None else np.full(3, np.nan))
            bar.update(1)
    cap.release()
    if not openings:
        raise SystemExit(f"error: no frames could be read from {clip}")
    n = len(openings)
    return Track(np.arange(n) / fps, {k: np.array(v) for k, v in weights.items()}, np.array(openings), fps, size)


def events(x: np.ndarray, high: float, low: float) -> int:
    """Rising crossings of ``high``; the next one counts only after the signal fell below ``low``."""
    count, armed = 0, True
    for v in x:
        if not np.isfinite(v):
            continue
        if armed and v > high:
            count, armed = count + 1, False
        elif not armed and v < low:
            armed = True
    return count


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def evidence(track: Track, threshold: float) -> dict:
    w, op = track.weights, track.openings
    found = np.isfinite(op[:, 0])
    out: dict = {"frames": len(found), "found": int(found.sum()), "series": {}}
    for k in SERIES:
        x = w[k][np.isfinite(w[k])]
        # Frame-to-frame change: large next to std means jitter rather than motion.
        out["series"][k] = {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
                            "max": float(x.max()), "step": float(np.nanmean(np.abs(np.diff(w[k]))))}
    for k, col in (("eyeBlinkLeft", 1), ("eyeBlinkRight", 2)):
        med = float(np.nanmedian(op[:, col]))
        s = out["series"][k]
        s["blinks"] = events(w[k], threshold, 0.6 * threshold)
        s["landmark_blinks"] = events(-op[:, col], -EYE_DIP * med, -0.85 * med)
        s["r_landmarks"] = pearson(w[k], -op[:, col])  # own eye
        s["r_other_eye"] = pearson(w[k], -op[:, 3 - col])  # the other eye: should not be higher
    out["series"]["jawOpen"]["r_landmarks"] = pearson(w["jawOpen"], op[:, 0])
    return out


# --------------------------------------------------------------------------------------------
# Drawing (cv2 only)
# --------------------------------------------------------------------------------------------

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK, GRID, AXIS_GREY = (40, 40, 40), (228, 228, 228), (150, 150, 150)


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.55, colour=INK, thick: int = 1,
          anchor: str = "left") -> None:
    (tw, th), _ = cv2.getTextSize(s, FONT, scale, thick)
    x, y = org
    if anchor == "centre":
        x -= tw // 2
    elif anchor == "right":
        x -= tw
    cv2.putText(img, s, (x, y + th // 2), FONT, scale, colour, thick, cv2.LINE_AA)


def _vertical_text(img: np.ndarray, s: str, centre: tuple[int, int], scale: float = 0.6) -> None:
    """Text turned 90° anticlockwise (cv2 cannot rotate text): draw on a strip, rotate, paste."""
    (tw, th), base = cv2.getTextSize(s, FONT, scale, 1)
    strip = np.full((th + base + 6, tw + 6, 3), 255, np.uint8)
    cv2.putText(strip, s, (3, th + 3), FONT, scale, INK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    h, w = strip.shape[:2]
    y0, x0 = centre[1] - h // 2, centre[0] - w // 2
    img[y0:y0 + h, x0:x0 + w] = np.minimum(img[y0:y0 + h, x0:x0 + w], strip)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def _polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour, thick: int, dashed: bool = False) -> None:
    """Draw runs of finite points (gaps where no face was found); dashed draws every other 8 px piece."""
    ok = np.isfinite(ys)
    pts = np.column_stack([xs, ys])
    start = None
    for i in range(len(ok) + 1):
        if i < len(ok) and ok[i]:
            start = i if start is None else start
            continue
        if start is not None and i - start >= 2:
            run = np.round(pts[start:i] * 16).astype(np.int32)  # 4 fractional bits: smooth anti-aliased lines
            if dashed:
                seg = np.cumsum(np.r_[0, np.linalg.norm(np.diff(pts[start:i], axis=0), axis=1)])
                on = (seg // 8).astype(int) % 2 == 0
                for j in range(len(run) - 1):
                    if on[j]:
                        cv2.line(img, tuple(run[j]), tuple(run[j + 1]), colour, thick, cv2.LINE_AA, shift=4)
            else:
                cv2.polylines(img, [run], False, colour, thick, cv2.LINE_AA, shift=4)
        start = None


def _panel(img: np.ndarray, box: tuple[int, int, int, int], t: np.ndarray, series: dict[str, np.ndarray],
           y_max: float, y_label: str, x_label: str | None, styles: dict[str, tuple], legend: list[str],
           hline: tuple[float, str] | None = None) -> None:
    x0, y0, x1, y1 = box
    t_max = float(t[-1]) if len(t) > 1 else 1.0

    def px(tt: np.ndarray) -> np.ndarray:
        return x0 + (x1 - x0) * np.asarray(tt) / t_max

    def py(v: np.ndarray) -> np.ndarray:
        return y1 - (y1 - y0) * np.asarray(v) / y_max

    y_step = _nice_step(y_max, 5)
    for v in np.arange(0.0, y_max + 1e-9, y_step):
        yy = round(float(py(v)))
        cv2.line(img, (x0, yy), (x1, yy), GRID, 1)
        cv2.line(img, (x0 - 6, yy), (x0, yy), INK, 1)
        _text(img, f"{v:.2f}".rstrip("0").rstrip(".") if v else "0", (x0 - 10, yy), 0.5, anchor="right")
    t_step = _nice_step(t_max, 12)
    for v in np.arange(0.0, t_max + 1e-9, t_step):
        xx = round(float(px(v)))
        cv2.line(img, (xx, y0), (xx, y1), GRID, 1)
        cv2.line(img, (xx, y1), (xx, y1 + 6), INK, 1)
        _text(img, f"{v:g}", (xx, y1 + 20), 0.5, anchor="centre")
    if hline is not None:
        yy = py(hline[0])
        _polyline(img, np.array([x0, x1], float), np.array([yy, yy]), AXIS_GREY, 1, dashed=True)
    for name, values in series.items():
        colour, thick, dashed = styles[name]
        _polyline(img, px(t), py(np.clip(values, 0.0, y_max)), colour, thick, dashed)
    if hline is not None:
        # The line goes under the series, its label over them (on white) so it stays readable.
        yy = py(hline[0])
        (tw, th), _ = cv2.getTextSize(hline[1], FONT, 0.45, 1)
        cv2.rectangle(img, (x1 - tw - 10, int(yy) - th - 10), (x1 - 2, int(yy) - 3), (255, 255, 255), -1)
        _text(img, hline[1], (x1 - 6, int(yy) - 6 - th // 2), 0.45, AXIS_GREY, anchor="right")
    cv2.rectangle(img, (x0, y0), (x1, y1), INK, 1)
    _vertical_text(img, y_label, (x0 - 62, (y0 + y1) // 2))
    if x_label:
        _text(img, x_label, ((x0 + x1) // 2, y1 + 48), 0.6, anchor="centre")
    # Legend: one row just above the panel, outside the data, so it hides nothing.
    lx, ly = x0, y0 - 16
    for name, label in zip(series, legend, strict=True):
        colour, thick, dashed = styles[name]
        _polyline(img, np.array([lx, lx + 36], float), np.array([ly, ly], float), colour, thick + 1, dashed)
        _text(img, label, (lx + 44, ly), 0.5)
        lx += 44 + cv2.getTextSize(label, FONT, 0.5, 1)[0][0] + 36


def draw(track: Track, clip: Path, threshold: float, backend: str) -> np.ndarray:
    w, h = 1600, 900
    img = np.full((h, w, 3), 255, np.uint8)
    _text(img, f"ARKit blendshapes tracked on {clip.name} ({len(track.time_s)} frames, "
          f"{track.fps:g} fps, {track.size[0]}x{track.size[1]}; backend {backend})", (w // 2, 24), 0.75,
          thick=2, anchor="centre")
    styles = {k: (COLOURS[k], 2, False) for k in SERIES}
    _panel(img, (100, 80, w - 30, 530), track.time_s, track.weights, 1.0, "blendshape weight", None, styles,
           list(SERIES), hline=(threshold, f"blink threshold {threshold:g}"))
    op = track.openings
    # Lid gaps are small (~0.07 of the eye distance): x3 so they share the axis with the mouth.
    lm_series = {"jawOpen": op[:, 0], "eyeBlinkLeft": 3 * op[:, 1], "eyeBlinkRight": 3 * op[:, 2]}
    lm_max = float(np.nanmax(list(lm_series.values()))) if np.isfinite(op).any() else 1.0
    lm_styles = {k: (COLOURS[k], 1, False) for k in SERIES}
    legend = ["mouth opening (62-66) / IOD", "3 x left eye lid gap (42-47) / IOD",
              "3 x right eye lid gap (36-41) / IOD"]
    _panel(img, (100, 620, w - 30, 830), track.time_s, lm_series, _nice_step(lm_max, 4) * np.ceil(
        lm_max / _nice_step(lm_max, 4)), "from landmarks", "time (s)", lm_styles, legend)
    return img


# --------------------------------------------------------------------------------------------


def report_body(ev: dict, clip: Path, out: Path, threshold: float, command: str) -> str:
    s = ev["series"]
    rows = [(f"| weight | mean | std | mean \\|Δ\\| per frame | min - max | blink events (> {threshold:g}) "
             "| landmark blinks | r with landmarks |"), "|---|---|---|---|---|---|---|---|"]
    for k in SERIES:
        v = s[k]
        blinks = f"{v['blinks']} | {v['landmark_blinks']}" if "blinks" in v else "– | –"
        r = (f"{v['r_landmarks']:.2f} (other eye {v['r_other_eye']:.2f})" if "r_other_eye" in v
             else f"{v['r_landmarks']:.2f}")
        rows.append(f"| {k} | {v['mean']:.3f} | {v['std']:.3f} | {v['step']:.3f} | {v['min']:.2f} - {v['max']:.2f} "
                    f"| {blinks} | {r} |")
    try:
        link = out.resolve().relative_to(REPO)
    except ValueError:
        link = out
    return "\n".join([
        (f"Clip `{clip.name}`, {ev['frames']} frames, face in {ev['found']}; tracking mode, 3D fit on, no "
         "smoothing of the weights beyond the tracker's own."),
        "",
        f"![jawOpen and eyeBlink over time]({link})",
        "",
        *rows,
        "",
        ("Blink events: rising crossings of the threshold (re-armed below 60% of it). Landmark blinks: the "
         f"eye's lid gap (68 points) below {EYE_DIP:.0%} of its median. r with landmarks: Pearson r of jawOpen with "
         "the inner-lip gap 62-66 / inter-ocular (36-45), and of eyeBlinkLeft/Right with minus the lid gap of "
         "the subject's own left (42-47) / right (36-41) eye; the 3D fit sees these landmarks, so this shows the "
         "weights follow them, not that they are right (see the renders section for accuracy)."),
        "",
        f"Command: `{command}`",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video file")
    parser.add_argument("--out", type=file_to_write, help="PNG (default: docs/blendshapes_<clip name>.png)")
    parser.add_argument("--threshold", type=float, default=0.5, help="eyeBlink level that counts as a blink")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone (the plot is still written to --out)")
    args = parser.parse_args(argv)
    if not args.clip.is_file():
        hint = " (the shared data is expected in ../shared beside the repository)" if args.clip == DEFAULT_CLIP else ""
        print(f"error: clip {args.clip} not found{hint}", file=sys.stderr)
        return 2
    out = args.out or REPO / "docs" / f"blendshapes_{args.clip.stem}.png"
    track = track_clip(args.clip, args.backend)
    if not np.isfinite(track.openings).any():
        print(f"error: no face found in {args.clip}", file=sys.stderr)
        return 1
    ev = evidence(track, args.threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), draw(track, args.clip, args.threshold, args.backend),
                       [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        print(f"error: cannot write {out}", file=sys.stderr)
        return 1
    command = "python tools/plot_blendshapes.py" + ("" if args.clip == DEFAULT_CLIP else f" --clip {args.clip}") + (
        "" if args.out is None else f" --out {args.out}") + ("" if args.threshold == 0.5 else
                                                              f" --threshold {args.threshold:g}")
    body = report_body(ev, args.clip, out, args.threshold, command)
    print(body)
    print(f"\nwrote {out}")
    if not args.no_write:
        update_section("blendshapes-real", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
