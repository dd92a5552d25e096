"""The trained refiner (engines/refiner.onnx): loads, keeps shapes, improves real afw crops, reads expressions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from tracker.backends import ENGINES_DIR

MODEL = ENGINES_DIR / "refiner.onnx"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="engines/refiner.onnx not built")


@pytest.fixture(scope="module")
def refiner():
    pytest.importorskip("onnxruntime")
    from tracker.refiner import Refiner

    return Refiner("onnxruntime")


def test_output_shape_and_batch(refiner):
    rng = np.random.default_rng(0)
    f48 = rng.standard_normal((2, 32, 48, 48)).astype(np.float32)
    f24 = rng.standard_normal((2, 64, 24, 24)).astype(np.float32)
    s0 = rng.uniform(40, 150, (2, 68, 2)).astype(np.float32)
    out, visibility, expression = refiner.refine(f48, f24, s0)
    assert out.shape == (2, 68, 2)
    assert visibility.shape == (2, 68)
    assert expression.shape == (2, 52)
    assert np.isfinite(out).all()
    assert ((visibility >= 0) & (visibility <= 1)).all()
    assert ((expression >= 0) & (expression <= 1)).all()
    from tracker.types import ARKIT_BLENDSHAPES

    assert (expression[:, ARKIT_BLENDSHAPES.index("tongueOut")] == 0).all()  # the face model has no tongue
    # Each face of a batch is refined on its own.
    one, one_visibility, one_expression = refiner.refine(f48[1:], f24[1:], s0[1:])
    assert np.allclose(out[1], one[0], atol=1e-3)
    assert np.allclose(visibility[1], one_visibility[0], atol=1e-4)
    assert np.allclose(expression[1], one_expression[0], atol=1e-4)


def test_opencv_matches_onnxruntime(refiner):
    cv2 = pytest.importorskip("cv2")
    from tracker.refiner import Refiner

    try:
        cv = Refiner("opencv")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"OpenCV DNN cannot load the refiner: {exc}")
    assert cv2 is not None
    rng = np.random.default_rng(1)
    f48 = rng.standard_normal((2, 32, 48, 48)).astype(np.float32)
    f24 = rng.standard_normal((2, 64, 24, 24)).astype(np.float32)
    s0 = rng.uniform(40, 150, (2, 68, 2)).astype(np.float32)
    (cv_out, cv_vis, cv_expr), (out, vis, expr) = cv.refine(f48, f24, s0), refiner.refine(f48, f24, s0)
    assert np.abs(cv_out - out).max() < 1e-2
    assert np.abs(cv_vis - vis).max() < 1e-3
    assert np.abs(cv_expr - expr).max() < 1e-3


def test_refined_closer_to_truth_on_afw(refiner):
    cv2 = pytest.importorskip("cv2")
    from landmark_data import LANDMARKS68, inter_ocular, load_folder, match_face

    from tracker.pipeline import FaceTracker, TrackerConfig
    from tracker.roi import crop_points_to_image

    folder = LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip("afw not available")
    items = load_folder(folder)[:8]
    # The tracker's mesh keeps its feature maps (refiner on); the refiner under test runs on them directly.
    tr = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=False))
    before, after = [], []
    for item in items:
        image = cv2.imread(str(item.image_path))
        tr.reset()
        meshes = tr.detect_meshes(image, limit=8)
        index = match_face([tr.mapping.landmarks(m) for m in meshes], item.points)
        if index is None:
            continue
        mesh = meshes[index]
        s0 = tr.mapping.crop_landmarks(mesh.crop_points)
        refined = refiner.refine(mesh.features[0][None], mesh.features[1][None], s0[None])[0][0].astype(np.float64)
        iod = inter_ocular(item.points)
        before.append(np.linalg.norm(crop_points_to_image(s0, mesh.roi, 192) - item.points, axis=1).mean() / iod)
        after.append(np.linalg.norm(crop_points_to_image(refined, mesh.roi, 192) - item.points, axis=1).mean() / iod)
    if len(before) < 5:
        pytest.skip("too few afw faces found")
    assert np.mean(after) < np.mean(before)
