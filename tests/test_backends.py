"""All installed backends give the same outputs on the same real input."""

import cv2
import numpy as np
import pytest

from tracker.backends import BackendError, create_session, tensorrt_usable
from tracker.engines import as_inputs, run_in_chunks
from tracker.mesh import MESH_MODEL

MODELS = {
    "face_detection_short_range.onnx": (128, -1.0, 2.0),
    "face_detection_full_range.onnx": (192, -1.0, 2.0),
    MESH_MODEL: (192, 0.0, 1.0),
}


def face_batch(afw_dir, size: int, offset: float, span: float, n: int = 2) -> np.ndarray:
    images = sorted(afw_dir.glob("*.jpg"))[:n]
    crops = [cv2.resize(cv2.imread(str(p)), (size, size))[..., ::-1] for p in images]
    return (np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0) * span + offset


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_and_opencv_agree(afw_dir, name):
    batch = face_batch(afw_dir, *MODELS[name])
    ort = create_session(name, "onnxruntime")
    ocv = create_session(name, "opencv", outputs=ort.output_names)
    a, b = ort.run(batch), ocv.run(batch)
    for key in ort.output_names:
        assert a[key].shape == b[key].shape, key
        scale = max(1.0, float(np.abs(a[key]).max()))
        assert np.abs(a[key] - b[key]).max() <= 1e-3 * scale, key


def test_a_batch_over_the_maximum_runs_in_chunks_with_the_same_outputs(afw_dir):
    """What the TensorRT session does with more crops than its engine was built for (several faces and
    their mirrors): consecutive chunks, joined in order, give what one batch gives."""
    session = create_session(MESH_MODEL, "onnxruntime")
    batch = face_batch(afw_dir, *MODELS[MESH_MODEL], n=5)
    whole = session.run(batch)
    sizes = []

    def run(inputs):
        sizes.append(len(inputs[session.input_name]))
        return session.run(inputs)

    chunked = run_in_chunks(run, as_inputs(batch, session.input_name), 2)
    assert sizes == [2, 2, 1]
    for key in session.output_names:
        assert chunked[key].shape == whole[key].shape, key
        scale = max(1.0, float(np.abs(whole[key]).max()))
        assert np.abs(chunked[key] - whole[key]).max() <= 1e-4 * scale, key
    assert run_in_chunks(run, as_inputs(batch, session.input_name), 8).keys() == whole.keys()
    assert sizes[-1] == 5  # within the maximum: one call


def test_auto_picks_onnxruntime_without_tensorrt():
    if tensorrt_usable():
        pytest.skip("TensorRT is usable here")
    assert create_session(MESH_MODEL, "auto").backend == "onnxruntime"


def test_clear_errors():
    with pytest.raises(BackendError, match="unknown backend"):
        create_session(MESH_MODEL, "cuda-magic")
    with pytest.raises(BackendError, match="missing"):
        create_session("no_such_model.onnx", "onnxruntime")
    with pytest.raises(BackendError, match="no output"):
        create_session(MESH_MODEL, "onnxruntime", outputs=["nope"])
    if not tensorrt_usable():
        with pytest.raises(BackendError, match="TensorRT backend unavailable"):
            create_session(MESH_MODEL, "tensorrt")
