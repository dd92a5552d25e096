"""Inference backends behind one interface.

Every model in ``engines/`` takes float32 inputs (one NCHW image, or the
refiner's named inputs: feature maps, landmarks and image) and has named
outputs. A backend session takes a batch and returns a dict of output arrays,
so the stages above never know which runtime served them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tracker.engines import ENGINES_DIR, BackendError, as_inputs, runtime_said

BACKENDS = ("auto", "tensorrt", "onnxruntime", "opencv")
log = logging.getLogger("tracker.backends")


class InferenceSession(Protocol):
    backend: str
    input_name: str
    output_names: list[str]

    def run(self, batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one float32 batch (the single input, or a dict for a multi-input model);
        return the requested outputs by name."""
        ...


def model_path(name: str) -> Path:
    """Path of a bundled ONNX model, with a clear error when it is missing."""
    path = ENGINES_DIR / name
    if not path.is_file():
        tool = ("python tools/train_refiner.py export" if name == "refiner.onnx"
                else "python tools/convert_tflite.py")  # the refiner is trained here, the rest converted
        raise BackendError(f"model file {path} is missing; regenerate it with `{tool}`")
    return path


class OnnxRuntimeSession:
    def __init__(self, path: Path, outputs: Sequence[str] | None, threads: int | None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread by default: at batch 1-2 these small models lose more to thread hand-offs
        # than a second core gains. The face mesh alone is 2.7 ms on one thread and 2.3 on two,
        # but on a 2-core machine the tracker read 4.7-5.5 ms a frame on one and 4.4-6.0 on two
        # for landmarks alone (five runs each, twice the CPU time), and 26 against 13-15 ms for
        # the default pipeline, whose three networks' threads spin while the next one runs.
        opts.intra_op_num_threads = threads or 1
        # Its own error lines (a node that fails on damaged weights) would add to the one line we report.
        opts.log_severity_level = 4
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.backend = "onnxruntime"
        self.input_name = self._session.get_inputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        self.output_names = list(outputs) if outputs else names
        unknown = set(self.output_names) - set(names)
        if unknown:
            raise BackendError(f"{path.name} has no output(s) {sorted(unknown)}")

    def run(self, batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self.output_names, as_inputs(batch, self.input_name))
        return dict(zip(self.output_names, values))


class OpenCvDnnSession:
    def __init__(self, path: Path, outputs: Sequence[str] | None) -> None:
        import cv2

        self._net = cv2.dnn.readNetFromONNX(str(path))  # a damaged file's cv2.error: create_session reports it
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.backend = "opencv"
        self.input_name = "input"
        self.output_names = list(outputs) if outputs else list(self._net.getUnconnectedOutLayersNames())

    def run(self, batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in as_inputs(batch, self.input_name).items():
            self._net.setInput(value, name)
        values = self._net.forward(self.output_names)
        return dict(zip(self.output_names, values))


def tensorrt_usable() -> bool:
    """True when TensorRT, pycuda and a CUDA GPU are all present (checked without building anything)."""
    try:
        from tracker import tensorrt_backend
    except ImportError:
        return False
    return tensorrt_backend.available()


def create_session(
    name: str,
    backend: str = "auto",
    outputs: Sequence[str] | None = None,
    threads: int | None = None,
    max_batch: int = 4,
) -> InferenceSession:
    """Open bundled model ``name`` (e.g. ``face_landmark_with_attention.onnx``) on ``backend``.

    ``auto`` picks TensorRT when it is usable and builds or loads the engine, else ONNX Runtime (with a
    warning when TensorRT is there but fails). ``max_batch`` is the batch TensorRT's engine is built for
    (larger batches run in chunks); the other runtimes take any batch.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    path = model_path(name)
    if backend == "tensorrt" or (backend == "auto" and tensorrt_usable()):
        from tracker import tensorrt_backend

        try:
            return tensorrt_backend.TensorRtSession(path, outputs, max_batch=max_batch)
        except BackendError as exc:
            if backend == "tensorrt":
                raise
            log.warning("%s; using ONNX Runtime for %s", exc, name)
    try:
        if backend == "opencv":
            return OpenCvDnnSession(path, outputs)
        return OnnxRuntimeSession(path, outputs, threads)
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a damaged model file fails inside the runtime, in its own words
        raise BackendError(f"cannot load model {path} with {backend if backend != 'auto' else 'onnxruntime'} "
                           f"({runtime_said(exc)}); the file may be damaged: reinstall the face tracker, "
                           "or restore the file from the project's engines/ folder") from None
