"""All installed backends give the same outputs on the same real input; TensorRT's failures (against
stand-ins for the tensorrt and pycuda packages, which cannot be installed here) are clear errors, and
``auto`` falls back from them to ONNX Runtime."""

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


def test_the_whole_tracker_on_opencv_gives_onnxruntimes_results(afw_dir):
    """`--backend opencv` end to end (detector, mesh, refiner and its mirror pass, fit, gaze) on real faces."""
    from tracker.pipeline import FaceTracker, TrackerConfig

    trackers = [FaceTracker(TrackerConfig(backend=b)) for b in ("onnxruntime", "opencv")]
    assert [t.backend for t in trackers] == ["onnxruntime", "opencv"]
    compared = 0
    for path in sorted(afw_dir.glob("*.jpg"))[:3]:
        image = cv2.imread(str(path))
        a, b = (t.process(image, still=True).faces for t in trackers)
        assert len(a) == len(b)
        for fa, fb in zip(a, b):
            iod = np.linalg.norm(fa.landmarks[36] - fa.landmarks[45])
            # Measured on these faces: 3e-4 IOD, 0.004, 0.005° and 0.002 at most.
            assert np.abs(fa.landmarks - fb.landmarks).max() < 0.002 * iod
            assert np.abs(fa.landmark_confidence - fb.landmark_confidence).max() < 0.02
            assert abs(fa.pose.yaw - fb.pose.yaw) < 0.1 and abs(fa.pose.pitch - fb.pose.pitch) < 0.1
            assert max(abs(fa.blendshapes[k] - fb.blendshapes[k]) for k in fa.blendshapes) < 0.01
            compared += 1
    assert compared >= 3


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


class _FakeCudaError(Exception):
    pass


def _fake_gpu_stack(monkeypatch, tmp_path, version="10.3.0", parses=True, builds=True, fp16_flag=True):
    """Stand-ins for the *third-party* ``tensorrt`` and ``pycuda`` modules (not installable here): a GPU that
    initialises, and a TensorRT whose parser or builder fails as asked. Our own backend code runs for real
    against them. Returns the record of what the builder was asked for."""
    import sys
    import types

    from tracker import tensorrt_backend

    asked = {"flags": [], "builder_flags": []}
    context = types.SimpleNamespace(push=lambda: None, pop=lambda: None)
    device = types.SimpleNamespace(retain_primary_context=lambda: context, compute_capability=lambda: (8, 0),
                                   name=lambda: "Fake GPU")
    driver = types.ModuleType("pycuda.driver")
    driver.Error = _FakeCudaError
    driver.init = lambda: None
    driver.Device = type("Device", (), {"__new__": lambda cls, i: device, "count": staticmethod(lambda: 1)})
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return types.SimpleNamespace(name="input", shape=(-1, 3, 192, 192))

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse(self, blob):
            return parses

        def get_error(self, i):
            return "unsupported operator GridSample"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            asked["builder_flags"].append(flag)

        def add_optimization_profile(self, profile):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            asked["flags"].append(flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            return b"engine" if builds else None

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder = Builder
    trt.OnnxParser = Parser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16") if fp16_flag else types.SimpleNamespace()
    # Deserialising fails: enough to reach the cache and the error path without a real engine.
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda blob: None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(tensorrt_backend, "CACHE_DIR", tmp_path / "trt_cache")
    return asked


def test_auto_falls_back_to_onnxruntime_with_a_warning_when_tensorrt_cannot_build(monkeypatch, tmp_path, caplog):
    _fake_gpu_stack(monkeypatch, tmp_path, parses=False)
    assert tensorrt_usable()
    with caplog.at_level("WARNING"):
        session = create_session(MESH_MODEL, "auto")
    assert session.backend == "onnxruntime"
    assert "TensorRT cannot parse" in caplog.text and "unsupported operator GridSample" in caplog.text
    assert "using ONNX Runtime" in caplog.text
    with pytest.raises(BackendError, match="TensorRT cannot parse .*GridSample"):
        create_session(MESH_MODEL, "tensorrt")  # asked for by name: the failure is the error


@pytest.mark.parametrize("builds", [True, False])
def test_tensorrt_build_failures_are_one_clear_error_and_leave_no_partial_cache(monkeypatch, tmp_path, builds):
    _fake_gpu_stack(monkeypatch, tmp_path, builds=builds)
    message = "could not load cached engine" if builds else "failed to build an engine"
    with pytest.raises(BackendError, match=message):
        create_session(MESH_MODEL, "tensorrt", max_batch=6)
    files = sorted(p.name for p in (tmp_path / "trt_cache").glob("*"))
    if builds:  # the engine was cached whole (then failed to load): one file, named for its batch, no partial
        assert len(files) == 1 and files[0].endswith("-b6.engine")
    else:
        assert files == []


def test_an_engine_is_cached_in_the_users_cache_folder_where_the_models_folder_cannot_be_written(monkeypatch,
                                                                                                  tmp_path, caplog):
    """A package installed read-only: the built engine goes to the user's cache folder; with no writable folder at
    all it is built and used uncached, with a warning."""
    from tracker import tensorrt_backend

    _fake_gpu_stack(monkeypatch, tmp_path)
    (tmp_path / "read-only").write_text("a file where the models' cache folder would go")
    monkeypatch.setattr(tensorrt_backend, "CACHE_DIR", tmp_path / "read-only" / "trt_cache")
    monkeypatch.setattr(tensorrt_backend, "_user_cache_dir", lambda: tmp_path / "user" / "trt_cache")
    with pytest.raises(BackendError, match="could not load cached engine .*user"):
        create_session(MESH_MODEL, "tensorrt")
    assert len(list((tmp_path / "user" / "trt_cache").glob("*.engine"))) == 1
    monkeypatch.setattr(tensorrt_backend, "_user_cache_dir", lambda: tmp_path / "read-only" / "user")
    with caplog.at_level("WARNING"), pytest.raises(BackendError, match="could not load the engine it built"):
        create_session(MESH_MODEL, "tensorrt")
    assert "it is built again at every start" in caplog.text


@pytest.mark.parametrize("version, explicit_flag, fp16_flag, fp16_used",
                         [("8.6.1", 1, True, True), ("10.3.0", 0, True, True), ("11.0.0", 0, False, False)])
def test_tensorrt_versions_get_their_network_and_precision_flags(monkeypatch, tmp_path, version, explicit_flag,
                                                                 fp16_flag, fp16_used):
    asked = _fake_gpu_stack(monkeypatch, tmp_path, version=version, fp16_flag=fp16_flag)
    with pytest.raises(BackendError):
        create_session(MESH_MODEL, "tensorrt")
    assert asked["flags"] == [explicit_flag]
    assert asked["builder_flags"] == (["FP16"] if fp16_used else [])
    assert ("fp16" if fp16_used else "fp32") in next((tmp_path / "trt_cache").glob("*.engine")).name


def test_engine_files_missing_damaged_or_old_name_the_file_and_the_fix(tmp_path):
    from tracker.engines import load_engine_arrays

    path = tmp_path / "calibration.npz"
    with pytest.raises(BackendError, match=r"calibration .*calibration\.npz is missing; rebuild it"):
        load_engine_arrays(path, "calibration", "rebuild it")
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BackendError, match=r"calibration\.npz cannot be read .*; rebuild it"):
        load_engine_arrays(path, "calibration", "rebuild it")
    np.savez(path, offsets=np.arange(3.0))
    arrays = load_engine_arrays(path, "calibration", "rebuild it")
    assert np.array_equal(arrays["offsets"], np.arange(3.0)) and arrays.get("scale") is None
    with pytest.raises(BackendError, match=r"has no 'scale' \(it is from another version\); rebuild it"):
        arrays["scale"]


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
@pytest.mark.parametrize("damage", ["cut short", "weights overwritten"])
def test_a_damaged_model_file_is_one_line_before_any_output_is_opened(afw_dir, tmp_path, damage, backend):
    """A damaged refiner.onnx (loaded lazily by the library) is loaded and run once at start-up by the command:
    cut short it does not load, with weights overwritten it loads and fails on the test frame. Either way one
    line naming it, exit 1, and the earlier JSON is left as it was."""
    import os
    import shutil
    import subprocess
    import sys

    from tracker.engines import ENGINES_DIR

    engines = tmp_path / "engines"
    shutil.copytree(ENGINES_DIR, engines)
    model = bytearray((ENGINES_DIR / "refiner.onnx").read_bytes())
    if damage == "cut short":
        model = model[:1000]
    else:  # 4 kB of noise in the middle of the weights: the graph still parses
        middle = len(model) // 2
        model[middle:middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (engines / "refiner.onnx").write_bytes(bytes(model))
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text('{"frame": 0}\n')
    repo = ENGINES_DIR.parent
    proc = subprocess.run([sys.executable, str(repo / "run_tracker.py"), "--source", str(next(afw_dir.glob("*.jpg"))),
                           "--json", str(earlier), "--quiet", "--backend", backend], capture_output=True, text=True,
                          cwd=repo, timeout=300,
                          env={**os.environ, "FACE_TRACKER_ENGINES": str(engines)}, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # the runtime's own error lines silenced
    assert proc.stderr.startswith("ERROR") and "refiner.onnx" in proc.stderr and "damaged" in proc.stderr
    assert earlier.read_text() == '{"frame": 0}\n'


def test_a_detector_whose_weights_are_damaged_fails_at_warm_up_not_by_finding_no_face(tmp_path):
    """NaN written over the detector's weights: it still runs, and would find no face in any frame, silently.
    warm_up checks its outputs as it does the other networks'."""
    import os
    import shutil
    import subprocess
    import sys

    from tracker.engines import ENGINES_DIR
    from tracker.pipeline import FaceTracker, TrackerConfig

    engines = tmp_path / "engines"
    shutil.copytree(ENGINES_DIR, engines)
    model = bytearray((ENGINES_DIR / "face_detection_short_range.onnx").read_bytes())
    middle = len(model) // 2
    model[middle:middle + 20000] = b"\xff" * 20000  # 0xffffffff is a float32 NaN
    (engines / "face_detection_short_range.onnx").write_bytes(bytes(model))
    code = ("import sys\nfrom tracker.engines import BackendError\nfrom tracker.pipeline import FaceTracker, "
            "TrackerConfig\ntry:\n    FaceTracker(TrackerConfig(backend='onnxruntime')).warm_up()\n"
            "except BackendError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          cwd=ENGINES_DIR.parent, env={**os.environ, "FACE_TRACKER_ENGINES": str(engines)})
    assert proc.returncode == 0, proc.stderr
    assert "face_detection_short_range.onnx" in proc.stdout and "damaged" in proc.stdout, proc.stdout
    FaceTracker(TrackerConfig(backend="onnxruntime")).warm_up()  # the shipped one passes


def test_a_damaged_68_point_map_without_the_refiner_is_one_line_before_any_output(afw_dir, tmp_path):
    """`--refiner none` still loads the 68-point map at start-up (the library loads it at the first face)."""
    import os
    import shutil
    import subprocess
    import sys

    from tracker.engines import ENGINES_DIR

    engines = tmp_path / "engines"
    shutil.copytree(ENGINES_DIR, engines)
    (engines / "mesh68_ridge.npz").write_bytes((ENGINES_DIR / "mesh68_ridge.npz").read_bytes()[:500])
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text('{"frame": 0}\n')
    repo = ENGINES_DIR.parent
    proc = subprocess.run([sys.executable, str(repo / "run_tracker.py"), "--source", str(next(afw_dir.glob("*.jpg"))),
                           "--refiner", "none", "--json", str(earlier), "--quiet"], capture_output=True, text=True,
                          cwd=repo, timeout=300, env={**os.environ, "FACE_TRACKER_ENGINES": str(engines)}, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "mesh68_ridge.npz" in proc.stderr and "fit_mesh68.py" in proc.stderr
    assert earlier.read_text() == '{"frame": 0}\n'
