"""TensorRT backend: engine built from the bundled ONNX file, cached on disk.

Imported lazily by ``tracker.backends`` so nothing else needs TensorRT. The
engine is built once per (model hash, GPU, TensorRT version, precision, max
batch) and kept under ``engines/trt_cache/`` (or, where the models' folder cannot be written, as in a package
installed read-only, the user's ``~/.cache/face-tracker/trt_cache/``); later runs deserialise it.

Written against the documented Python API of TensorRT 8.5 to 11.x (name-based
tensors, ``execute_async_v3``); it has not run on the project's machines, where
TensorRT cannot be installed. Version differences it handles:
- before 10.0 a network is implicit-batch unless created with the explicit-batch flag;
- 11.0 builds strongly typed networks only and has no FP16 builder flag: the
  ONNX files are FP32, so there the engines are FP32 (10.x and earlier: FP16
  kernels where the GPU has fast FP16, as TensorRT chooses).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tracker.engines import ENGINES_DIR, BackendError, as_inputs, run_in_chunks, writable_folder

CACHE_DIR = ENGINES_DIR / "trt_cache"
log = logging.getLogger("tracker")


def _user_cache_dir() -> Path:
    """Where built engines go when CACHE_DIR cannot be written: the user's cache folder (XDG)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "face-tracker" / "trt_cache"


def _cache_dir() -> Path | None:
    """The first of CACHE_DIR and the user's cache folder that a file can be made in (made if missing), or None."""
    if writable_folder(CACHE_DIR):
        return CACHE_DIR
    try:
        user = _user_cache_dir()
    except RuntimeError:  # Path.home() with no home to find
        return None
    return user if writable_folder(user) else None


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


def _major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def _network_flags(trt) -> int:
    """Explicit batch: the only mode from TensorRT 10 on, a creation flag before it."""
    if _major(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def _fp16(trt, compute_capability: tuple[int, int]) -> bool:
    """Whether to let TensorRT pick FP16 kernels: only where the builder still has the flag (weak
    typing, before 11.0) and the GPU has FP16 arithmetic (Pascal, sm_60, on)."""
    return hasattr(trt.BuilderFlag, "FP16") and compute_capability >= (6, 0)


def _build_engine(trt, onnx_path: Path, max_batch: int, fp16: bool) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
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
        item = tuple(tensor.shape)[1:]
        if any(d < 0 for d in item):
            raise BackendError(f"{onnx_path.name}: input {tensor.name} has a dynamic dimension besides the batch")
        # Tuned for the face + mirror batch of one face, the tracker's usual call.
        profile.set_shape(tensor.name, (1, *item), (min(2, max_batch), *item), (max_batch, *item))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path.name}")
    return bytes(serialized)


class TensorRtSession:
    """One engine, one execution context, one CUDA stream; page-locked host and device buffers sized
    for ``max_batch`` (a larger batch runs in chunks of it)."""

    def __init__(self, onnx_path: Path, outputs: Sequence[str] | None, max_batch: int = 4) -> None:
        if max_batch < 1:
            raise BackendError(f"max_batch must be at least 1, got {max_batch}")
        trt, cuda = _import_trt()
        self._cuda = cuda
        pushed = False
        try:
            self._context_gpu = cuda.Device(0).retain_primary_context()
            self._context_gpu.push()
            pushed = True
            self._open(trt, cuda, onnx_path, outputs, max_batch)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 -- an API or driver failure becomes one clear line
            raise BackendError(f"TensorRT failed on {onnx_path.name}: {type(exc).__name__}: {exc}") from None
        finally:
            if pushed:
                self._context_gpu.pop()

    def _open(self, trt, cuda, onnx_path: Path, outputs: Sequence[str] | None, max_batch: int) -> None:
        device = cuda.Device(0)
        fp16 = _fp16(trt, tuple(device.compute_capability()))
        model_hash = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
        gpu = "".join(c if c.isalnum() else "_" for c in device.name())
        key = f"{onnx_path.stem}-{model_hash}-{gpu}-trt{trt.__version__}-{'fp16' if fp16 else 'fp32'}-b{max_batch}"
        folder = _cache_dir()
        cache = None if folder is None else folder / f"{key}.engine"
        if cache is not None and cache.is_file():
            blob = cache.read_bytes()
        else:
            blob = _build_engine(trt, onnx_path, max_batch, fp16)
            if cache is None:
                log.warning("TensorRT: no folder to keep the engine built for %s in (%s, nor the user's cache folder, "
                            "can be written): it is built again at every start", onnx_path.name, CACHE_DIR)
            else:
                # Written whole, then renamed: a crash or a second tracker building at once leaves no half engine.
                partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
                partial.write_bytes(blob)
                os.replace(partial, cache)
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
        if engine is None:
            if cache is None:
                raise BackendError(f"TensorRT could not load the engine it built for {onnx_path.name}")
            raise BackendError(f"TensorRT could not load cached engine {cache}; delete it to rebuild")
        self._engine = engine
        self._exec = engine.create_execution_context()
        self._stream = cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        all_outputs = [n for n in names if n not in self._inputs]
        self.backend = "tensorrt"
        self.input_name = self._inputs[0]
        self.output_names = list(outputs) if outputs else all_outputs
        unknown = set(self.output_names) - set(all_outputs)
        if unknown:
            raise BackendError(f"{onnx_path.name} has no output(s) {sorted(unknown)}")
        self._max_batch = max_batch
        # Shapes at the largest batch resolve every output dimension; the buffers are sized by them.
        for name in self._inputs:
            shape = list(engine.get_tensor_shape(name))
            shape[0] = max_batch
            if not self._exec.set_input_shape(name, shape):
                raise BackendError(f"{onnx_path.name}: the engine does not take {name} at batch {max_batch}")
        # Every output needs a bound address even when not requested. Host buffers are page-locked:
        # the asynchronous copies need it.
        self._host, self._device = {}, {}
        for name in names:
            shape = tuple(self._exec.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"{onnx_path.name}: tensor {name} has no fixed shape at batch {max_batch}")
            self._host[name] = cuda.pagelocked_empty(shape, trt.nptype(engine.get_tensor_dtype(name)))
            self._device[name] = cuda.mem_alloc(max(self._host[name].nbytes, 1))
            self._exec.set_tensor_address(name, int(self._device[name]))

    def run(self, batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = as_inputs(batch, self.input_name)
        if set(inputs) != set(self._inputs):
            raise BackendError(f"TensorRT engine takes input(s) {sorted(self._inputs)}, got {sorted(inputs)}")
        sizes = {len(v) for v in inputs.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise BackendError(f"TensorRT engine needs one batch size of at least 1 for all inputs, got {sorted(sizes)}")
        return run_in_chunks(self._run_batch, inputs, self._max_batch)

    def _run_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        n = next(iter(inputs.values())).shape[0]
        self._context_gpu.push()
        try:
            for name, value in inputs.items():
                if not self._exec.set_input_shape(name, value.shape):
                    raise BackendError(f"TensorRT engine does not take {name} of shape {value.shape}")
                staged = self._host[name][:n]
                staged[...] = value
                cuda.memcpy_htod_async(self._device[name], staged, self._stream)
            if not self._exec.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT failed to run the engine")
            views = {}
            for name in self.output_names:
                views[name] = self._host[name][:n]
                cuda.memcpy_dtoh_async(views[name], self._device[name], self._stream)
            self._stream.synchronize()
        finally:
            self._context_gpu.pop()
        # Copies: the page-locked buffers are reused by the next call.
        return {name: np.array(view) for name, view in views.items()}
