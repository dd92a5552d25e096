"""What the ratings' calibrations share (tools/calibrate_pose_error.py, tools/calibrate_blendshape_error.py).

Each renders ICT stills and clips from a seed of its own, and clips whose face drifts until part of it is beyond the
frame's edge (tools/evaluate_cut_renders.py) with stills taken from their cut frames, from that seed + CUT_SEED_OFFSET;
tracks them with the real tracker without the rating it calibrates, pairs each rated face's signal with its true
error, fits two monotone maps (stills, tracked video frames), and scores them on held-out renders from another
seed: the Spearman ρ of the expected error with the true error, and both by quarter of the expected.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from calibrate_confidence import isotonic
from evaluate_cut_renders import FRAMES as CUT_FRAMES
from evaluate_cut_renders import render_clips, stills_from_cut_clips
from evaluate_renders import render_set, track_clips, track_stills
from render_ict import IctModel
from report import file_to_write, non_negative_int, positive_int
from scipy.stats import spearmanr

KNOTS = 12
SIZE = 512
FRAMES = 120
BACKEND = "onnxruntime"  # as tools/evaluate_renders.py's default
KINDS = (("still", "stills", False), ("tracked", "clip frames", True))  # key, label, tracked
CUT_SEED_OFFSET = 500  # the cut clips' seed: the set's own plus this


def parse_arguments(description: str, default_out: Path, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stills", type=positive_int, default=400, help="calibration stills")
    parser.add_argument("--clips", type=positive_int, default=12, help=f"calibration clips, {FRAMES} frames each")
    parser.add_argument("--held-out-stills", type=positive_int, default=400, help="held-out stills")
    parser.add_argument("--held-out-clips", type=positive_int, default=8, help=f"held-out clips, {FRAMES} frames each")
    parser.add_argument("--cut-clips", type=non_negative_int, default=8,
                        help=f"calibration clips whose face goes partly beyond the frame's edge, {CUT_FRAMES} frames "
                             "each, and stills from their cut frames")
    parser.add_argument("--held-out-cut-clips", type=non_negative_int, default=4, help="held-out ones")
    parser.add_argument("--out", type=file_to_write, default=default_out,
                        help=f"the calibration file to write (default: the tracker's, engines/{default_out.name})")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md and the calibration file alone")
    args = parser.parse_args(argv)
    if args.stills < 2 * KNOTS:
        parser.error(f"--stills must be at least {2 * KNOTS} (two per knot of a map)")
    if args.held_out_stills < 4:
        parser.error("--held-out-stills must be at least 4 (the held-out table reads them by quarter)")
    return args


def fit_map(signal: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot table: an isotonic fit of the error on the signal."""
    return isotonic(signal, error, KNOTS)


def track_renders(model: IctModel, seed: int, stills: int, clips: int, cut_clips: int,
                  pairs: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]],
                  **unrated: bool) -> dict[str, np.ndarray]:
    """Signals and true errors of the rated faces in ``stills`` stills and ``clips`` clips rendered from ``seed``,
    and in ``cut_clips`` clips cut by the frame's edge from ``seed`` + CUT_SEED_OFFSET with stills from their cut frames
    (``pairs`` reads them from a set's tools/evaluate_renders.py Rows.arrays()); which of them are from the cut
    renders, and how many frames each set has. Tracked by that tool's loops (smoothing on in the clips, as users
    get them); ``unrated``: the TrackerConfig flag that leaves out the rating being calibrated (pose_error=False,
    say)."""
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="rating_") as tmp:
        folder = Path(tmp)
        render_set(model, folder, clips, FRAMES, stills, SIZE, seed)
        sets = {"still": [track_stills(folder / "images", model, BACKEND, **unrated)],
                "tracked": [track_clips(folder / "clips", model, BACKEND, **unrated)[0]]}
        if cut_clips:
            render_clips(model, folder / "cut_clips", cut_clips, seed + CUT_SEED_OFFSET, cut=True)
            stills_from_cut_clips(folder / "cut_clips", folder / "cut_stills")
            sets["still"].append(track_stills(folder / "cut_stills", model, BACKEND, **unrated))
            sets["tracked"].append(track_clips(folder / "cut_clips", model, BACKEND, **unrated)[0])
        for kind, rows in sets.items():
            arrays = [r.arrays() for r in rows]
            paired = [pairs(a) for a in arrays]
            out[f"{kind}_signal"] = np.concatenate([x for x, _ in paired])
            out[f"{kind}_error"] = np.concatenate([y for _, y in paired])
            out[f"{kind}_cut"] = np.concatenate([np.full(len(x), k > 0) for k, (x, _) in enumerate(paired)])
            out[f"{kind}_frames"] = sum(len(a["group"]) for a in arrays)
            out[f"{kind}_cut_frames"] = sum(len(a["group"]) for a in arrays[1:])
    return out


def fitted_table(fit: dict[str, np.ndarray], x_name: str, y_name: str) -> dict[str, np.ndarray]:
    """The calibration file's four arrays, the maps fitted on ``fit`` (track_renders)."""
    table = {}
    for kind, _, _ in KINDS:
        table[f"{x_name}_{kind}"], table[f"{y_name}_{kind}"] = fit_map(fit[f"{kind}_signal"], fit[f"{kind}_error"])
    return table


def held_out_tables(expected_of: Callable[[float, bool], float], fit: dict[str, np.ndarray],
                    held: dict[str, np.ndarray], mean_digits: int, quarter_digits: int,
                    unit: str = "") -> tuple[list[str], list[str]]:
    """Table rows per set (faces fitted on and held out, ρ, expected and true error), then for its faces from the
    renders cut by the frame's edge alone, and by quarter of the expected error, of the held-out faces read by
    ``expected_of(signal, tracked)``."""
    rows, quarters = [], []
    d = mean_digits
    for kind, label, tracked in KINDS:
        error = held[f"{kind}_error"]
        expected = np.array([expected_of(x, tracked) for x in held[f"{kind}_signal"]])
        for part, name, frames in (("all", label, ""), ("cut", f"{label}, of them from the cut renders", "cut_")):
            chosen = np.ones(len(error), bool) if part == "all" else held[f"{kind}_cut"]
            fitted = len(fit[f"{kind}_signal"]) if part == "all" else int(fit[f"{kind}_cut"].sum())
            if not chosen.any():
                continue
            rho = float(spearmanr(expected[chosen], error[chosen]).correlation)
            rows.append(f"| {name} | {fitted} of {fit[f'{kind}_{frames}frames']} | {chosen.sum()} of "
                        f"{held[f'{kind}_{frames}frames']} | {rho:.3f} | {expected[chosen].mean():.{d}f}{unit} | "
                        f"{error[chosen].mean():.{d}f}{unit} | {np.median(error[chosen]):.{d}f}{unit} |")
        quarters += quarter_rows(label, expected, error, quarter_digits)
    return rows, quarters


def calibrate_and_score(model: IctModel, args: argparse.Namespace, seeds: tuple[int, int],
                        pairs: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]],
                        names: tuple[str, str],
                        reader: Callable[[dict[str, np.ndarray]], Callable[[float, bool], float]],
                        mean_digits: int, quarter_digits: int, unit: str = "",
                        **unrated: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """A rating's whole calibration: the maps fitted on renders from ``seeds[0]`` and scored on held-out ones from
    ``seeds[1]`` (track_renders with ``pairs`` and ``unrated``), written to ``args.out`` unless ``args.no_write``.
    ``names``: the file's (signal, error) array names; ``reader``: the tracker's reading of a table, as
    ``expected(signal, tracked)``. Returns the table and its section's two tables' lines (held_out_tables)."""
    fit = track_renders(model, seeds[0], args.stills, args.clips, args.cut_clips, pairs, **unrated)
    table = fitted_table(fit, *names)
    held = track_renders(model, seeds[1], args.held_out_stills, args.held_out_clips, args.held_out_cut_clips, pairs,
                         **unrated)
    rows, quarters = held_out_tables(reader(table), fit, held, mean_digits, quarter_digits, unit)
    if not args.no_write:
        np.savez_compressed(args.out, **table)
    return table, [
        ("| set | calibration faces | held-out faces | Spearman ρ, expected with true error, held out | expected, "
         "mean | true, mean | true, median |"),
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Held out, by quarter of the expected error:",
        "",
        "| set | quarter | expected, range | expected, mean | true error, mean | true error, median |",
        "|---|---|---|---|---|---|",
        *quarters,
    ]


def quarter_rows(label: str, expected: np.ndarray, error: np.ndarray, digits: int = 1) -> list[str]:
    """Table rows: the faces by quarter of their expected error, its range and mean, and their true error's mean and
    median, to ``digits`` decimals."""
    quarters = np.array_split(np.argsort(expected), 4)  # fewer than four faces: the empty quarters are left out
    return [f"| {label} | {k + 1} | {expected[q].min():.{digits}f}-{expected[q].max():.{digits}f} | "
            f"{expected[q].mean():.{digits}f} | {error[q].mean():.{digits}f} | {np.median(error[q]):.{digits}f} |"
            for k, q in enumerate(quarters) if len(q)]


def knots_text(table: dict[str, np.ndarray], x_name: str, y_name: str, digits: int, unit: str = "") -> str:
    """The maps' knots, "stills: x → y, ...; tracked: ..."."""
    return "; ".join(f"{label}: " + ", ".join(f"{x:.3f} → {y:.{digits}f}{unit}" for x, y in
                                               zip(table[f"{x_name}_{kind}"], table[f"{y_name}_{kind}"]))
                     for kind, label in (("still", "stills"), ("tracked", "tracked")))
