"""Property tests of the model-free pieces: ROIs, anchors, NMS, the mirror index map."""

import numpy as np
import pytest

from tracker.detector import box_iou, ssd_anchors, weighted_nms
from tracker.landmarks68 import IBUG68_MIRROR
from tracker.roi import Roi, crop, crop_points_to_image, follow, image_points_to_crop, roi_from_points


@pytest.mark.parametrize("angle", [0.0, 0.4, -1.2, 3.0])
def test_roi_round_trip_and_corners(angle):
    roi = Roi(cx=120.0, cy=80.0, size=64.0, angle=angle)
    pts = np.random.default_rng(0).uniform(0, 192, size=(50, 2))
    back = image_points_to_crop(crop_points_to_image(pts, roi, 192), roi, 192)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # The crop centre maps to the ROI centre and the crop's x axis runs along the ROI angle.
    c = crop_points_to_image(np.array([[96.0, 96.0], [192.0, 96.0]]), roi, 192)
    np.testing.assert_allclose(c[0], [120.0, 80.0], atol=1e-9)
    np.testing.assert_allclose(c[1] - c[0], 32.0 * np.array([np.cos(angle), np.sin(angle)]), atol=1e-9)


def test_crop_samples_the_rotated_square():
    # A bright dot at a known image position lands where the inverse mapping says.
    image = np.zeros((200, 300, 3), np.uint8)
    image[60:63, 170:173] = 255
    roi = Roi(cx=150.0, cy=100.0, size=120.0, angle=0.5)
    patch = crop(image, roi, 96)
    ys, xs = np.nonzero(patch[..., 0] > 60)
    expected = image_points_to_crop(np.array([[171.0, 61.0]]), roi, 96)[0]
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=1.0)


def test_roi_from_points_recovers_a_rotated_square():
    angle = 0.3
    c, s = np.cos(angle), np.sin(angle)
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 20
    pts = square @ np.array([[c, s], [-s, c]]) + [50, 60]
    roi = roi_from_points(pts, pts[0], pts[1], scale=1.5)
    assert roi.angle == pytest.approx(angle)
    assert (roi.cx, roi.cy) == pytest.approx((50, 60))
    assert roi.size == pytest.approx(60)


def test_follow_holds_within_the_band_and_trails_by_it_beyond():
    previous = Roi(100.0, 80.0, 200.0, 3.1)
    # Within the band on every axis (the angle across ±π): nothing moves.
    near = Roi(102.0, 81.0, 203.0, -3.17)
    assert follow(previous, near, 0.02) == previous
    rng = np.random.default_rng(0)
    for _ in range(200):
        target = Roi(*(rng.normal([100, 80], 30)), float(200 * np.exp(rng.normal(0, 0.2))), float(rng.uniform(-4, 4)))
        out = follow(previous, target, 0.02)
        moved = np.hypot(out.cx - previous.cx, out.cy - previous.cy)
        gap = np.hypot(target.cx - out.cx, target.cy - out.cy)
        far = np.hypot(target.cx - previous.cx, target.cy - previous.cy) > 4.0
        # Beyond the band it moves straight towards the target and stops at the band's edge.
        assert gap == pytest.approx(4.0 if far else np.hypot(target.cx - previous.cx, target.cy - previous.cy))
        assert moved + gap == pytest.approx(np.hypot(target.cx - previous.cx, target.cy - previous.cy))
        # Size and angle likewise: within the band they stay, beyond it they stop at its edge.
        size_gap, size_step = np.log(target.size / out.size), np.log(target.size / previous.size)
        assert abs(size_gap) == pytest.approx(min(abs(size_step), 0.02), abs=1e-9)
        turn = (target.angle - out.angle + np.pi) % (2 * np.pi) - np.pi
        whole_turn = (target.angle - previous.angle + np.pi) % (2 * np.pi) - np.pi
        assert abs(turn) == pytest.approx(min(abs(whole_turn), 0.02), abs=1e-9)
        assert -np.pi <= out.angle < np.pi
    # A face moving at constant speed drags its crop along, the band behind, with no further lag.
    roi = previous
    for k in range(1, 50):
        roi = follow(roi, Roi(100.0 + 5 * k, 80.0, 200.0, 3.1), 0.02)
    assert roi.cx == pytest.approx(100 + 5 * 49 - 4.0) and roi.cy == pytest.approx(80.0)
    # A ROI that cannot be followed (no size, not finite) gives way to the target.
    for bad in (Roi(np.nan, 80.0, 200.0, 0.0), Roi(100.0, 80.0, 0.0, 0.0)):
        assert follow(bad, previous, 0.02) == previous and follow(previous, bad, 0.02) == bad


def test_blazeface_anchor_counts_and_centres():
    short = ssd_anchors(128, (8, 16, 16, 16), interpolated=True)
    full = ssd_anchors(192, (4,), interpolated=False)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # First layer: 16×16 cells, two anchors per cell, row-major from the top left.
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    scores = np.array([0.9, 0.3, 0.8])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    box, kp, score = out[0]
    np.testing.assert_allclose(box, [0.25, 0, 10.25, 10])  # (0*0.9 + 1*0.3) / 1.2
    np.testing.assert_allclose(kp, 0.25)
    assert score == 0.9
    np.testing.assert_allclose(out[1][0], boxes[2])
    assert box_iou(boxes[0], boxes[2:])[0] == 0.0


def test_ibug_mirror_map_is_an_involution_that_swaps_sides():
    assert sorted(IBUG68_MIRROR) == list(range(68))
    np.testing.assert_array_equal(IBUG68_MIRROR[IBUG68_MIRROR], np.arange(68))
    assert IBUG68_MIRROR[36] == 45 and IBUG68_MIRROR[0] == 16 and IBUG68_MIRROR[48] == 54
    assert IBUG68_MIRROR[30] == 30 and IBUG68_MIRROR[8] == 8 and IBUG68_MIRROR[62] == 62


def test_crop_camera_maps_like_the_points_it_projects():
    from tracker.roi import crop_camera_to_image

    rng = np.random.default_rng(3)
    roi = Roi(cx=320.0, cy=200.0, size=150.0, angle=0.4)
    camera = np.concatenate([rng.normal(0, 8, (2, 3)), rng.uniform(60, 130, (2, 1))], 1)
    x = rng.normal(0, 5, (20, 3))
    in_crop = x @ camera[:, :3].T + camera[:, 3]
    in_image = x @ crop_camera_to_image(camera, roi, 192)[:, :3].T + crop_camera_to_image(camera, roi, 192)[:, 3]
    assert np.allclose(crop_points_to_image(in_crop, roi, 192), in_image)
