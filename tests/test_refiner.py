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
    from tracker.refiner import Refiner

    return Refiner("onnxruntime")


def test_output_shape_and_batch(refiner):
    rng = np.random.default_rng(0)
    f48 = rng.standard_normal((2, 32, 48, 48)).astype(np.float32)
    f24 = rng.standard_normal((2, 64, 24, 24)).astype(np.float32)
    s0 = rng.uniform(40, 150, (2, 68, 2)).astype(np.float32)
    image = rng.uniform(0, 1, (2, 3, 192, 192)).astype(np.float32)
    result = refiner.refine(f48, f24, s0, image)
    out, visibility, expression = result.landmarks, result.visibility, result.expression
    assert out.shape == (2, 68, 2)
    assert result.camera.shape == (2, 2, 4) and np.isfinite(result.camera).all()
    assert result.model_expression.shape == (2, 52)
    assert ((result.model_expression >= 0) & (result.model_expression <= 1)).all()
    assert visibility.shape == (2, 68)
    assert expression.shape == (2, 52)
    assert np.isfinite(out).all()
    assert ((visibility >= 0) & (visibility <= 1)).all()
    assert ((expression >= 0) & (expression <= 1)).all()
    from tracker.types import ARKIT_BLENDSHAPES

    assert (expression[:, ARKIT_BLENDSHAPES.index("tongueOut")] == 0).all()  # the face model has no tongue
    # Each face of a batch is refined on its own.
    one = refiner.refine(f48[1:], f24[1:], s0[1:], image[1:])
    assert np.allclose(out[1], one.landmarks[0], atol=1e-3)
    assert np.allclose(visibility[1], one.visibility[0], atol=1e-4)
    assert np.allclose(expression[1], one.expression[0], atol=1e-4)
    assert np.allclose(result.camera[1], one.camera[0], atol=1e-3)


def test_opencv_matches_onnxruntime(refiner):
    from tracker.refiner import Refiner

    cv = Refiner("opencv")  # `--backend opencv` runs the refiner: failing to load it is a failure
    rng = np.random.default_rng(1)
    f48 = rng.standard_normal((2, 32, 48, 48)).astype(np.float32)
    f24 = rng.standard_normal((2, 64, 24, 24)).astype(np.float32)
    s0 = rng.uniform(40, 150, (2, 68, 2)).astype(np.float32)
    image = rng.uniform(0, 1, (2, 3, 192, 192)).astype(np.float32)
    got, want = cv.refine(f48, f24, s0, image), refiner.refine(f48, f24, s0, image)
    assert np.abs(got.landmarks - want.landmarks).max() < 1e-2
    assert np.abs(got.visibility - want.visibility).max() < 1e-3
    assert np.abs(got.expression - want.expression).max() < 1e-3
    assert np.abs(got.camera - want.camera).max() < 1e-2
    assert np.abs(got.model_expression - want.model_expression).max() < 1e-3


def test_refined_closer_to_truth_on_afw(refiner):
    import cv2
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
        refined = refiner.refine(mesh.features[0][None], mesh.features[1][None], s0[None],
                                 mesh.pixels[None]).landmarks[0]
        refined = refined.astype(np.float64)
        iod = inter_ocular(item.points)
        before.append(np.linalg.norm(crop_points_to_image(s0, mesh.roi, 192) - item.points, axis=1).mean() / iod)
        after.append(np.linalg.norm(crop_points_to_image(refined, mesh.roi, 192) - item.points, axis=1).mean() / iod)
    assert len(before) >= 7, "the tracker found too few of the first 8 afw faces"
    assert np.mean(after) < np.mean(before)


def test_3d_branch_projects_its_own_camera_and_expression_onto_the_face(refiner):
    # S_p is the face model's 68 points through the branch's camera: the camera and expression outputs
    # reproduce it up to the identity (not an output; it moves these points by a few pixels), and S_p
    # lies on the annotated face (its jaw is the model's fixed vertices, so the inner 51 points are scored).
    import cv2
    from landmark_data import LANDMARKS68, inter_ocular, load_folder, match_face

    from tracker.backends import ENGINES_DIR
    from tracker.pipeline import FaceTracker, TrackerConfig
    from tracker.roi import crop_points_to_image

    folder = LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip("afw not available")
    model = np.load(ENGINES_DIR / "face_model.npz")
    mean, expression_basis = model["mean"][model["lm68"]], model["exp_basis"][:, model["lm68"]]
    tr = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=False))
    gaps, errors = [], []
    for item in load_folder(folder)[:8]:
        tr.reset()
        meshes = tr.detect_meshes(cv2.imread(str(item.image_path)), limit=8)
        index = match_face([tr.mapping.landmarks(m) for m in meshes], item.points)
        if index is None:
            continue
        mesh = meshes[index]
        out = refiner.refine(mesh.features[0][None], mesh.features[1][None],
                             tr.mapping.crop_landmarks(mesh.crop_points)[None], mesh.pixels[None])
        points = mean + np.tensordot(out.model_expression[0], expression_basis, 1)
        by_camera = points @ out.camera[0, :, :3].T + out.camera[0, :, 3]
        gaps.append(np.linalg.norm(by_camera - out.projected[0], axis=1).mean())
        image = crop_points_to_image(out.projected[0].astype(np.float64), mesh.roi, 192)
        errors.append(np.linalg.norm(image[17:] - item.points[17:], axis=1).mean() / inter_ocular(item.points))
    assert len(gaps) >= 7, "the tracker found too few of the first 8 afw faces"
    assert np.mean(gaps) < 2.5, gaps  # crop px, of a 192-px crop (1.0 measured)
    assert np.mean(errors) < 0.06, errors  # inter-ocular units (0.039 measured)


def test_faces_refined_together_as_each_alone(afw_dir):
    # The tracker refines all of a frame's faces and their mirrors in one batch; each face's result
    # must be what refining it alone gives.
    import cv2

    from tracker.pipeline import FaceTracker, TrackerConfig

    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))
    meshes = []
    for path in sorted(afw_dir.glob("*.jpg"))[:3]:
        tracker.reset()
        meshes += tracker.detect_meshes(cv2.imread(str(path)), limit=1)
    assert len(meshes) == 3 and all(m.mirror_crop_points is not None for m in meshes)
    together = tracker.mapping.predict_batch(meshes)
    for mesh, joint in zip(meshes, together):
        alone = tracker.mapping.predict(mesh)
        for field in ("direct", "mirror", "initial", "mirror_initial", "camera"):
            np.testing.assert_allclose(getattr(joint, field), getattr(alone, field), atol=1e-3, err_msg=field)
        for field in ("visibility", "mirror_visibility", "expression", "mirror_expression"):
            np.testing.assert_allclose(getattr(joint, field), getattr(alone, field), atol=1e-4, err_msg=field)
    # Faces differ, so a mix-up of rows would show.
    assert np.abs(together[0].direct - together[1].direct).max() > 1.0
    assert tracker.mapping.predict_batch([]) == []
