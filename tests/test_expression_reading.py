"""End to end: the tracker's blendshapes read what a rendered face does (refiner expression + 3D fit).

The faces are ICT renders with a seed outside every training range (tools/train_refiner.py uses
0-999 and 10,000 and up), an identity of zeros and a pose and light of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tracker.pose import euler_to_matrix

REPO = Path(__file__).resolve().parent.parent
ICT = REPO.parent / "shared" / "data" / "face_model" / "ict_face.npz"
SIZE = 384
SEED = 5000


@pytest.fixture(scope="module")
def scene():
    if not ICT.is_file():
        pytest.skip(f"shared face model {ICT} is absent")
    spec = importlib.util.spec_from_file_location("render_ict", REPO / "tools" / "render_ict.py")
    ri = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_ict", ri)
    spec.loader.exec_module(ri)
    from tracker.pipeline import FaceTracker, TrackerConfig

    return ri, ri.load_ict(ICT), FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1))


def render_face(scene, **weights: float) -> np.ndarray:
    """One still of the face doing ``weights`` (ARKit names), turned 15° to its own left."""
    ri, model, _ = scene
    rng = np.random.default_rng(SEED)
    light, background = ri.random_light(rng), ri.random_background(rng, SIZE)
    image, _, _ = ri.render(model, np.zeros(model.id_basis.shape[0], np.float32), ri.arkit_to_ict(model, weights),
                            euler_to_matrix(15.0, -5.0, 4.0), np.array([0.0, 0.0, 50.0]), 1.2 * SIZE, SIZE, light,
                            background, rng)
    return image


def track(tracker, image: np.ndarray):
    tracker.config.focal_px = 1.2 * SIZE
    faces = tracker.process(image, still=True).faces
    assert len(faces) == 1 and faces[0].blendshapes is not None
    return faces[0]


def read(scene, **weights: float) -> dict[str, float]:
    """The tracker's blendshapes for one still of the face doing ``weights`` (ARKit names)."""
    return track(scene[2], render_face(scene, **weights)).blendshapes


def test_blinks_jaw_smiles_and_brows_are_read(scene):
    neutral = read(scene)
    cases = {
        "eyeBlinkLeft": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
        "jawOpen": {"jawOpen": 0.7},
        "mouthSmileLeft": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0},
        "browInnerUp": {"browInnerUp": 1.0},
    }
    for shape, weights in cases.items():
        moved = read(scene, **weights)
        assert moved[shape] - neutral[shape] > 0.4, (shape, neutral[shape], moved[shape])


def test_a_wink_is_read_on_the_winking_side(scene):
    left = read(scene, eyeBlinkLeft=1.0)
    right = read(scene, eyeBlinkRight=1.0)
    assert left["eyeBlinkLeft"] - left["eyeBlinkRight"] > 0.3
    assert right["eyeBlinkRight"] - right["eyeBlinkLeft"] > 0.3


def test_reported_weights_are_the_fits_through_the_calibration(scene):
    """The blendshapes are the fit's own weights through tracker/expression.py's map at the fit's yaw, and
    the map lifts a strong smile that the fit under-reads."""
    from tracker.expression import ExpressionCalibration
    from tracker.pipeline import FaceTracker, TrackerConfig

    image = render_face(scene, mouthSmileLeft=0.9, mouthSmileRight=0.9, jawOpen=0.3)
    face = track(scene[2], image)
    raw = track(FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=1, calibrate_expression=False)), image)
    names = list(raw.blendshapes)
    expected = ExpressionCalibration.load(names).apply(np.array(list(raw.blendshapes.values())), raw.pose.yaw)
    np.testing.assert_allclose(list(face.blendshapes.values()), expected, atol=1e-9)
    assert face.pose.yaw == raw.pose.yaw
    for side in ("mouthSmileLeft", "mouthSmileRight"):
        assert face.blendshapes[side] > raw.blendshapes[side], side
