#!/usr/bin/env python3
"""Refiner throughput at batch 64: ONNX Runtime on this CPU, and the same ONNX graph run by PyTorch on
this CPU or, with --device cuda, a CUDA GPU.

The issue asks for the batch-64 throughput on a CUDA GPU with ONNX Runtime or PyTorch as a stand-in
for TensorRT. Our machines' ONNX Runtime has no CUDA provider, so the GPU figure comes from PyTorch
running the committed graph (engines/refiner.onnx) node by node: `TorchGraph` below executes the
ONNX ops the refiner uses with torch functions, on any torch device. Before any timing, its outputs
are checked against ONNX Runtime's on the same inputs (a real parity check of the executor, not of
a re-trained copy). Inputs are random (feature maps, image) with landmarks inside the crop: the
refiner's cost does not depend on their values. Timings: medians over repeats of one batch, after
warm-up; CUDA timings end with a synchronize. Results go to BENCHMARKS.md (section "refiner-batch").

    python tools/bench_batch.py                  # CPU: ONNX Runtime, and torch if installed
    python tools/bench_batch.py --device cuda    # also the GPU (needs torch with CUDA)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import invocation, positive_int, publish

from tracker.backends import create_session, model_path
from tracker.refiner import REFINER_FILE

INPUT_SHAPES = {"features_48": (32, 48, 48), "features_24": (64, 24, 24), "landmarks": (68, 2), "image": (3, 192, 192)}
PARITY_TOLERANCE = 1e-3  # outputs are in crop pixels, weights in [0, 1] and camera parameters


def make_inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "features_48": rng.standard_normal((batch, *INPUT_SHAPES["features_48"])).astype(np.float32),
        "features_24": rng.standard_normal((batch, *INPUT_SHAPES["features_24"])).astype(np.float32),
        "landmarks": rng.uniform(40.0, 152.0, (batch, *INPUT_SHAPES["landmarks"])).astype(np.float32),
        "image": rng.uniform(0.0, 1.0, (batch, *INPUT_SHAPES["image"])).astype(np.float32),
    }


class TorchGraph:
    """An ONNX graph (opset 13) run op by op with torch on ``device``; the ops the refiner uses."""

    def __init__(self, path: Path, device: str) -> None:
        import torch

        self.torch, self.device = torch, torch.device(device)
        model = onnx.load(str(path))
        self.inputs = [i.name for i in model.graph.input]
        self.outputs = [o.name for o in model.graph.output]
        # Integer tensors are shapes and indices: kept on the CPU, where torch reads them without a device sync.
        self.constants = {i.name: self._tensor(numpy_helper.to_array(i)) for i in model.graph.initializer}
        self.nodes = list(model.graph.node)
        unknown = sorted({n.op_type for n in self.nodes} - set(self._OPS))
        if unknown:
            raise SystemExit(f"error: TorchGraph has no implementation of {', '.join(unknown)}")

    def _tensor(self, array: np.ndarray):
        t = self.torch.from_numpy(np.array(array))
        return t if not t.is_floating_point() else t.to(self.device)

    def _on(self, t, like):
        return t.to(like.device) if t.device != like.device else t

    def __call__(self, feeds: dict) -> list:
        env = dict(self.constants)
        env.update({k: self.torch.as_tensor(v, device=self.device) for k, v in feeds.items()})
        for node in self.nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            args = [env[name] if name else None for name in node.input]
            method = self._OPS.get(node.op_type)
            if method is None:
                raise SystemExit(f"error: TorchGraph has no implementation of {node.op_type}")
            result = getattr(self, method)(args, attrs)
            env[node.output[0]] = result
        return [env[name] for name in self.outputs]

    _OPS: ClassVar[dict[str, str]] = {op: f"_op_{op.lower()}" for op in (
        "Constant", "Mul", "Add", "Sub", "Div", "Unsqueeze", "Slice", "Cast", "Concat", "Reshape", "Clip",
        "Gather", "MatMul", "Shape", "Floor", "Relu", "Sigmoid", "Gemm", "Transpose", "CumSum", "Conv",
        "AveragePool")}

    def _binary(self, args, fn):
        a, b = args
        if a.device != b.device:  # a CPU shape tensor meeting a device tensor
            a, b = (self._on(a, b), b) if b.device.type != "cpu" else (a, self._on(b, a))
        return fn(a, b)

    def _op_constant(self, args, attrs):
        return self._tensor(numpy_helper.to_array(attrs["value"]))

    def _op_mul(self, args, attrs):
        return self._binary(args, lambda a, b: a * b)

    def _op_add(self, args, attrs):
        return self._binary(args, lambda a, b: a + b)

    def _op_sub(self, args, attrs):
        return self._binary(args, lambda a, b: a - b)

    def _op_div(self, args, attrs):
        integer = not (args[0].is_floating_point() or args[1].is_floating_point())
        return self._binary(args, lambda a, b: self.torch.div(a, b, rounding_mode="trunc" if integer else None))

    def _op_unsqueeze(self, args, attrs):
        x = args[0]
        for axis in sorted(int(a) % (x.dim() + len(args[1])) for a in args[1].tolist()):
            x = x.unsqueeze(axis)
        return x

    def _op_slice(self, args, attrs):
        x, starts, ends = args[0], args[1].tolist(), args[2].tolist()
        axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step <= 0:
                raise SystemExit("error: TorchGraph's Slice takes positive steps only")
            n = x.shape[axis]
            index[axis] = slice(max(0, min(n, start + n if start < 0 else start)),
                                max(0, min(n, end + n if end < 0 else end)), step)
        return x[tuple(index)]

    _DTYPES: ClassVar[dict[int, str]] = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 11: "float64"}

    def _op_cast(self, args, attrs):
        dtype = getattr(self.torch, self._DTYPES[attrs["to"]])
        x = args[0].to(dtype)
        return x.to(self.device) if x.is_floating_point() else x

    def _op_concat(self, args, attrs):
        device = next((a.device for a in args if a.device.type != "cpu"), args[0].device)
        return self.torch.cat([a.to(device) for a in args], dim=attrs["axis"])

    def _op_reshape(self, args, attrs):
        x, shape = args[0], args[1].tolist()
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)

    def _op_clip(self, args, attrs):
        x = args[0]
        low = args[1] if len(args) > 1 and args[1] is not None else None
        high = args[2] if len(args) > 2 and args[2] is not None else None
        return self.torch.clamp(x, None if low is None else low.item(), None if high is None else high.item())

    def _op_gather(self, args, attrs):
        data, indices = args
        axis = attrs.get("axis", 0) % data.dim()
        indices = self._on(indices, data) % data.shape[axis]
        flat = data.index_select(axis, indices.reshape(-1))
        return flat.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]))

    def _op_matmul(self, args, attrs):
        return self._binary(args, self.torch.matmul)

    def _op_shape(self, args, attrs):
        return self.torch.tensor(list(args[0].shape), dtype=self.torch.int64)

    def _op_floor(self, args, attrs):
        return self.torch.floor(args[0])

    def _op_relu(self, args, attrs):
        return self.torch.relu(args[0])

    def _op_sigmoid(self, args, attrs):
        return self.torch.sigmoid(args[0])

    def _op_gemm(self, args, attrs):
        a, b = args[0], args[1]
        a = a.T if attrs.get("transA", 0) else a
        b = b.T if attrs.get("transB", 0) else b
        out = attrs.get("alpha", 1.0) * (a @ b)
        if len(args) > 2 and args[2] is not None:
            out = out + attrs.get("beta", 1.0) * args[2]
        return out

    def _op_transpose(self, args, attrs):
        x = args[0]
        return x.permute(*attrs.get("perm", list(range(x.dim()))[::-1]))

    def _op_cumsum(self, args, attrs):
        x, axis = args[0], int(args[1].item())
        if attrs.get("reverse", 0):
            x = x.flip(axis)
        out = self.torch.cumsum(x, dim=axis)
        if attrs.get("exclusive", 0):
            out = out - x
        return out.flip(axis) if attrs.get("reverse", 0) else out

    def _padded(self, x, pads, value=0.0):
        half = len(pads) // 2
        if pads[:half] == pads[half:]:
            return x, pads[:half]
        # torch pads the last axis first: (left, right, top, bottom)
        flat = [p for k in reversed(range(half)) for p in (pads[k], pads[k + half])]
        return self.torch.nn.functional.pad(x, flat, value=value), [0] * half

    def _op_conv(self, args, attrs):
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        dims = w.dim() - 2
        x, padding = self._padded(x, list(attrs.get("pads", [0] * 2 * dims)))
        return self.torch.nn.functional.conv2d(x, w, bias, stride=attrs.get("strides", [1] * dims), padding=padding,
                                               dilation=attrs.get("dilations", [1] * dims), groups=attrs.get("group", 1))

    def _op_averagepool(self, args, attrs):
        kernel = attrs["kernel_shape"]
        pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
        if pads[:len(kernel)] != pads[len(kernel):]:  # torch's pooling pads both sides alike
            raise SystemExit("error: TorchGraph's AveragePool takes symmetric padding only")
        half = pads[:len(kernel)]
        return self.torch.nn.functional.avg_pool2d(args[0], kernel, stride=attrs.get("strides", kernel), padding=half,
                                                   ceil_mode=bool(attrs.get("ceil_mode", 0)),
                                                   count_include_pad=bool(attrs.get("count_include_pad", 0)))


def time_calls(call, repeats: int, sync=None) -> float:
    """Median ms of ``call()`` over ``repeats`` after three warm-up calls."""
    for _ in range(3):
        call()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def parity(graph: TorchGraph, session, batch: int = 4) -> float:
    """Largest absolute difference between TorchGraph's and ONNX Runtime's outputs on the same inputs."""
    import torch

    feeds = make_inputs(batch, seed=1)
    ours = session.run(feeds)
    with torch.inference_mode():
        theirs = graph(feeds)
    return max(float(np.abs(ours[name] - t.float().cpu().numpy()).max()) for name, t in zip(graph.outputs, theirs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device for the PyTorch rows")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        torch = None
    if args.device == "cuda" and (torch is None or not torch.cuda.is_available()):
        print("error: --device cuda needs PyTorch with a CUDA GPU it can see", file=sys.stderr)
        return 2
    path = model_path(REFINER_FILE)
    session = create_session(REFINER_FILE, "onnxruntime")
    feeds = make_inputs(args.batch)
    rows = [("ONNX Runtime, CPU (1 thread, as the tracker runs it)",
             time_calls(lambda: session.run(feeds), args.repeats))]
    notes = [] if torch is not None else ["PyTorch is not installed: no PyTorch rows (`pip install torch`)."]
    if torch is not None:
        graph = TorchGraph(path, args.device)
        diff = parity(graph, session)
        if diff > PARITY_TOLERANCE:
            print(f"error: the PyTorch executor differs from ONNX Runtime by {diff:.2g} (> {PARITY_TOLERANCE})",
                  file=sys.stderr)
            return 1
        notes.append(f"The PyTorch executor's outputs match ONNX Runtime's within {diff:.1g} (batch 4, same inputs).")
        device_feeds = {k: torch.as_tensor(v, device=args.device) for k, v in feeds.items()}
        sync = torch.cuda.synchronize if args.device == "cuda" else None
        name = torch.cuda.get_device_name() if sync else f"CPU ({torch.get_num_threads()} threads)"
        with torch.inference_mode():
            rows.append((f"PyTorch {torch.__version__}, {name}, the ONNX graph op by op",
                         time_calls(lambda: graph(device_feeds), args.repeats, sync)))
    lines = [(f"Refiner (`engines/{REFINER_FILE}`), batch {args.batch}, random inputs of the graph's shapes; "
              f"median of {args.repeats} calls after warm-up."), "",
             "| runtime | ms per batch | ms per face | faces per second |", "|---|---|---|---|"]
    for label, ms in rows:
        lines.append(f"| {label} | {ms:.2f} | {ms / args.batch:.3f} | {1000.0 * args.batch / ms:,.0f} |")
    lines += ["", *notes, "", f"Command: `{invocation()}`"]
    body = "\n".join(lines)
    publish("refiner-batch", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
