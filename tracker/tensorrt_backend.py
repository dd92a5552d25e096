"""TensorRT backend: engine built from the bundled ONNX file, cached on disk.

Imported lazily by ``tracker.backends`` so nothing else needs TensorRT. The
engine is built once per (model hash, GPU, TensorRT version, precision, max
batch) and kept under ``engines/trt_cache/``; later runs deserialise it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tracker.engines import ENGINES_DIR, BackendError

CACHE_DIR = ENGINES_DIR / "trt_cache"


def _import_trt():
    """Import TensorRT and pycuda, turning their absence into one clear line."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("TensorRT backend unavailable: the 'tensorrt' Python package is not installed") from None
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendError("TensorRT backend unavailable: 'pycuda' is not installed") from None
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise BackendError("TensorRT backend unavailable: no CUDA GPU found")
    except cuda.Error as exc:
        raise BackendError(f"TensorRT backend unavailable: CUDA failed to initialise ({exc})") from None
    return trt, cuda


def available() -> bool:
    try:
        _import_trt()
    except BackendError:
        return False
    return True


def _build_engine(trt, onnx_path: Path, max_batch: int, fp16: bool) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        chw = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *chw), (min(2, max_batch), *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path.name}")
    return bytes(serialized)


class TensorRtSession:
    """One engine, one execution context, one CUDA stream, device buffers sized for ``max_batch``."""

    def __init__(self, onnx_path: Path, outputs: Sequence[str] | None, max_batch: int = 4) -> None:
        trt, cuda = _import_trt()
        self._cuda = cuda
        self._context_gpu = cuda.Device(0).retain_primary_context()
        self._context_gpu.push()
        try:
            device = cuda.Device(0)
            major, _minor = device.compute_capability()
            fp16 = major >= 6  # fast FP16 arithmetic from Pascal (sm_60) on
            model_hash = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
            gpu = "".join(c if c.isalnum() else "_" for c in device.name())
            key = f"{onnx_path.stem}-{model_hash}-{gpu}-trt{trt.__version__}-{'fp16' if fp16 else 'fp32'}-b{max_batch}"
            cache = CACHE_DIR / f"{key}.engine"
            if cache.is_file():
                blob = cache.read_bytes()
            else:
                blob = _build_engine(trt, onnx_path, max_batch, fp16)
                CACHE_DIR.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(blob)
            self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
            if self._engine is None:
                raise BackendError(f"TensorRT could not load cached engine {cache}; delete it to rebuild")
            self._exec = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            all_outputs = [n for n in names if n not in inputs]
            self.backend = "tensorrt"
            self.input_name = inputs[0]
            self.output_names = list(outputs) if outputs else all_outputs
            self._max_batch = max_batch
            # Every output needs a bound address even when not requested.
            self._buffers = {}
            for name in names:
                shape = list(self._engine.get_tensor_shape(name))
                shape[0] = max_batch
                nbytes = int(np.prod(shape)) * np.dtype(np.float32).itemsize
                self._buffers[name] = cuda.mem_alloc(nbytes)
                self._exec.set_tensor_address(name, int(self._buffers[name]))
        finally:
            self._context_gpu.pop()

    def run(self, batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        inputs = batch if isinstance(batch, dict) else {self.input_name: batch}
        inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        n = next(iter(inputs.values())).shape[0]
        if n > self._max_batch:
            raise BackendError(f"batch {n} exceeds the engine's maximum {self._max_batch}")
        self._context_gpu.push()
        try:
            for name, value in inputs.items():
                self._exec.set_input_shape(name, value.shape)
                cuda.memcpy_htod_async(self._buffers[name], value, self._stream)
            self._exec.execute_async_v3(self._stream.handle)
            results = {}
            for name in self.output_names:
                out = np.empty(tuple(self._exec.get_tensor_shape(name)), dtype=np.float32)
                cuda.memcpy_dtoh_async(out, self._buffers[name], self._stream)
                results[name] = out
            self._stream.synchronize()
        finally:
            self._context_gpu.pop()
        return results
