"""Mirror-flip reliability: the map-back is exact, and a covered landmark is trusted less than its twin."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tracker.landmarks68 import IBUG68_MIRROR, CropLandmarks, remove_offset
from tracker.mesh import MESH_INPUT
from tracker.reliability import assess, mirror_back
from tracker.roi import Roi
from tracker.types import ARKIT_BLENDSHAPES, ARKIT_MIRROR

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))


def mirror_of(points: np.ndarray) -> np.ndarray:
    """What a perfect network would predict on the horizontally mirrored crop."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = (MESH_INPUT - 1) - out[:, 0]
    return out[IBUG68_MIRROR]


def test_mirror_back_is_an_exact_involution() -> None:
    rng = np.random.default_rng(0)
    shape = rng.uniform(20, 170, (68, 2))
    assert np.allclose(mirror_back(mirror_of(shape)), shape, rtol=0, atol=1e-12)
    assert np.allclose(mirror_of(mirror_back(shape)), shape, rtol=0, atol=1e-12)
    # A point on the crop's vertical centre line maps onto itself (x -> w - 1 - x).
    centre = np.full((68, 2), (MESH_INPUT - 1) / 2)
    assert np.array_equal(mirror_back(centre), centre)


def test_offsets_measured_after_mapping_back_are_removed_from_both_passes() -> None:
    """A direct and a mirror prediction that, mapped back, sit at known offsets from the truth: removing
    each offset in its own crop's frame puts both on the truth, so their average is the truth too."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(20, 170, (68, 2))
    truth[36], truth[45] = (60.0, 80.0), (130.0, 80.0)
    direct_offset, mirror_offset = np.array([-0.3, 0.1]), np.array([-0.9, -0.2])
    direct = truth + direct_offset
    mirror = mirror_of(truth + mirror_offset)  # in the mirrored crop, whose mapped-back points are offset
    assert np.allclose(mirror_back(mirror), truth + mirror_offset)
    assert np.allclose(remove_offset(direct, direct_offset, mirrored=False), truth)
    assert np.allclose(mirror_back(remove_offset(mirror, mirror_offset, mirrored=True)), truth)
    # Without the sign change on the mirror the offset would double in x instead.
    assert not np.allclose(mirror_back(remove_offset(mirror, mirror_offset, mirrored=False)), truth)


def test_expression_mirror_swaps_sides_and_is_an_involution() -> None:
    names = np.array(ARKIT_BLENDSHAPES)
    assert np.array_equal(ARKIT_MIRROR[ARKIT_MIRROR], np.arange(len(names)))
    assert names[ARKIT_MIRROR][names.tolist().index("eyeBlinkLeft")] == "eyeBlinkRight"
    assert names[ARKIT_MIRROR][names.tolist().index("mouthLeft")] == "mouthRight"
    assert names[ARKIT_MIRROR][names.tolist().index("jawOpen")] == "jawOpen"
    # A face winking its left eye: its mirror image winks the right one; mapped back, they agree.
    shape = np.random.default_rng(2).uniform(20, 170, (68, 2))
    shape[36], shape[45] = (60.0, 80.0), (130.0, 80.0)
    wink = np.zeros(len(names))
    wink[names.tolist().index("eyeBlinkLeft")] = 0.9
    mirrored = np.zeros(len(names))
    mirrored[names.tolist().index("eyeBlinkRight")] = 0.7
    rel = assess(CropLandmarks(direct=shape, mirror=mirror_of(shape), expression=wink, mirror_expression=mirrored),
                 Roi(cx=96.0, cy=96.0, size=192.0, angle=0.0), None)
    assert rel.expression[names.tolist().index("eyeBlinkLeft")] == pytest.approx(0.8)
    assert rel.expression[names.tolist().index("eyeBlinkRight")] == 0.0


def test_assess_agreeing_passes_give_zero_mirror_error_and_average_visibility() -> None:
    rng = np.random.default_rng(1)
    shape = rng.uniform(20, 170, (68, 2))
    shape[36], shape[45] = (60.0, 80.0), (130.0, 80.0)
    visibility = rng.uniform(0, 1, 68)
    prediction = CropLandmarks(direct=shape, mirror=mirror_of(shape), visibility=visibility,
                               mirror_visibility=visibility[IBUG68_MIRROR])
    rel = assess(prediction, Roi(cx=96.0, cy=96.0, size=192.0, angle=0.0), None)
    assert np.allclose(rel.mirror_error, 0.0)
    assert np.allclose(rel.visibility, visibility)
    # A disagreement at one point shows up at that point only, in inter-ocular units.
    moved = mirror_of(shape)
    moved[IBUG68_MIRROR[10]] += (7.0, 0.0)  # the mirror's entry that maps back onto landmark 10
    rel = assess(CropLandmarks(direct=shape, mirror=moved), Roi(cx=96.0, cy=96.0, size=192.0, angle=0.0), None)
    # Two predictions 7 px apart: each lies 3.5 px from their mean.
    assert rel.mirror_error[10] == pytest.approx(3.5 / np.linalg.norm(
        0.5 * (shape[36] + mirror_back(moved)[36]) - 0.5 * (shape[45] + mirror_back(moved)[45])))
    assert np.allclose(np.delete(rel.mirror_error, 10), 0.0)


RIGHT_EYE = slice(36, 42)  # the subject's right eye; its twins (IBUG68_MIRROR) are the left eye, 42-47


def right_eye_covered(paint, faces: int = 12) -> list:
    """The tracked face of each of the first frontal afw faces after ``paint(image, k, items, (x0, y0,
    x1, y1))`` covered the box around its right eye, 0.15 inter-ocular distances beyond the eye."""
    import cv2
    from landmark_data import LANDMARKS68, load_folder, match_face

    from tracker.pipeline import FaceTracker, TrackerConfig

    folder = LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    items = load_folder(folder)
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8))
    found = []
    for k, item in enumerate(items[:faces]):
        image = cv2.imread(str(item.image_path))
        pts = item.points
        iod = np.linalg.norm(pts[36] - pts[45])
        if abs(pts[36, 1] - pts[45, 1]) > 0.3 * iod:  # a tilted face: its eye box would catch the brow
            continue
        x0, y0 = np.maximum(pts[RIGHT_EYE].min(0) - 0.15 * iod, 0).astype(int)  # slices must not wrap
        x1, y1 = (pts[RIGHT_EYE].max(0) + 0.15 * iod).astype(int)
        paint(image, k, items, (x0, y0, x1, y1))
        tracked = tracker.process(image, still=True).faces
        index = match_face([f.landmarks for f in tracked], pts, tolerance=1.0)
        if index is not None:
            found.append(tracked[index])
    # The data are there, so too few faces found is the tracker's failure, not the environment's.
    assert len(found) >= 4, f"only {len(found)} of the first {faces} afw faces found with an eye covered"
    return found


def covered_and_twin(faces: list, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Per face, the mean of ``field`` over the covered eye and over its twins."""
    values = [np.asarray(getattr(f, field), dtype=np.float64) for f in faces]
    return (np.array([v[RIGHT_EYE].mean() for v in values]),
            np.array([v[IBUG68_MIRROR[RIGHT_EYE]].mean() for v in values]))


def test_a_covered_landmark_gets_lower_confidence_than_its_visible_twin() -> None:
    import cv2

    def skin_patch(image, k, items, box):
        cv2.rectangle(image, box[:2], box[2:], (120, 150, 200), -1)

    faces = right_eye_covered(skin_patch)
    covered_conf, twin_conf = covered_and_twin(faces, "landmark_confidence")
    covered_flag, twin_flag = covered_and_twin(faces, "occluded")
    assert covered_conf.mean() < 0.5 * twin_conf.mean()
    assert (covered_conf < twin_conf).mean() >= 0.75
    assert covered_flag.mean() > twin_flag.mean() + 0.5


def test_a_patch_of_another_photo_over_an_eye_reads_as_hidden() -> None:
    # The hard occluder: a rectangle showing what another photo has at that place (often another
    # face's skin), which the mesh's face features barely told from the face (recall 10% on afw's
    # patches); the visibility head's pixel CNN sees its edges and foreign texture.
    import cv2

    def photo_patch(image, k, items, box):
        donor = cv2.resize(cv2.imread(str(items[(k + 7) % len(items)].image_path)), image.shape[1::-1])
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1] = donor[y0:y1, x0:x1]

    faces = right_eye_covered(photo_patch)
    covered, twin = covered_and_twin(faces, "landmark_visibility")
    covered_flag, twin_flag = covered_and_twin(faces, "occluded")
    # Measured: covered 0.49, twins 0.96, flags 48% against 0% (the features-only head: 0.73, 0.93,
    # 18% against 5%, which fails both).
    assert covered.mean() < 0.6 and twin.mean() > 0.8, (covered, twin)
    assert covered_flag.mean() > twin_flag.mean() + 0.3


def test_points_beyond_the_frame_edge_are_occluded_unseen_and_untrusted() -> None:
    """A face cut by the image's left edge: the crop repeats the edge's pixels, which the refiner reads as
    visible face. The points the tracker places beyond the edge are flagged, with visibility and confidence 0;
    the face's far eye, inside the frame, keeps its own."""
    import cv2
    from landmark_data import LANDMARKS68, load_folder, match_face

    from tracker.pipeline import FaceTracker, TrackerConfig

    folder = LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8))
    outside, far_eye = [], []
    for item in load_folder(folder)[:12]:
        pts = item.points
        cut = int(pts[:, 0].min() + 0.25 * np.ptp(pts[:, 0]))  # a quarter of the face off the left edge
        image = np.ascontiguousarray(cv2.imread(str(item.image_path))[:, cut:])
        tracked = tracker.process(image, still=True).faces
        index = match_face([f.landmarks for f in tracked], pts - (cut, 0), tolerance=1.0)
        if index is None:
            continue
        face = tracked[index]
        beyond = face.landmarks[:, 0] < -0.5
        outside.append((beyond.sum(), face.occluded[beyond].all(), face.landmark_visibility[beyond].max(),
                        face.landmark_confidence[beyond].max()))
        eye = slice(42, 48) if pts[42:48, 0].mean() > pts[36:42, 0].mean() else slice(36, 42)
        far_eye.append((face.occluded[eye].mean(), face.landmark_visibility[eye].mean()))
    assert len(outside) >= 4, f"only {len(outside)} of the first 12 afw faces found cut at the edge"
    counts, flagged, visibility, confidence = map(np.array, zip(*outside))
    assert counts.sum() >= 3 * len(counts)  # the check is not vacuous: points were placed beyond the edge
    assert flagged.all() and visibility.max() == 0.0 and confidence.max() == 0.0
    eye_flags, eye_visibility = map(np.array, zip(*far_eye))
    assert eye_flags.mean() < 0.2 and eye_visibility.mean() > 0.8


def test_four_way_mirror_spread_counts_the_linear_maps_guesses_too() -> None:
    from tracker.reliability import mirror_spread

    rng = np.random.default_rng(2)
    shape = rng.uniform(20, 170, (68, 2))
    shift = np.array([2.0, 0.0])
    # The refiner agrees with itself; the linear map's two guesses sit 2 px to either side.
    prediction = CropLandmarks(direct=shape, mirror=mirror_of(shape), initial=shape + shift,
                               mirror_initial=mirror_of(shape - shift))
    assert np.allclose(mirror_spread(prediction), 1.0)
    # Without the refiner's initial guesses it is the two-pass spread, here 0.
    assert np.allclose(mirror_spread(CropLandmarks(direct=shape, mirror=mirror_of(shape))), 0.0)


def test_calibration_signal_adds_each_faces_mean_mirror_error() -> None:
    from tracker.reliability import calibration_signal

    errors = np.vstack([np.linspace(0.0, 0.1, 68), np.full(68, 0.02)])
    signal = calibration_signal(errors)
    assert np.allclose(signal[0], errors[0] + 0.05)
    assert np.allclose(signal[1], 0.04)
    # One face (68 values) is treated the same as a row of many.
    assert np.allclose(calibration_signal(errors[0]), signal[0])


def test_calibrated_confidence_falls_with_the_mirror_error_and_is_scaled_by_visibility(tmp_path) -> None:
    """A known calibration table: expected error = knot map of the signal (scaled per landmark), confidence =
    1 - expected / FAILURE_ERROR clipped to [0, 1], times the visibility."""
    from tracker.backends import BackendError
    from tracker.reliability import FAILURE_ERROR, ConfidenceCalibration, calibration_signal

    signal_scale = np.ones(68)
    signal_scale[:17] = 2.0  # jaw points spread twice as much for the same expected error
    error_scale = np.ones(68)
    error_scale[:17] = 1.5  # and err more
    path = tmp_path / "calibration.npz"
    np.savez(path, mirror_error=np.array([0.0, 0.05, 0.2]), expected_error=np.array([0.02, 0.06, 0.16]),
             signal_scale=signal_scale, error_scale=error_scale)
    calibration = ConfidenceCalibration(path)
    rng = np.random.default_rng(4)
    shape = rng.uniform(20, 170, (68, 2))
    shape[36], shape[45] = (60.0, 80.0), (130.0, 80.0)
    visibility = rng.uniform(0.5, 1.0, 68)
    roi = Roi(cx=96.0, cy=96.0, size=192.0, angle=0.0)
    confidences = []
    for shift in (0.0, 1.0, 3.0, 10.0):  # the mirror pass, mapped back, sits `shift` px right of the direct one
        mirror = mirror_of(shape)
        mirror[:, 0] -= shift
        rel = assess(CropLandmarks(direct=shape, mirror=mirror, visibility=visibility,
                                   mirror_visibility=visibility[IBUG68_MIRROR]), roi, calibration)
        signal = calibration_signal(rel.mirror_error) / signal_scale
        expected = np.interp(signal, [0.0, 0.05, 0.2], [0.02, 0.06, 0.16]) * error_scale
        assert np.allclose(rel.mirror_error, 0.5 * shift / 70.0)  # each pass half the gap from the mean, in IODs
        assert np.allclose(rel.expected_error, expected)
        assert np.allclose(rel.confidence, np.clip(1.0 - expected / FAILURE_ERROR, 0.0, 1.0) * visibility)
        confidences.append(rel.confidence)
    confidences = np.array(confidences)
    assert np.all(np.diff(confidences, axis=0) <= 0) and np.all(confidences[0] > confidences[2])
    assert np.all(confidences[0, 17:] == pytest.approx(0.8 * visibility[17:]))  # expected 0.02 at no spread
    assert np.all(confidences[-1] == 0.0)  # 10 px apart: expected error beyond FAILURE_ERROR everywhere
    # At the same spread the jaw's scales make its expected error larger: its confidence is lower.
    ratio = confidences[1] / visibility
    assert ratio[:17].max() < ratio[17:].min()

    with pytest.raises(BackendError, match="calibrate_confidence.py"):
        ConfidenceCalibration(tmp_path / "missing.npz")
    old = tmp_path / "old.npz"
    np.savez(old, mirror_error=np.array([0.0, 1.0]), expected_error=np.array([0.0, 1.0]))
    with pytest.raises(BackendError, match="older version"):
        ConfidenceCalibration(old)


def test_the_shipped_calibration_is_monotone() -> None:
    from tracker.reliability import FAILURE_ERROR, ConfidenceCalibration

    calibration = ConfidenceCalibration()
    assert np.all(np.diff(calibration.mirror_error) > 0) and np.all(np.diff(calibration.expected_error) >= 0)
    assert calibration.signal_scale.shape == calibration.error_scale.shape == (68,)
    signals = np.linspace(0.0, 0.3, 50)[:, None] * np.ones(68)
    expected = np.array([calibration.expected(s) for s in signals])
    assert np.all(np.diff(expected, axis=0) >= 0) and expected[-1].mean() > 2 * expected[0].mean()
    # Far past afw's largest signals (two passes a third of the eye distance apart): untrusted everywhere.
    assert np.all(calibration.expected(np.full(68, 0.3)) >= FAILURE_ERROR)


def test_past_the_last_knot_the_expected_error_grows_in_proportion() -> None:
    from tracker.reliability import knot_map

    knots_x, knots_y = np.array([0.0, 0.05, 0.2]), np.array([0.02, 0.06, 0.16])
    x = np.array([0.1, 0.2, 0.4, 2.0])
    np.testing.assert_allclose(knot_map(x, knots_x, knots_y), [np.interp(0.1, knots_x, knots_y), 0.16, 0.32, 1.6])


@pytest.mark.parametrize("rating, signals, close, far", [
    # A fit whose points disagree by a tenth of the eye distance is far less trusted than a close one.
    ("pose", np.linspace(0.0, 0.3, 61), 0.02, 0.1),
    # Readings that disagree by a fifth of the weights' range are far less trusted than close ones.
    ("blendshapes", np.linspace(0.0, 0.5, 101), 0.05, 0.3),
])
def test_the_shipped_rating_maps_rise_with_their_signal(rating, signals, close, far) -> None:
    from tracker.reliability import BlendshapeErrorCalibration, PoseErrorCalibration

    if rating == "pose":
        calibration = PoseErrorCalibration()
        expected = calibration.expected_deg
    else:
        calibration = BlendshapeErrorCalibration()
        expected = calibration.expected
    for tracked in (False, True):
        readings = np.array([expected(x, tracked) for x in signals])
        assert np.all(np.diff(readings) >= 0) and np.all(readings > 0)
        assert expected(far, tracked) > 2 * expected(close, tracked)
        # Past the last knot, in proportion to the signal.
        knots_x, knots_y = calibration.maps["tracked" if tracked else "still"]
        assert expected(2 * knots_x[-1], tracked) == pytest.approx(2 * knots_y[-1])


@pytest.mark.parametrize("knots", [
    (np.array([0.02, 0.01]), np.array([2.0, 3.0])),  # knots falling
    (np.array([0.01, np.nan]), np.array([2.0, 3.0])),
    (np.array([0.01, 0.02, 0.03]), np.array([2.0, 3.0])),
    (np.array([0.0, 0.02]), np.array([2.0, 3.0])),  # past the last knot divides by it
    (np.array([0.01]), np.array([2.0])),
])
@pytest.mark.parametrize("kind", ["still", "tracked"])
@pytest.mark.parametrize("rating", ["pose", "blendshapes"])
def test_a_rating_table_that_is_no_monotone_map_is_refused(knots, kind, rating) -> None:
    from tracker.engines import BackendError
    from tracker.reliability import BlendshapeErrorCalibration, PoseErrorCalibration

    cls, x_name, y_name, tool = {
        "pose": (PoseErrorCalibration, "signal", "error_deg", "calibrate_pose_error"),
        "blendshapes": (BlendshapeErrorCalibration, "signal", "error", "calibrate_blendshape_error")}[rating]
    good = (np.array([0.01, 0.05]), np.array([2.0, 6.0]))
    table = {}
    for name in ("still", "tracked"):
        table[f"{x_name}_{name}"], table[f"{y_name}_{name}"] = knots if name == kind else good
    cls(table={k: good[0] if k.startswith(x_name) else good[1] for k in table})  # the good ones load
    with pytest.raises(BackendError, match=f"{kind} knot table.*{tool}"):
        cls(table=table)


def test_the_blendshape_signal_is_the_readings_disagreement_on_the_rated_shapes_plus_the_landmarks_distrust():
    """assess: a mirror reading that is the crop's own, mirrored, disagrees by 0; one that differs by a known amount
    on the rated shapes only (and by anything on the others) disagrees by that amount's mean over them. The signal
    adds the landmarks' mean distrust and their share beyond the frame's edge, each by its weight; the pose's adds
    that share to the fit's residual."""
    from tracker.reliability import (
        BLENDSHAPE_BEYOND_WEIGHT,
        POSE_BEYOND_WEIGHT,
        RATED_SHAPES,
        UNCONFIDENCE_WEIGHT,
        blendshape_signal,
        pose_signal,
    )

    rng = np.random.default_rng(5)
    shape = rng.uniform(20, 170, (68, 2))
    shape[36], shape[45] = (60.0, 80.0), (130.0, 80.0)
    direct = rng.uniform(0, 1, 52)
    prediction = CropLandmarks(direct=shape, mirror=mirror_of(shape), expression=direct,
                               mirror_expression=direct[ARKIT_MIRROR])
    roi = Roi(cx=96.0, cy=96.0, size=192.0, angle=0.0)
    assert assess(prediction, roi, None).expression_disagreement == pytest.approx(0.0, abs=1e-15)
    shift = np.zeros(52)
    rated = [ARKIT_BLENDSHAPES.index(n) for n in RATED_SHAPES]
    shift[rated] = np.linspace(0.1, 0.6, len(rated))
    others = np.setdiff1d(np.arange(52), rated)
    shift[others] = rng.uniform(-1, 1, len(others))
    prediction.mirror_expression = (direct + shift)[ARKIT_MIRROR]
    disagreement = assess(prediction, roi, None).expression_disagreement
    assert disagreement == pytest.approx(np.mean(np.linspace(0.1, 0.6, len(rated))))
    confidence = rng.uniform(0, 1, 68)
    beyond = np.zeros(68, bool)
    assert blendshape_signal(disagreement, confidence, beyond) == pytest.approx(
        disagreement + UNCONFIDENCE_WEIGHT * (1 - confidence.mean()))
    assert pose_signal(0.03, beyond) == pytest.approx(0.03)
    beyond[:17] = True  # the jaw, a quarter of the points: it tells on the blendshapes, not on the pose
    assert blendshape_signal(disagreement, confidence, beyond) == pytest.approx(
        disagreement + UNCONFIDENCE_WEIGHT * (1 - confidence.mean()) + BLENDSHAPE_BEYOND_WEIGHT * 0.25)
    assert pose_signal(0.03, beyond) == pytest.approx(0.03)
    beyond[36:48] = True  # and the eyes: 12 of the 31 brow, nose and eye points
    assert pose_signal(0.03, beyond) == pytest.approx(0.03 + POSE_BEYOND_WEIGHT * 12 / 31)


def test_the_ratings_rise_past_their_last_knot_but_never_beyond_what_the_error_can_be():
    """A pose is at most 180° from the truth and a weight in [0, 1] at most 1 off: however large the signal (a focal
    length far too short read 790° before), the shipped maps stop there, and below that they still rise."""
    from tracker.reliability import BlendshapeErrorCalibration, PoseErrorCalibration

    for maps, read, most in ((PoseErrorCalibration(), PoseErrorCalibration.expected_deg, 180.0),
                             (BlendshapeErrorCalibration(), BlendshapeErrorCalibration.expected, 1.0)):
        for kind, tracked in (("still", False), ("tracked", True)):
            last = maps.maps[kind][0][-1]
            ratings = [read(maps, signal, tracked) for signal in (last, 2 * last, 1e3 * last, 1e12)]
            assert ratings[0] < ratings[1] < most and ratings[2] == ratings[3] == most, (kind, ratings)
