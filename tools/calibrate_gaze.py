#!/usr/bin/env python3
"""Fit where the eyeballs turn (tracker/gaze.py) on helen_train, and measure the gaze on afw, held out.

Most people in these photos look into the camera. Their irises then lie on the camera's ray through the
eyeball's centre, wherever the head points: so the centre's place in the head can be fitted from where
the irises appear, and the gaze measured against the direction from the eyes to the camera. The tool
tracks each annotated face (still mode, gaze off, everything else default), fits the centre's offset from
the midpoint of the eye corners (outward, up, forward; one for both eyes, mirrored) by a robust least
squares of the projected centres against the mesh's iris points (in inter-ocular units; eyes weighted as
the tracker weights them: shut or turned-away eyes count less or not at all), and writes
engines/gaze_calibration.npz. It then reports, on helen_train (fitted there) and afw (held out), the
angle between the tracker's gaze and the direction to the camera, against eyes taken to look straight
ahead out of the head, and how the gaze's yaw and pitch follow that direction's. Faces whose subjects look
elsewhere count as errors, so the figures bound the error from above. On the faces with both eyes fully
read it also reads the gaze from each eye alone (the other's points marked as turned away), as a wink or a
turned head leaves it: eyes on the camera should read the same from either eye. Writes BENCHMARKS.md
section "gaze" unless --no-write.

    python tools/calibrate_gaze.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import least_squares
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from landmark_data import LANDMARKS68, load_folder, match_face
from report import file_to_write, invocation, update_section

from tracker.backends import ENGINES_DIR
from tracker.fitting import FaceModel, camera_for
from tracker.gaze import (
    CALIBRATION_FILE,
    EYE_RANGE_DEG,
    FULL_DOWN_DEG,
    FULL_SIDEWAYS_DEG,
    FULL_UP_DEG,
    IRIS_DISTANCE_CM,
    GazeEstimator,
    eye_centres,
    eye_readings,
    eye_weights,
    iris_points,
    within_eye_range,
)
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.pose import MODEL_TO_CAMERA
from tracker.types import Gaze


def track(folder: Path) -> list[dict]:
    """Each annotated face's iris points, 68 landmarks, facing flags, camera and 3D fit (tracker defaults,
    gaze off)."""
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", gaze=False))
    samples = []
    for item in tqdm(load_folder(folder), desc=f"tracking {folder.name}", unit="img"):
        image = cv2.imread(str(item.image_path))
        faces = tracker.process(image, still=True).faces
        k = match_face([f.landmarks for f in faces], item.points)
        state = None if k is None else tracker.tracks.tracks[k].state.fit
        if state is None:
            continue
        face = faces[k]
        samples.append({"iris": iris_points(face.mesh), "landmarks": face.landmarks, "facing": ~face.occluded,
                        "state": state, "camera": camera_for((image.shape[1], image.shape[0]))})
    return samples


def centres_in_camera(model: FaceModel, sample: dict, offset: np.ndarray) -> np.ndarray:
    state = sample["state"]
    return eye_centres(model, state.identity, offset) @ (state.rotation @ MODEL_TO_CAMERA).T + state.translation


def fit_centre_offset(model: FaceModel, samples: list[dict]) -> np.ndarray:
    """The eyeball centres' offset (model cm) that puts their projections on the iris points."""
    weights = np.sqrt(np.array([eye_weights(s["landmarks"], s["facing"]) for s in samples]))
    iris = np.array([s["iris"] for s in samples])
    scale = np.array([np.linalg.norm(s["landmarks"][36] - s["landmarks"][45]) for s in samples])

    def residuals(offset: np.ndarray) -> np.ndarray:
        projected = []
        for s in samples:
            c = centres_in_camera(model, s, offset)
            projected.append(s["camera"][0] * c[:, :2] / c[:, 2:] + s["camera"][1:])
        return ((np.array(projected) - iris) / scale[:, None, None] * weights[:, :, None]).ravel()

    # soft-l1 beyond 3% of the eye distance: subjects looking elsewhere should not pull the centres.
    return least_squares(residuals, np.array([0.0, 0.0, -1.0]), loss="soft_l1", f_scale=0.03).x


def toward_camera(model: FaceModel, sample: dict, offset: np.ndarray) -> Gaze:
    """The eye-in-head direction from the midpoint of the two eyeball centres to the camera."""
    state = sample["state"]
    centre = centres_in_camera(model, sample, offset).mean(0)
    head = (-centre / np.linalg.norm(centre)) @ (state.rotation @ MODEL_TO_CAMERA)
    return Gaze.from_direction(*head.tolist())


# Bands of the camera direction's yaw in the head (degrees), for the table of medians.
YAW_BANDS = ((-60, -30), (-30, -15), (-15, -5), (-5, 5), (5, 15), (15, 30), (30, 60))


def score(estimator: GazeEstimator, samples: list[dict]) -> dict:
    """Angles (degrees) between measured gaze and the direction to the camera; straight ahead as baseline."""
    measured, truth = [], []
    for s in samples:
        gaze = estimator.estimate(s["iris"], s["landmarks"], s["state"], s["camera"], facing=s["facing"])
        if gaze is not None:
            measured.append(gaze)
            truth.append(toward_camera(estimator.model, s, estimator.centre_offset))
    m, t = (np.array([[g.yaw, g.pitch] for g in gazes]) for gazes in (measured, truth))
    cos = np.array([a.direction() @ b.direction() for a, b in zip(measured, truth)])
    error = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ahead = np.degrees(np.arccos(np.clip([b.direction()[2] for b in truth], -1.0, 1.0)))
    fit = {k: np.polyfit(t[:, i], m[:, i], 1) for i, k in enumerate(("yaw", "pitch"))}
    bands = []
    for lo, hi in YAW_BANDS:
        inside = (t[:, 0] >= lo) & (t[:, 0] < hi)
        bands.append((int(inside.sum()), *(np.median(v[inside, 0]) if inside.any() else np.nan for v in (t, m))))
    return {"faces": len(samples), "read": len(m), "median": np.median(error), "mean": error.mean(),
            "p90": np.percentile(error, 90), "within10": (error <= 10).mean(),
            "ahead_median": np.median(ahead), "ahead_mean": ahead.mean(), "ahead_within10": (ahead <= 10).mean(),
            **{f"{k}_r": np.corrcoef(t[:, i], m[:, i])[0, 1] for i, k in enumerate(("yaw", "pitch"))},
            **{f"{k}_slope": fit[k][0] for k in fit}, **{f"{k}_bias": fit[k][1] for k in fit},
            "spread_yaw": t[:, 0].std(), "spread_pitch": t[:, 1].std(), "bands": bands}


def one_eye(estimator: GazeEstimator, samples: list[dict]) -> dict:
    """On faces with both eyes open, facing the camera, read squarely and turned no further than an eye turns
    (EYE_RANGE_DEG): the yaw error (degrees, against the direction to the camera) of the gaze from the right eye
    alone, the left alone and both, medians, and the median gap between the two one-eye yaws."""
    errors = []
    for s in samples:
        state = s["state"]
        if eye_weights(s["landmarks"], s["facing"]).min() < 0.99:
            continue
        readings = eye_readings(s["iris"], estimator.eye_centres(state), state.rotation, state.translation, s["camera"])
        if (not np.all(np.isfinite(readings)) or readings[:, 2].min() < 0.8
                or not within_eye_range(readings[:, 0], readings[:, 1]).all()):
            continue
        truth = toward_camera(estimator.model, s, estimator.centre_offset).yaw
        row = []
        for hidden in (slice(42, 48), slice(36, 42), None):  # the left eye's points, the right eye's, none
            facing = s["facing"].copy()
            if hidden is not None:
                facing[hidden] = False
            row.append(estimator.estimate(s["iris"], s["landmarks"], state, s["camera"], facing=facing).yaw - truth)
        errors.append(row)
    e = np.array(errors)
    return {"faces": len(e), "right": np.median(e[:, 0]), "left": np.median(e[:, 1]), "both": np.median(e[:, 2]),
            "gap": np.median(np.abs(e[:, 0] - e[:, 1]))}


def _enough(folder: Path, samples: list) -> list:
    if len(samples) < 10:
        raise SystemExit(f"error: {len(samples)} usable annotated faces in {folder}; the gaze needs at least 10")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=LANDMARKS68 / "helen_train")
    parser.add_argument("--held-out", type=Path, default=LANDMARKS68 / "afw")
    parser.add_argument("--out", type=file_to_write, default=ENGINES_DIR / CALIBRATION_FILE,
                        help="where the calibration goes (default: the shipped file the tracker reads)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; write neither the calibration (--out) nor BENCHMARKS.md")
    args = parser.parse_args()
    for folder in (args.train, args.held_out):
        if not folder.is_dir():
            raise SystemExit(f"error: {folder} not found (the shared data sit in ../shared/data)")
    model = FaceModel.load()
    train, held_out = _enough(args.train, track(args.train)), _enough(args.held_out, track(args.held_out))
    offset = fit_centre_offset(model, train)
    if not args.no_write:
        np.savez(args.out, centre_offset=offset)
    print(f"eyeball centre offset from the corners' midpoint: outward {offset[0]:+.3f}, up {offset[1]:+.3f}, "
          f"forward {offset[2]:+.3f} cm" + ("" if args.no_write else f" -> {args.out}"))
    estimator = GazeEstimator(model, offset)
    rows, band_rows, eye_rows = [], [], []
    for name, samples in ((f"{args.train.name} (fitted there)", train), (f"{args.held_out.name} (held out)", held_out)):
        e = one_eye(estimator, samples)
        eye_rows.append(f"| {name} | {e['faces']} | {e['right']:+.1f}° | {e['left']:+.1f}° | {e['both']:+.1f}° | "
                        f"{e['gap']:.1f}° |")
        print(eye_rows[-1])
        q = score(estimator, samples)
        rows.append(f"| {name} | {q['read']}/{q['faces']} | {q['median']:.1f}° / {q['mean']:.1f}° / {q['p90']:.1f}° "
                    f"| {100 * q['within10']:.0f}% | {q['ahead_median']:.1f}° / {q['ahead_mean']:.1f}° | "
                    f"{100 * q['ahead_within10']:.0f}% | {q['yaw_r']:.2f} / {q['pitch_r']:.2f} | "
                    f"{q['yaw_slope']:.2f} / {q['pitch_slope']:.2f} | {q['yaw_bias']:+.1f}° / {q['pitch_bias']:+.1f}° | "
                    f"{q['spread_yaw']:.1f}° / {q['spread_pitch']:.1f}° |")
        print(rows[-1])
        band_rows.append(f"| {name} | " + " | ".join(f"{n}: {e:+.1f}° / {g:+.1f}°" if n else "—"
                                                     for n, e, g in q["bands"]) + " |")
        print(band_rows[-1])
    band_head = " | ".join(f"{lo}° to {hi}°" for lo, hi in YAW_BANDS)
    body = f"""Gaze (the eight `eyeLook*` weights) from the face mesh's irises and the 3D fit (tracker/gaze.py).
The eyeball centre sits at a fixed offset from the midpoint of each eye's corners in the fitted face
model, fitted on {args.train.name}: outward {offset[0]:+.2f}, up {offset[1]:+.2f}, forward {offset[2]:+.2f} cm. Truth:
the subjects of these photos mostly look into the camera, so the gaze is scored against the direction
from the eyes to the camera, in the head's axes. Faces looking elsewhere count as errors, so these
figures are upper bounds. Baseline: eyes taken to look straight out of the head (what a tracker without
irises can say). Slope and bias: the measured yaw (pitch) regressed on that direction's; a face that
turns its head but keeps its eyes on the camera turns its eyes the other way by as much (slope 1).

| set | gaze read | angle to the camera direction: median / mean / 90th percentile | within 10° | straight ahead: median / mean | within 10° | r, yaw / pitch | slope, yaw / pitch | bias, yaw / pitch | spread of the camera direction (s.d.), yaw / pitch |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

By the yaw of the camera direction in the head (a head turned to the subject's right puts the camera to
their left: positive): faces, then the medians of that yaw and of the measured one.

| set | {band_head} |
|---|{"---|" * len(YAW_BANDS)}
{chr(10).join(band_rows)}

One eye alone (a wink, a head turned away): on the faces with both eyes open, facing the camera, read
squarely and turned no further than an eye turns ({EYE_RANGE_DEG:.0f}°), the gaze read from each eye alone, the other's points marked as turned away. The two lines of
sight are taken to meet as far away as the camera is, so eyes on the camera read the same from either eye;
averaging the two eyes' angles instead, each eye alone read its own inward lean (on afw +7.0° with the
right eye and -4.4° with the left, 10.8° apart, on 226 faces: a scratch run of the same comparison on the build before).

| set | faces | yaw error, median: right eye alone | left eye alone | both | gap between the two one-eye yaws, median |
|---|---|---|---|---|---|
{chr(10).join(eye_rows)}

Not measured: gaze away from the camera. These photos show too little of it, and the ICT renders have
no eyeballs. The angle a weight of 1 stands for is a convention ({FULL_SIDEWAYS_DEG:.0f}° sideways, {FULL_UP_DEG:.0f}° up,
{FULL_DOWN_DEG:.0f}° down), and the eyeball's radius ({IRIS_DISTANCE_CM} cm to the iris centre) is anatomy's, not fitted: eyes on the camera fix the
iris on the ray through the centre whatever the radius, so these data cannot tell it. An eye read as turned
more than {EYE_RANGE_DEG:.0f}° from straight ahead counts as unread (tracker/gaze.py `EYE_RANGE_DEG`): that is further
than eyes turn in the head.

Command: `{invocation()}`"""
    if not args.no_write:
        update_section("gaze", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
