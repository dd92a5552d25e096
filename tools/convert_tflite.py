"""Convert MediaPipe's bundled face models from TFLite to ONNX.

The generic converters (tflite2onnx, tf2onnx) fail on these graphs (fp16 weights, sparse
DENSIFY weights), so this is a small purpose-built one: it reads the flatbuffer with the
`tflite` schema bindings, folds constant DEQUANTIZE/DENSIFY chains into fp32 initializers and
emits an NCHW ONNX graph with a dynamic batch dimension that ONNX Runtime and OpenCV DNN
both run.

    python tools/convert_tflite.py [--out engines]

converts all three models and checks each against the TFLite interpreter on a random input.
`mediapipe` (source of the .tflite files) and `ai_edge_litert` (reference interpreter) are
tool-time dependencies only; the converter itself never runs the interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.utils import opcode2name

OPSET = 13
PARITY_TOL = 1e-3
# NHWC axis -> NCHW axis, and the permutations between the two layouts.
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)

_NUMPY_DTYPE = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.INT64: np.int64,
}
_INDEX_VECTOR = {
    tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
    tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
    tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
}


class ConversionError(RuntimeError):
    """The TFLite graph uses something this converter does not support."""


@dataclass(frozen=True)
class Output:
    """One ONNX graph output taken from a TFLite tensor.

    4-D tensors come out NCHW unless `flat`, which reshapes to [N, -1] in TFLite's NHWC
    element order (what callers of the TFLite model expect, e.g. the landmark vector).
    """

    tflite_name: str
    onnx_name: str
    flat: bool = False


@dataclass(frozen=True)
class ModelSpec:
    source: str  # path under mediapipe/modules
    target: str  # file name in the output directory
    input_range: tuple[float, float]  # from MediaPipe's ImageToTensorCalculator options
    outputs: tuple[Output, ...]


MODELS = (
    ModelSpec(
        "face_detection/face_detection_short_range.tflite",
        "face_detection_short_range.onnx",
        (-1.0, 1.0),
        (Output("regressors", "regressors"), Output("classificators", "classificators")),
    ),
    ModelSpec(
        "face_detection/face_detection_full_range_sparse.tflite",
        "face_detection_full_range.onnx",
        (-1.0, 1.0),
        (Output("Identity", "regressors"), Output("Identity_1", "classificators")),
    ),
    ModelSpec(
        "face_landmark/face_landmark.tflite",
        "face_landmark.onnx",
        (0.0, 1.0),
        (
            Output("conv2d_21", "landmarks", flat=True),
            Output("conv2d_31", "face_flag", flat=True),
            # Backbone feature maps for the refiner's shape-indexed sampling.
            Output("p_re_lu_6", "features_48"),
            Output("p_re_lu_9", "features_24"),
            Output("p_re_lu_12", "features_12"),
        ),
    ),
)


def _index_vector(table: object, kind: int) -> np.ndarray:
    vec = _INDEX_VECTOR[kind]()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, dense_shape: tuple[int, ...],
            sparsity: tflite.SparsityParameters) -> np.ndarray:
    """Expand a TFLite sparse tensor to dense, as TFLite's FormatConverter::SparseToDense does.

    The sparse format walks `dim_metadata` level by level in `traversal_order`; a DENSE level
    enumerates 0..dense_size-1, a SPARSE_CSR level lists, for each parent position, the child
    indices array_indices[array_segments[p]:array_segments[p + 1]]. Levels past the tensor rank
    are block dimensions of the dims named in `block_map`. Values are stored in depth-first order
    of that walk, which is the row order of the level-by-level expansion below.
    """
    rank = len(dense_shape)
    order = sparsity.TraversalOrderAsNumpy().tolist()
    block_map = sparsity.BlockMapAsNumpy().tolist() if sparsity.BlockMapLength() else []
    levels = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
    # TFLite reads a block's size from dim_metadata[traversal_order[rank + b]].
    block_size = [levels[order[rank + b]].DenseSize() for b in range(len(block_map))]

    parent = np.zeros(1, np.int64)  # position of each partial path within its level
    coords = np.zeros((1, 0), np.int64)
    for level in levels:
        if level.Format() == tflite.DimensionType.DENSE:
            n = level.DenseSize()
            child = np.tile(np.arange(n, dtype=np.int64), len(parent))
            parent = np.repeat(parent * n, n) + child
            coords = np.column_stack([np.repeat(coords, n, axis=0), child])
        else:
            segments = _index_vector(level.ArraySegments(), level.ArraySegmentsType())
            indices = _index_vector(level.ArrayIndices(), level.ArrayIndicesType())
            starts = segments[parent]
            counts = segments[parent + 1] - starts
            # Concatenation of the ranges [start, start + count) without a Python loop.
            parent = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
            coords = np.column_stack([np.repeat(coords, counts, axis=0), indices[parent]])
    if len(coords) != values.size:
        raise ConversionError(f"sparse tensor lists {len(coords)} positions for {values.size} values")

    index = np.zeros((len(coords), rank), np.int64)
    for level in range(rank):
        index[:, order[level]] = coords[:, level]
    for level in range(rank, len(order)):
        block = order[level] - rank
        dim = block_map[block]
        index[:, dim] = index[:, dim] * block_size[block] + coords[:, level]
    dense = np.zeros(int(np.prod(dense_shape)), values.dtype)
    dense[np.ravel_multi_index(tuple(index.T), dense_shape)] = values.ravel()
    return dense.reshape(dense_shape)


def same_pads(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (before, after); the odd pixel goes after, as in ComputePaddingWithOffset."""
    out_size = -(-in_size // stride)
    total = max((out_size - 1) * stride + (kernel - 1) * dilation + 1 - in_size, 0)
    return total // 2, total - total // 2


def _options(op: tflite.Operator, cls: type) -> object:
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


class _Converter:
    def __init__(self, data: bytes, spec: ModelSpec) -> None:
        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise ConversionError("only single-subgraph models are supported")
        self.graph = self.model.Subgraphs(0)
        self.spec = spec
        self.consts: dict[int, np.ndarray] = {}  # folded constant tensors
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.by_name = {self.graph.Tensors(i).Name().decode(): i for i in range(self.graph.TensorsLength())}
        self.names = {i: f"t{i}" for i in range(self.graph.TensorsLength())}

    # -- tensors -------------------------------------------------------------------------
    def shape(self, idx: int) -> list[int]:
        return self.graph.Tensors(idx).ShapeAsNumpy().tolist()

    def const(self, idx: int) -> np.ndarray | None:
        """The value of a constant tensor (stored buffer or folded), None for activations."""
        if idx in self.consts:
            return self.consts[idx]
        tensor = self.graph.Tensors(idx)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer.DataLength() == 0:
            return None
        if tensor.Type() not in _NUMPY_DTYPE:
            raise ConversionError(f"tensor {tensor.Name().decode()!r} has unsupported type {tensor.Type()}")
        values = buffer.DataAsNumpy().view(_NUMPY_DTYPE[tensor.Type()])
        shape = tuple(self.shape(idx))
        if tensor.Sparsity() is not None:
            value = densify(values, shape, tensor.Sparsity())
        else:
            value = values.reshape(shape)
        self.consts[idx] = value
        return value

    def need_const(self, idx: int, what: str) -> np.ndarray:
        value = self.const(idx)
        if value is None:
            raise ConversionError(f"{what} must be a constant tensor")
        return value

    def initializer(self, name: str, value: np.ndarray) -> str:
        # Shared TFLite constants (e.g. one paddings tensor used by every PAD) become one initializer.
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def operand(self, idx: int, rank: int) -> str:
        """An elementwise operand: activation name, or a constant broadcast-converted to NCHW."""
        value = self.const(idx)
        if value is None:
            return self.names[idx]
        value = value.astype(np.float32)
        if rank == 4:
            value = value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(TO_NCHW)
        return self.initializer(f"t{idx}_operand", value)

    # -- emission ------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        name = f"n{len(self.nodes)}_{op_type}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def emit_fused(self, op_type: str, inputs: list[str], out_idx: int, fused: int, **attrs: object) -> None:
        """Emit `op_type` followed by TFLite's fused activation, writing tensor `out_idx`."""
        out = self.names[out_idx]
        if fused == tflite.ActivationFunctionType.NONE:
            self.emit(op_type, inputs, out, **attrs)
        elif fused == tflite.ActivationFunctionType.RELU:
            self.emit("Relu", [self.emit(op_type, inputs, f"{out}_pre", **attrs)], out)
        elif fused == tflite.ActivationFunctionType.RELU6:
            bounds = [self.initializer("relu6_min", np.array(0, np.float32)),
                      self.initializer("relu6_max", np.array(6, np.float32))]
            self.emit("Clip", [self.emit(op_type, inputs, f"{out}_pre", **attrs), *bounds], out)
        else:
            raise ConversionError(f"unsupported fused activation {fused} on {op_type}")

    def to_tflite_order(self, idx: int) -> str:
        """Name of tensor `idx` in TFLite's element order (NHWC for 4-D activations)."""
        shape = self.shape(idx)
        if len(shape) == 4 and shape[1] * shape[2] > 1:  # with 1x1 spatial NCHW == NHWC order
            return self.emit("Transpose", [self.names[idx]], f"{self.names[idx]}_nhwc", perm=list(TO_NHWC))
        return self.names[idx]

    def reshape(self, source: str, tail: list[int], output: str) -> str:
        # -1 for the batch keeps the graph batch-agnostic (every other dim is static).
        target = self.initializer(f"shape_{'x'.join(map(str, tail))}", np.array([-1, *tail], np.int64))
        return self.emit("Reshape", [source, target], output)

    def pads_2d(self, idx: int, padding: int, kernel: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int] = (1, 1)) -> list[int]:
        if padding == tflite.Padding.VALID:
            return [0, 0, 0, 0]
        _, h, w, _ = self.shape(idx)
        (top, bottom), (left, right) = (same_pads(h, kernel[0], stride[0], dilation[0]),
                                        same_pads(w, kernel[1], stride[1], dilation[1]))
        return [top, left, bottom, right]

    # -- operators -----------------------------------------------------------------------
    def op_DEQUANTIZE(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        # fp16 weight storage: fold into an fp32 constant rather than emitting a Cast.
        value = self.need_const(ins[0], "DEQUANTIZE input")
        if value.dtype != np.float16:
            raise ConversionError(f"DEQUANTIZE of {value.dtype} is not supported (only float16)")
        self.consts[out] = value.astype(np.float32)

    def op_DENSIFY(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        self.consts[out] = self.need_const(ins[0], "DENSIFY input")  # const() densified it

    def op_CONV_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.Conv2DOptions)
        weight = self.need_const(ins[1], "CONV_2D weight").astype(np.float32)  # [O, kh, kw, I]
        kernel, stride = weight.shape[1:3], (o.StrideH(), o.StrideW())
        dilation = (o.DilationHFactor(), o.DilationWFactor())
        inputs = [self.names[ins[0]], self.initializer(f"t{ins[1]}_oihw", weight.transpose(TO_NCHW))]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.initializer(f"t{ins[2]}", self.need_const(ins[2], "bias").astype(np.float32)))
        self.emit_fused("Conv", inputs, out, o.FusedActivationFunction(), kernel_shape=list(kernel),
                        strides=list(stride), dilations=list(dilation),
                        pads=self.pads_2d(ins[0], o.Padding(), kernel, stride, dilation))

    def op_DEPTHWISE_CONV_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.DepthwiseConv2DOptions)
        weight = self.need_const(ins[1], "DEPTHWISE_CONV_2D weight").astype(np.float32)  # [1, kh, kw, C*M]
        channels = self.shape(ins[0])[3]
        if weight.shape[3] % channels:
            raise ConversionError("DEPTHWISE_CONV_2D output channels are not a multiple of input channels")
        # TFLite output channel c*M + m is ONNX group c's m-th filter, so [C*M, 1, kh, kw] needs no reorder.
        kernel, stride = weight.shape[1:3], (o.StrideH(), o.StrideW())
        dilation = (o.DilationHFactor(), o.DilationWFactor())
        inputs = [self.names[ins[0]], self.initializer(f"t{ins[1]}_dw", weight.transpose(3, 0, 1, 2))]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.initializer(f"t{ins[2]}", self.need_const(ins[2], "bias").astype(np.float32)))
        self.emit_fused("Conv", inputs, out, o.FusedActivationFunction(), group=channels,
                        kernel_shape=list(kernel), strides=list(stride), dilations=list(dilation),
                        pads=self.pads_2d(ins[0], o.Padding(), kernel, stride, dilation))

    def op_MAX_POOL_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.Pool2DOptions)
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        # SAME pads of a max pool are ignored cells in both TFLite and ONNX, not zeros.
        self.emit_fused("MaxPool", [self.names[ins[0]]], out, o.FusedActivationFunction(),
                        kernel_shape=list(kernel), strides=list(stride),
                        pads=self.pads_2d(ins[0], o.Padding(), kernel, stride))

    def op_ADD(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        rank = len(self.shape(out))
        self.emit_fused("Add", [self.operand(i, rank) for i in ins], out,
                        _options(op, tflite.AddOptions).FusedActivationFunction())

    def op_RELU(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        self.emit("Relu", [self.names[ins[0]]], self.names[out])

    def op_PRELU(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        alpha = self.const(ins[1])
        if alpha is None:
            raise ConversionError("PRELU alpha must be a constant tensor")
        alpha = alpha.astype(np.float32).reshape(-1)
        channels = self.shape(out)[3]
        if alpha.size != channels:
            raise ConversionError("PRELU alpha must hold one slope per channel")
        # PRelu(x) = x + (1 - a) * relu(-x), written with per-channel 1×1 depthwise convs:
        # ONNX Runtime runs its PRelu through a slow broadcast path outside its blocked
        # conv layout (3× slower on the face mesh); these convs stay in that layout,
        # with the Relu and the Add fused into them.
        x, name = self.names[ins[0]], self.names[out]
        depthwise = {"group": channels, "kernel_shape": [1, 1]}
        negate = self.initializer(f"neg_{channels}", np.full((channels, 1, 1, 1), -1.0, np.float32))
        scale = self.initializer(f"t{ins[1]}_prelu", (1.0 - alpha).reshape(channels, 1, 1, 1))
        negated = self.emit("Conv", [x, negate], f"{name}_neg", **depthwise)
        relu = self.emit("Relu", [negated], f"{name}_relu")
        scaled = self.emit("Conv", [relu, scale], f"{name}_scaled", **depthwise)
        self.emit("Add", [scaled, x], name)

    def op_PAD(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        paddings = self.need_const(ins[1], "PAD paddings").astype(np.int64)  # [rank, 2] in NHWC
        if paddings.shape != (4, 2):
            raise ConversionError(f"PAD of a rank-{paddings.shape[0]} tensor is not supported")
        nchw = paddings[list(TO_NCHW)]
        pads = self.initializer(f"t{ins[1]}_nchw", np.concatenate([nchw[:, 0], nchw[:, 1]]))
        self.emit("Pad", [self.names[ins[0]], pads], self.names[out], mode="constant")

    def op_RESHAPE(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        in_shape, out_shape = self.shape(ins[0]), self.shape(out)
        if in_shape[0] != 1 or out_shape[0] != 1:
            raise ConversionError("RESHAPE must keep the batch dimension first")
        if len(out_shape) == 4:
            raise ConversionError("RESHAPE to a 4-D tensor is not supported")
        # Reshaping works on TFLite's NHWC element order, so feed it that order, not NCHW.
        self.reshape(self.to_tflite_order(ins[0]), out_shape[1:], self.names[out])

    def op_CONCATENATION(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.ConcatenationOptions)
        rank = len(self.shape(out))
        axis = o.Axis() % rank
        if rank == 4:
            axis = NHWC_TO_NCHW_AXIS[axis]
        self.emit_fused("Concat", [self.operand(i, rank) for i in ins], out, o.FusedActivationFunction(),
                        axis=axis)

    def op_RESIZE_BILINEAR(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.ResizeBilinearOptions)
        if o.AlignCorners() and o.HalfPixelCenters():
            raise ConversionError("RESIZE_BILINEAR with both align_corners and half_pixel_centers")
        mode = "align_corners" if o.AlignCorners() else "half_pixel" if o.HalfPixelCenters() else "asymmetric"
        _, in_h, in_w, _ = self.shape(ins[0])
        out_h, out_w = self.need_const(ins[1], "RESIZE_BILINEAR size").tolist()
        # Scales, not sizes: sizes would have to spell out the (dynamic) batch.
        scales = np.array([1, 1, out_h / in_h, out_w / in_w], np.float32)
        if int(in_h * scales[2]) != out_h or int(in_w * scales[3]) != out_w:
            raise ConversionError(f"RESIZE_BILINEAR {in_h}x{in_w}->{out_h}x{out_w} is not an exact scale")
        self.emit("Resize", [self.names[ins[0]], "", self.initializer(f"scales_{out}", scales)],
                  self.names[out], mode="linear", coordinate_transformation_mode=mode)

    def op_DEPTH_TO_SPACE(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        # TFLite's NHWC depth-to-space reads channel (i*bs + j)*C + c, which is ONNX's DCR mode.
        self.emit("DepthToSpace", [self.names[ins[0]]], self.names[out],
                  blocksize=_options(op, tflite.DepthToSpaceOptions).BlockSize(), mode="DCR")

    # -- driver --------------------------------------------------------------------------
    def op_name(self, op: tflite.Operator) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite.BuiltinOperator.CUSTOM:
            return f"CUSTOM:{code.CustomCode().decode()}"
        return opcode2name(builtin)

    def tensor(self, name: str) -> int:
        if name not in self.by_name:
            raise ConversionError(f"no tensor named {name!r} in the TFLite model")
        return self.by_name[name]

    def convert(self, doc: str) -> onnx.ModelProto:
        (input_idx,) = self.graph.InputsAsNumpy().tolist()
        self.names[input_idx] = "input"
        for out in self.spec.outputs:
            if not out.flat:
                self.names[self.tensor(out.tflite_name)] = out.onnx_name

        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            name = self.op_name(op)
            handler = getattr(self, f"op_{name}", None)
            if handler is None:
                raise ConversionError(f"unsupported TFLite op {name} (operator #{k})")
            (out,) = op.OutputsAsNumpy().tolist()
            handler(op, op.InputsAsNumpy().tolist(), out)

        outputs = []
        for spec in self.spec.outputs:
            idx = self.tensor(spec.tflite_name)
            shape = self.shape(idx)
            if spec.flat:
                size = int(np.prod(shape[1:]))
                self.reshape(self.to_tflite_order(idx), [size], spec.onnx_name)
                dims = [size]
            else:
                dims = [shape[3], shape[1], shape[2]] if len(shape) == 4 else shape[1:]
            outputs.append(helper.make_tensor_value_info(spec.onnx_name, TensorProto.FLOAT, ["batch", *dims]))

        _, h, w, c = self.shape(input_idx)
        graph = helper.make_graph(
            self.nodes, Path(self.spec.target).stem,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, h, w])],
            outputs, list(self.initializers.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="face-tracker tools/convert_tflite.py", doc_string=doc)
        model.ir_version = 8  # ONNX Runtime and OpenCV 4.x both read IR 8 (opset 13)
        onnx.checker.check_model(model, full_check=True)
        return model


def convert(data: bytes, spec: ModelSpec, doc: str = "") -> onnx.ModelProto:
    """Convert one TFLite flatbuffer to an ONNX model as described by `spec`."""
    return _Converter(data, spec).convert(doc)


def tflite_to_onnx_layout(value: np.ndarray, output: Output) -> np.ndarray:
    """Bring a TFLite tensor into the layout of the matching ONNX output."""
    if output.flat:
        return value.reshape(len(value), -1)
    return value.transpose(TO_NCHW) if value.ndim == 4 else value


def parity(tflite_path: Path, model: onnx.ModelProto, spec: ModelSpec, seed: int = 0) -> float:
    """Max |ONNX Runtime - TFLite interpreter| over all outputs on one random input in range."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Keep intermediates so feature-map outputs can be compared too. Without the default XNNPACK
    # delegate: it swallows the DEQUANTIZE/DENSIFY steps, so their preserved tensors are stale.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interp = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    lo, hi = spec.input_range
    x = np.random.default_rng(seed).uniform(lo, hi, detail["shape"]).astype(np.float32)
    interp.set_tensor(detail["index"], x)
    interp.invoke()
    index = {t["name"]: t["index"] for t in interp.get_tensor_details()}

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([o.onnx_name for o in spec.outputs], {"input": x.transpose(TO_NCHW)})
    return max(float(np.abs(g - tflite_to_onnx_layout(interp.get_tensor(index[o.tflite_name]), o)).max())
               for g, o in zip(got, spec.outputs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("engines"),
                        help="output directory (default: engines)")
    args = parser.parse_args(argv)

    import mediapipe  # tool-time only: the wheel is where the .tflite files live

    modules = Path(os.path.dirname(mediapipe.__file__)) / "modules"
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for spec in MODELS:
        source = modules / spec.source
        try:
            data = source.read_bytes()
            doc = (f"Converted from mediapipe {mediapipe.__version__} modules/{spec.source} "
                   f"(sha256 {hashlib.sha256(data).hexdigest()}); Apache-2.0, see LICENSE-mediapipe.txt.")
            model = convert(data, spec, doc)
            error = parity(source, model, spec)
        except ConversionError as exc:
            print(f"{spec.target}: FAILED: {exc}", file=sys.stderr)
            failed = True
            continue
        if error >= PARITY_TOL:
            print(f"{spec.target}: FAILED: max |ORT - TFLite| = {error:.2e} >= {PARITY_TOL}", file=sys.stderr)
            failed = True
            continue
        (args.out / spec.target).write_bytes(model.SerializeToString())
        ops = Counter(node.op_type for node in model.graph.node)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                     if t.data_type == TensorProto.FLOAT)
        op_list = ", ".join(f"{k}x{v}" for k, v in sorted(ops.items()))
        print(f"{spec.target}: {len(model.graph.node)} ops ({op_list}), "
              f"{params:,} params, max |ORT - TFLite| = {error:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
