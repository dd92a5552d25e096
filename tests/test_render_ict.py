"""The synthetic ground-truth renderer (tools/render_ict.py): pose convention, occlusion, determinism."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tracker.pose import euler_to_matrix

REPO = Path(__file__).resolve().parent.parent
ICT = REPO.parent / "shared" / "data" / "face_model" / "ict_face.npz"
SIZE = 320
FOCAL = 1.2 * SIZE
DISTANCE = np.array([0.0, 0.0, 55.0])


def _load_tool():
    spec = importlib.util.spec_from_file_location("render_ict", REPO / "tools" / "render_ict.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_ict", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ri():
    if not ICT.is_file():
        pytest.skip(f"shared face model {ICT} is absent")
    return _load_tool()


@pytest.fixture(scope="module")
def model(ri):
    return ri.load_ict(ICT)


def _render(ri, model, yaw=0.0, pitch=0.0, roll=0.0, background=None, seed=0):
    rng = np.random.default_rng(seed)
    light = ri.random_light(rng)
    neutral = np.zeros(len(model.exp_names), np.float32)
    return ri.render(model, np.zeros(model.id_basis.shape[0], np.float32), neutral, euler_to_matrix(yaw, pitch, roll),
                     DISTANCE, FOCAL, SIZE, light, background, rng)


def _nose_from_eyes(lm: np.ndarray) -> np.ndarray:
    return lm[30] - 0.5 * (lm[36] + lm[45])


def test_frontal_render(ri, model):
    green = np.zeros((SIZE, SIZE, 3), np.uint8)
    green[..., 1] = 255
    image, lm, occluded = _render(ri, model, background=green)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert lm.shape == (68, 2) and occluded.shape == (68,)
    # Subject's right eye (36) is on the image's left.
    assert lm[36, 0] < lm[45, 0]
    assert abs(lm[30, 0] - (SIZE - 1) / 2) < 0.02 * SIZE
    x, y = np.round(lm[30]).astype(int)
    assert np.abs(image[y, x].astype(int) - green[y, x]).sum() > 100
    assert not occluded.any()


def test_pose_convention(ri, model):
    _, lm0, _ = _render(ri, model)
    _, lm_yaw, _ = _render(ri, model, yaw=30)
    _, lm_pitch, _ = _render(ri, model, pitch=20)
    _, lm_roll, _ = _render(ri, model, roll=15)
    # yaw > 0: turned to the subject's own left, the nose goes to the image's right.
    assert _nose_from_eyes(lm_yaw)[0] > _nose_from_eyes(lm0)[0] + 5.0
    # pitch > 0: looking up, the nose tip rises (smaller y) relative to the eyes.
    assert _nose_from_eyes(lm_pitch)[1] < _nose_from_eyes(lm0)[1] - 1.0
    assert lm_pitch[30, 1] < lm0[30, 1]
    # roll > 0: clockwise on screen, so with y down the eye line 36 -> 45 has a positive angle.
    d = lm_roll[45] - lm_roll[36]
    assert 12.0 < np.degrees(np.arctan2(d[1], d[0])) < 18.0


def test_self_occlusion_follows_yaw(ri, model):
    _, _, occluded = _render(ri, model, yaw=50)
    # The subject's left cheek turns away: its jaw points (9-16) hide behind the face, 0-7 stay in view.
    assert occluded[9:17].sum() > occluded[0:8].sum()
    assert occluded[9:17].sum() >= 2
    _, _, occluded_mirror = _render(ri, model, yaw=-50)
    assert occluded_mirror[0:8].sum() > occluded_mirror[9:17].sum()


def test_same_seed_same_bytes(ri, model):
    a, truth_a = ri.render_image(model, np.random.default_rng(11), 192)
    b, truth_b = ri.render_image(model, np.random.default_rng(11), 192)
    c, _ = ri.render_image(model, np.random.default_rng(12), 192)
    assert a.tobytes() == b.tobytes()
    assert truth_a == truth_b
    assert a.tobytes() != c.tobytes()


def test_arkit_mapping(ri, model):
    assert len(ri.ARKIT_NAMES) == 52 == len(set(ri.ARKIT_NAMES))
    mapped = {ri.ict_to_arkit_name(n) for n in model.exp_names}
    assert mapped == set(ri.ARKIT_NAMES) - {"tongueOut"}
    weights = ri.arkit_to_ict(model, {"browInnerUp": 0.7, "eyeBlinkLeft": 0.4})
    names = list(model.exp_names)
    assert weights[names.index("browInnerUp_L")] == weights[names.index("browInnerUp_R")] == pytest.approx(0.7)
    assert weights[names.index("eyeBlink_L")] == pytest.approx(0.4) and weights[names.index("eyeBlink_R")] == 0


def test_cli_writes_images_and_clips(ri, tmp_path):
    assert ri.main(["--out", str(tmp_path), "--images", "2", "--clips", "1", "--frames", "3",
                    "--size", "128", "--seed", "3", "--model", str(ICT)]) == 0
    assert (tmp_path / "images" / "000001.png").is_file()
    lines = (tmp_path / "images" / "truth.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert len(lines) == 2 and record["file"] == "000000.png"
    assert len(record["landmarks"]) == 68 and len(record["occluded"]) == 68
    assert len(record["blendshapes"]) == 52 and record["blendshapes"]["tongueOut"] == 0
    assert len(record["quaternion"]) == 4 and record["image_size"] == [128, 128]
    # The nose tip's camera position projects onto landmark 30.
    x, y, z = record["nose_tip_mm"]
    cx, cy = record["principal_point"]
    projected = [record["focal"] * x / z + cx, record["focal"] * y / z + cy]
    assert np.allclose(projected, record["landmarks"][30], atol=0.01)
    assert (tmp_path / "clips" / "clip_000.mp4").stat().st_size > 0
    frames = [json.loads(x) for x in (tmp_path / "clips" / "clip_000.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in frames] == [0, 1, 2]
    assert frames[0]["identity"] == frames[2]["identity"]


def test_cli_missing_model(ri, tmp_path, capsys):
    assert ri.main(["--out", str(tmp_path), "--model", str(tmp_path / "nope.npz")]) == 2
    assert "ict_face.npz" in capsys.readouterr().err


def test_silhouette_jaw_labels_of_training_renders(ri, model):
    """tools/train_refiner.py teaches render jaws on their silhouette: the labels come from the very face
    render_image drew for that seed, the turned-away jaw moves out to the head's outline (its fixed
    vertices have turned behind it), the chin stays, and each crop gets them through its own affine,
    mirrored crops included."""
    spec = importlib.util.spec_from_file_location("train_refiner", REPO / "tools" / "train_refiner.py")
    tr = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "tools"))
    spec.loader.exec_module(tr)
    from tracker.landmarks68 import IBUG68_MIRROR

    for seed in (0, 2):  # turned to its own left (yaw +34°), then to its right (−55°)
        _, truth = ri.render_image(model, np.random.default_rng(seed), tr.RENDER_SIZE)
        points, jaw = tr.silhouette_jaw(seed)
        np.testing.assert_allclose(points, truth["landmarks"], atol=0.01)
        np.testing.assert_array_equal(jaw[8], points[8])
        across = (points[45] - points[36]) / np.linalg.norm(points[45] - points[36])  # subject's right to left
        side = 1.0 if truth["yaw"] > 0 else -1.0  # yaw > 0: turned to its own left, its left jaw away
        away = slice(9, 17) if side > 0 else slice(0, 8)
        outwards = side * float(((jaw[away] - points[away]) @ across).mean())
        assert outwards > 2.0, (seed, outwards)

    points, jaw = tr.silhouette_jaw(0)
    c, s = np.cos(0.3), np.sin(0.3)
    to_crop = lambda p: 0.4 * p @ np.array([[c, s], [-s, c]]) + np.array([10.0, -20.0])
    full = points.copy()
    full[:17] = jaw
    direct = to_crop(points)
    mirrored = to_crop(points)[IBUG68_MIRROR]
    mirrored[:, 0] = 191.0 - mirrored[:, 0]
    source = np.full(2, tr.RENDER)
    labelled = tr.with_silhouette_jaws(np.stack([direct, mirrored]), np.zeros(2, int), source)
    expect_mirrored = to_crop(full)[IBUG68_MIRROR]
    expect_mirrored[:, 0] = 191.0 - expect_mirrored[:, 0]
    np.testing.assert_allclose(labelled[0, :17], to_crop(jaw), atol=1e-3)
    np.testing.assert_allclose(labelled[1, :17], expect_mirrored[:17], atol=1e-3)
    np.testing.assert_array_equal(labelled[:, 17:], np.stack([direct, mirrored])[:, 17:].astype(np.float32))
    with pytest.raises(SystemExit, match="no affine image"):  # a crop of some other face
        tr.with_silhouette_jaws(np.stack([direct[::-1]]), np.zeros(1, int), source[:1])


def test_a_clip_can_put_the_face_beyond_the_frame_edge(ri, model, tmp_path):
    """render_clip's ``shift`` moves the head by where its landmarks would be, and the truth follows; with
    tools/evaluate_cut_renders.py's edge_shift, CUT of the face's landmark extent lies beyond the chosen edge while
    the clip is cut, and nothing moves while it is whole."""
    sys.path.insert(0, str(REPO / "tools"))
    import evaluate_cut_renders as cut

    focal = 1.3 * cut.SIZE
    points = model.mean[model.lm68].astype(np.float64) @ (euler_to_matrix(20, -5, 3) @ ri.MODEL_TO_CAMERA).T
    points += np.array([2.0, -1.0, 60.0])
    assert not cut.edge_shift("bottom")(0, points, focal).any()
    shares = [cut.share_cut(f) for f in range(cut.FRAMES)]
    assert shares[:30] == [0.0] * 30 and shares[110:] == [0.0] * 40 and shares[55:90] == [1.0] * 35
    assert np.all(np.diff(shares[29:55]) > 0) and np.all(np.diff(shares[89:110]) < 0)
    for side in cut.SIDES:
        axis = 1 if side in ("bottom", "top") else 0
        moved = points + cut.edge_shift(side)(60, points, focal)
        px = focal * moved[:, axis] / moved[:, 2] + (cut.SIZE - 1) / 2.0
        extent = px.max() - px.min()
        edge = cut.SIZE - 0.5 if side in ("bottom", "right") else -0.5
        beyond = abs(px.max() - edge if side in ("bottom", "right") else edge - px.min()) / extent
        assert beyond == pytest.approx(cut.CUT, abs=0.005), side
    truths = []
    for shift in (None, lambda frame, pts, f: np.array([0.0, 3.0 * frame, 0.0])):
        video, truth = tmp_path / "clip.mp4", tmp_path / "clip.jsonl"
        ri.render_clip(model, np.random.default_rng(5), 256, 2, video, truth, shift=shift)
        truths.append([json.loads(line) for line in truth.read_text().splitlines()])
    for frame in (0, 1):
        (plain, shifted) = (np.array(t[frame]["landmarks"]) for t in truths)
        down = shifted[:, 1] - plain[:, 1]
        # 3 cm down per frame: f·3/z px at the depth of the landmarks, between the nose tip's and the model origin's
        origin, nose = truths[0][frame]["translation_mm"][2] / 10.0, truths[0][frame]["nose_tip_mm"][2] / 10.0
        f = truths[0][frame]["focal"]
        assert np.abs(shifted[:, 0] - plain[:, 0]).max() < 0.5
        assert f * 3.0 * frame / origin - 0.05 <= down.mean() <= f * 3.0 * frame / nose + 0.05
        assert truths[1][frame]["translation_mm"][1] == pytest.approx(truths[0][frame]["translation_mm"][1]
                                                                      + 30.0 * frame, abs=0.01)
