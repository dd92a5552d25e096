"""Convert MediaPipe's bundled face models from TFLite to ONNX.

The generic converters (tflite2onnx, tf2onnx) fail on these graphs (fp16 weights, sparse
DENSIFY weights), so this is a small purpose-built one: it reads the flatbuffer with the
`tflite` schema bindings, folds constant DEQUANTIZE/DENSIFY chains into fp32 initializers and
emits an NCHW ONNX graph with a dynamic batch dimension that ONNX Runtime and OpenCV DNN
both run.

    python tools/convert_tflite.py [--out engines]

converts the models and checks each against the TFLite interpreter on a random input (the
attention mesh's custom ops, which the interpreter cannot run, against their kernels' transcriptions).
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
from flatbuffers import flexbuffers
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
    # The mesh with its lips and eyes replaced by the attention sub-networks' points (see refine()).
    refined: bool = False


@dataclass(frozen=True)
class ModelSpec:
    source: str  # path under mediapipe/modules
    target: str  # file name in the output directory
    input_range: tuple[float, float]  # from MediaPipe's ImageToTensorCalculator options
    outputs: tuple[Output, ...]
    # Written to the output directory. The plain mesh is not (the tracker runs the attention mesh) but
    # is still converted and checked: its layers are the attention mesh's, which the interpreter cannot run.
    shipped: bool = True


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
        shipped=False,
    ),
    ModelSpec(
        # The mesh FaceMesh runs with refine_landmarks=True: the same backbone shape, plus lips and
        # eye sub-networks that read crops of an early feature map (MediaPipe custom ops, below).
        "face_landmark/face_landmark_with_attention.tflite",
        "face_landmark_with_attention.onnx",
        (0.0, 1.0),
        (
            Output("output_mesh", "landmarks", flat=True, refined=True),
            Output("conv_faceflag", "face_flag", flat=True),
            Output("output_left_iris", "left_iris", flat=True),
            Output("output_right_iris", "right_iris", flat=True),
            Output("p_re_lu_5", "features_48"),
            Output("p_re_lu_8", "features_24"),
            Output("p_re_lu_11", "features_12"),
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


def zero_channel_embedding(channels: int, padded: int, groups: int = 1) -> np.ndarray:
    """Weights of a 1×1 conv (``groups`` groups) that keeps each group's ``channels`` channels and appends zero
    ones up to ``padded``: [groups·padded, channels, 1, 1], an identity block per group. The exact form of a
    channel padding."""
    weight = np.zeros((groups * padded, channels, 1, 1), np.float32)
    for g in range(groups):
        weight[g * padded + np.arange(channels), np.arange(channels)] = 1.0
    return weight


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
        # Constant-folding ops by output tensor: their outputs are weights, whatever the op order.
        self.folded_by = {}
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            if self.op_name(op) in ("DEQUANTIZE", "DENSIFY"):
                self.folded_by[op.OutputsAsNumpy()[0]] = k
        # Attention mesh: the subset of mesh vertices each crop matrix was built from, and the
        # region outputs (tensor, vertices) that replace those vertices' x, y in the mesh.
        self.region_of_matrix: dict[int, list[int]] = {}
        self.refinements: list[tuple[int, list[int]]] = []
        self.emitted: set[int] = set()  # tensors written so far (grouped custom ops look ahead)
        # Twin sub-networks (plan_twins): right op -> left op, right tensor -> left tensor, the left
        # tensors whose stacked form exists, and those that are also read outside the twins.
        self.twin_of: dict[int, int] = {}
        self.twin_tensor: dict[int, int] = {}
        self.twin_made: set[int] = set()
        self.leaves_twins: set[int] = set()

    # -- tensors -------------------------------------------------------------------------
    def shape(self, idx: int) -> list[int]:
        return self.graph.Tensors(idx).ShapeAsNumpy().tolist()

    def const(self, idx: int) -> np.ndarray | None:
        """The value of a constant tensor (stored buffer or folded), None for activations."""
        if idx in self.consts:
            return self.consts[idx]
        if idx in self.folded_by:  # a DEQUANTIZE/DENSIFY output, read before its op's turn
            op = self.graph.Operators(self.folded_by[idx])
            getattr(self, f"op_{self.op_name(op)}")(op, op.InputsAsNumpy().tolist(), idx)
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

    def emit_fused(self, op_type: str, inputs: list[str], out_idx: int, fused: int, output: str | None = None,
                   **attrs: object) -> None:
        """Emit `op_type` followed by TFLite's fused activation, writing tensor `out_idx` (or `output`)."""
        out = output or self.names[out_idx]
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

    def conv_weight(self, idx: int, depthwise: bool) -> np.ndarray:
        """A CONV_2D ([O, kh, kw, I]) or DEPTHWISE_CONV_2D ([1, kh, kw, C*M]) weight in ONNX's layout.

        TFLite's depthwise output channel c*M + m is ONNX group c's m-th filter, so [C*M, 1, kh, kw]
        needs no reorder."""
        weight = self.need_const(idx, "convolution weight").astype(np.float32)
        return weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(TO_NCHW)

    def conv_attrs(self, x_idx: int, o: object, kernel: tuple[int, int]) -> dict:
        """Kernel, strides, dilations and TFLite's padding of a (depthwise) convolution reading `x_idx`."""
        stride, dilation = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
        return {"kernel_shape": list(kernel), "strides": list(stride), "dilations": list(dilation),
                "pads": self.pads_2d(x_idx, o.Padding(), kernel, stride, dilation)}

    def pool_attrs(self, x_idx: int, o: tflite.Pool2DOptions) -> dict:
        # SAME pads of a max pool are ignored cells in both TFLite and ONNX, not zeros.
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        return {"kernel_shape": list(kernel), "strides": list(stride),
                "pads": self.pads_2d(x_idx, o.Padding(), kernel, stride)}

    def op_CONV_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.Conv2DOptions)
        weight = self.conv_weight(ins[1], depthwise=False)  # [O, I, kh, kw]
        inputs = [self.names[ins[0]], self.initializer(f"t{ins[1]}_oihw", weight)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.initializer(f"t{ins[2]}", self.need_const(ins[2], "bias").astype(np.float32)))
        self.emit_fused("Conv", inputs, out, o.FusedActivationFunction(),
                        **self.conv_attrs(ins[0], o, weight.shape[2:]))

    def op_DEPTHWISE_CONV_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.DepthwiseConv2DOptions)
        weight = self.conv_weight(ins[1], depthwise=True)  # [C*M, 1, kh, kw]
        channels = self.shape(ins[0])[3]
        if weight.shape[0] % channels:
            raise ConversionError("DEPTHWISE_CONV_2D output channels are not a multiple of input channels")
        inputs = [self.names[ins[0]], self.initializer(f"t{ins[1]}_dw", weight)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.initializer(f"t{ins[2]}", self.need_const(ins[2], "bias").astype(np.float32)))
        self.emit_fused("Conv", inputs, out, o.FusedActivationFunction(), group=channels,
                        **self.conv_attrs(ins[0], o, weight.shape[2:]))

    def op_MAX_POOL_2D(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        o = _options(op, tflite.Pool2DOptions)
        self.emit_fused("MaxPool", [self.names[ins[0]]], out, o.FusedActivationFunction(), **self.pool_attrs(ins[0], o))

    def op_ADD(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        rank = len(self.shape(out))
        self.emit_fused("Add", [self.operand(i, rank) for i in ins], out,
                        _options(op, tflite.AddOptions).FusedActivationFunction())

    def op_RELU(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        self.emit("Relu", [self.names[ins[0]]], self.names[out])

    def op_PRELU(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        alpha = self.need_const(ins[1], "PRELU alpha").astype(np.float32).reshape(-1)
        if alpha.size != self.shape(out)[3]:
            raise ConversionError("PRELU alpha must hold one slope per channel")
        self.emit_prelu(self.names[ins[0]], alpha, self.names[out], f"t{ins[1]}")

    def emit_prelu(self, x: str, alpha: np.ndarray, name: str, key: str) -> None:
        # PRelu(x) = x + (1 - a) * relu(-x), written with per-channel 1×1 depthwise convs:
        # ONNX Runtime runs its PRelu through a slow broadcast path outside its blocked
        # conv layout (3× slower on the face mesh); these convs stay in that layout,
        # with the Relu and the Add fused into them.
        channels = alpha.size
        depthwise = {"group": channels, "kernel_shape": [1, 1]}
        negate = self.initializer(f"neg_{channels}", np.full((channels, 1, 1, 1), -1.0, np.float32))
        scale = self.initializer(f"{key}_prelu", (1.0 - alpha).reshape(channels, 1, 1, 1))
        negated = self.emit("Conv", [x, negate], f"{name}_neg", **depthwise)
        relu = self.emit("Relu", [negated], f"{name}_relu")
        scaled = self.emit("Conv", [relu, scale], f"{name}_scaled", **depthwise)
        self.emit("Add", [scaled, x], name)

    def op_PAD(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        paddings = self.need_const(ins[1], "PAD paddings").astype(np.int64)  # [rank, 2] in NHWC
        if paddings.shape != (4, 2):
            raise ConversionError(f"PAD of a rank-{paddings.shape[0]} tensor is not supported")
        channels, extra = self.shape(ins[0])[3], int(paddings[3, 1])
        if extra > 0 and not paddings[:3].any() and paddings[3, 0] == 0:
            # Zero channels appended to a residual's skip: a 1×1 conv with an identity block,
            # exact, which keeps the skip and the Adds after it in ONNX Runtime's blocked conv
            # layout (a Pad takes them out of it: 0.3-0.4 ms of the face mesh's 3 ms went to
            # the layout changes around it).
            weight = self.initializer(f"pad_{channels}_{extra}", zero_channel_embedding(channels, channels + extra))
            self.emit("Conv", [self.names[ins[0]], weight], self.names[out], kernel_shape=[1, 1])
            return
        nchw = paddings[list(TO_NCHW)]
        pads = self.initializer(f"t{ins[1]}_nchw", np.concatenate([nchw[:, 0], nchw[:, 1]]))
        self.emit("Pad", [self.names[ins[0]], pads], self.names[out], mode="constant")

    def op_RESHAPE(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        in_shape, out_shape = self.shape(ins[0]), self.shape(out)
        if in_shape[0] != 1 or out_shape[0] != 1:
            raise ConversionError("RESHAPE must keep the batch dimension first")
        if len(out_shape) == 4 and out_shape[1] * out_shape[2] != 1:
            raise ConversionError("RESHAPE to a 4-D tensor with spatial extent is not supported")
        # Reshaping works on TFLite's NHWC element order, so feed it that order, not NCHW
        # (a 1×1 map is the same in both: [N, 1, 1, C] is NCHW [N, C, 1, 1]).
        tail = [out_shape[3], 1, 1] if len(out_shape) == 4 else out_shape[1:]
        self.reshape(self.to_tflite_order(ins[0]), tail, self.names[out])

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

    def op_MUL(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        rank = len(self.shape(out))
        self.emit_fused("Mul", [self.operand(i, rank) for i in ins], out,
                        _options(op, tflite.MulOptions).FusedActivationFunction())
        # A crop matrix scaled by a constant still belongs to its region.
        for i in ins:
            if i in self.region_of_matrix:
                self.region_of_matrix[out] = self.region_of_matrix[i]

    def op_STRIDED_SLICE(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        begin, end, strides = (self.need_const(i, "STRIDED_SLICE bounds").tolist() for i in ins[1:4])
        if any(begin) or end != self.shape(ins[0]) or any(s != 1 for s in strides):
            raise ConversionError("only the identity STRIDED_SLICE is supported")
        self.emit("Identity", [self.names[ins[0]]], self.names[out])

    # -- twin sub-networks -----------------------------------------------------------------
    # The attention mesh's two eye networks have one layout (other weights). Run as one network
    # on both eyes' crops stacked along channels, each layer a 2-group convolution, they take
    # half the nodes: on these small maps ONNX Runtime's time goes mostly to per-node overhead.
    _TWIN_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD")

    def layer_signature(self, op: tflite.Operator, name: str) -> tuple:
        """What must agree between two layers for them to run as one (besides their weights)."""
        if name == "CONV_2D":
            o = _options(op, tflite.Conv2DOptions)
            opts = (o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(),
                    o.FusedActivationFunction())
        elif name == "DEPTHWISE_CONV_2D":
            o = _options(op, tflite.DepthwiseConv2DOptions)
            opts = (o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(),
                    o.FusedActivationFunction(), o.DepthMultiplier())
        elif name == "MAX_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            opts = (o.Padding(), o.StrideH(), o.StrideW(), o.FilterHeight(), o.FilterWidth(),
                    o.FusedActivationFunction())
        elif name == "ADD":
            opts = (_options(op, tflite.AddOptions).FusedActivationFunction(),)
        elif name == "PAD":
            opts = tuple(self.need_const(op.InputsAsNumpy()[1], "PAD paddings").ravel().tolist())
        else:
            opts = ()
        shapes = tuple(tuple(self.shape(i)) for i in op.InputsAsNumpy().tolist() if i >= 0)
        return name, opts, shapes, tuple(self.shape(op.OutputsAsNumpy()[0]))

    def plan_twins(self) -> None:
        """Find pairs of sub-networks that start at two crops of one TransformTensorBilinear group
        and repeat each other layer by layer; fill self.twin_of (right op -> left op) and
        self.twin_tensor (right tensor -> left tensor)."""
        layers = []  # (k, op, name, activation inputs, output)
        crops = []
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            name = self.op_name(op)
            out = op.OutputsAsNumpy().tolist()[0]
            if name == "CUSTOM:TransformTensorBilinear":
                crops.append(out)
            elif name in self._TWIN_OPS:
                acts = [i for i in op.InputsAsNumpy().tolist() if i >= 0 and self.const(i) is None]
                layers.append((k, op, name, acts, out))
        nets = {}
        for crop in crops:  # the layers fed, through layers only, by this crop
            reached, net = {crop}, []
            for layer in layers:
                if any(i in reached for i in layer[3]):
                    if not all(i in reached for i in layer[3]):
                        net = None  # mixes in another branch: not a self-contained sub-network
                        break
                    net.append(layer)
                    reached.add(layer[4])
            nets[crop] = net
        used: set[int] = set()
        for a_pos, left in enumerate(crops):
            for right in crops[a_pos + 1:]:
                if left in used or right in used or not nets[left] or not nets[right]:
                    continue
                if len(nets[left]) != len(nets[right]):
                    continue
                mapping = {right: left}
                pairs = list(zip(nets[left], nets[right]))
                for (_, lo, ln, la, lout), (_, ro, rn, ra, rout) in pairs:
                    if self.layer_signature(lo, ln) != self.layer_signature(ro, rn) or [mapping.get(i) for i in ra] != la:
                        break
                    mapping[rout] = lout
                else:
                    used |= {left, right}
                    self.twin_tensor.update(mapping)
                    self.twin_of.update({r[0]: l[0] for l, r in pairs})
        # Twin outputs read by anything else (the sub-networks' heads) are split back after their layer.
        twins = set(self.twin_of) | set(self.twin_of.values())
        for k in range(self.graph.OperatorsLength()):
            if k in twins:
                continue
            for i in self.graph.Operators(k).InputsAsNumpy().tolist():
                if i in self.twin_tensor:
                    self.leaves_twins.add(self.twin_tensor[i])
                elif i in self.twin_tensor.values():
                    self.leaves_twins.add(i)

    def twin_name(self, left: int) -> str:
        """The stacked (left, right) tensor, made on first use for the crops themselves."""
        name = f"{self.names[left]}_twin"
        if left not in self.twin_made:
            right = next(r for r, l_ in self.twin_tensor.items() if l_ == left)
            self.emit("Concat", [self.names[left], self.names[right]], name, axis=1)
            self.twin_made.add(left)
        return name

    def emit_twin(self, op: tflite.Operator, ins: list[int], out: int, partner: tflite.Operator) -> None:
        """Layer `op` and its twin `partner` as one layer on the stacked tensors."""
        name = self.op_name(op)
        p_ins, p_out = partner.InputsAsNumpy().tolist(), partner.OutputsAsNumpy().tolist()[0]
        x = self.twin_name(ins[0])
        y = f"{self.names[out]}_twin"
        key = f"t{ins[1]}_t{p_ins[1]}" if len(ins) > 1 else ""
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            o = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            # Conv: [O, I, kh, kw] each -> [2O, I, kh, kw] in 2 groups; depthwise: [C, 1, kh, kw] -> [2C, 1, kh, kw].
            weight = np.concatenate([self.conv_weight(i[1], depthwise) for i in (ins, p_ins)])
            inputs = [x, self.initializer(f"{key}_twin_w", weight)]
            if len(ins) > 2 and ins[2] >= 0:
                bias = np.concatenate([self.need_const(i[2], "bias").astype(np.float32) for i in (ins, p_ins)])
                inputs.append(self.initializer(f"{key}_twin_b", bias))
            group = 2 * self.shape(ins[0])[3] if depthwise else 2
            self.emit_fused("Conv", inputs, out, o.FusedActivationFunction(), output=y, group=group,
                            **self.conv_attrs(ins[0], o, weight.shape[2:]))
        elif name == "PRELU":
            alpha = np.concatenate([self.need_const(i[1], "PRELU alpha").astype(np.float32).reshape(-1)
                                    for i in (ins, p_ins)])
            self.emit_prelu(x, alpha, y, key)
        elif name == "ADD":
            self.emit_fused("Add", [x, self.twin_name(ins[1])], out,
                            _options(op, tflite.AddOptions).FusedActivationFunction(), output=y)
        elif name == "MAX_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            self.emit_fused("MaxPool", [x], out, o.FusedActivationFunction(), output=y, **self.pool_attrs(ins[0], o))
        elif name == "PAD":
            paddings = self.need_const(ins[1], "PAD paddings")
            channels, padded = self.shape(ins[0])[3], self.shape(out)[3]
            if paddings[:3].any() or paddings[3, 0]:
                raise ConversionError("twin PAD must only add channels at the end")
            # Each half keeps its channels and gains zero ones: a 2-group 1×1 conv with 0/1 weights (exact).
            embed = zero_channel_embedding(channels, padded, groups=2)
            self.emit("Conv", [x, self.initializer(f"embed_{channels}_{padded}", embed)], y, group=2,
                      kernel_shape=[1, 1])
        else:
            raise ConversionError(f"{name} cannot run as twins")
        self.twin_made.add(out)
        if out in self.leaves_twins:
            # Read outside the twins too: split the stacked result back into the two tensors.
            half = self.shape(out)[3]
            for tensor, start in ((out, 0), (p_out, half)):
                self.span(y, start, start + half, 1, self.names[tensor])

    # -- MediaPipe custom ops (mediapipe/util/tflite/operations, version 2) --------------------
    # Written with plain ONNX ops so that every backend runs them. Boolean tests are arithmetic
    # (Ceil of a clipped difference) and there is no Where/And: OpenCV DNN lacks those.
    def custom_options(self, op: tflite.Operator) -> dict:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        if code.Version() != 2:
            raise ConversionError(f"custom op {code.CustomCode().decode()} version {code.Version()} "
                                  "is not supported (only version 2)")
        if not op.CustomOptionsLength():
            return {}
        return flexbuffers.Loads(op.CustomOptionsAsNumpy().tobytes())

    def const_name(self, name: str, value: float | list | np.ndarray, dtype: type = np.float32) -> str:
        return self.initializer(name, np.asarray(value, dtype))

    def span(self, source: str, start: int, stop: int, axis: int, output: str) -> str:
        """source[..., start:stop, ...] along `axis`."""
        return self.emit("Slice", [source, self.const_name(f"i{start}", [start], np.int64),
                                   self.const_name(f"i{stop}", [stop], np.int64),
                                   self.const_name(f"axis{axis}", [axis], np.int64)], output)

    def column(self, source: str, index: int, axis: int, output: str) -> str:
        """source[..., index:index+1, ...] along `axis` (keeps the rank)."""
        return self.span(source, index, index + 1, axis, output)

    def same_custom_ops(self, op: tflite.Operator) -> list[tuple[tflite.Operator, list[int], int]]:
        """All operators of `op`'s custom type, in graph order, as (op, inputs, output): the
        regions of the attention mesh, which are computed in one pass along a region axis."""
        name = self.op_name(op)
        group = []
        for k in range(self.graph.OperatorsLength()):
            other = self.graph.Operators(k)
            if self.op_name(other) == name:
                group.append((other, other.InputsAsNumpy().tolist(), other.OutputsAsNumpy().tolist()[0]))
        return group

    def ready(self, group: list[tuple[tflite.Operator, list[int], int]], what: str) -> None:
        # The group is emitted where its first op stands: every op's inputs must exist by then.
        for _, ins, _ in group:
            if any(self.const(i) is None and i not in self.emitted for i in ins):
                raise ConversionError(f"{what} ops read tensors made after the first of them")

    def op_CUSTOM_Landmarks2TransformMatrix(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        """Per region, the 4×4 matrix that maps a crop's pixel (x, y, 0, 1) to the input's: the subset's
        box in the frame rotated so that the left-right landmark line is at the target angle, scaled by
        (scale_x, scale_y) and centred (LandmarksToTransformMatrixV2). All regions in one pass."""
        if out in self.emitted:
            return
        group = self.same_custom_ops(op)
        self.ready(group, "Landmarks2TransformMatrix")
        options = [self.custom_options(g) for g, _, _ in group]
        subsets = [[int(i) for i in o["subset_idxs"]] for o in options]
        for (_, _, region_out), subset in zip(group, subsets):
            self.region_of_matrix[region_out] = subset
        longest = max(map(len, subsets))
        # Shorter subsets repeat their first vertex up to the longest: min and max are unchanged.
        index = np.array([s + [s[0]] * (longest - len(s)) for s in subsets], np.int64)  # [R, K]
        pair = np.array([[int(o["left_rotation_idx"]), int(o["right_rotation_idx"])] for o in options], np.int64)

        def per_region(tag: str, values: list[float]) -> str:  # a [1, R, 1, 1] constant
            return self.const_name(f"regions_{tag}", np.array(values, np.float32).reshape(1, -1, 1, 1))

        n = "regions"

        def gather(indices: np.ndarray, tag: str) -> str:  # [N, R, len, 3]
            sources = [self.names[i[0]] for _, i, _ in group]
            if len(set(sources)) == 1:
                return self.emit("Gather", [sources[0], self.const_name(f"{n}_{tag}_idx", indices, np.int64)],
                                 f"{n}_{tag}_pts", axis=1)
            # Each region reads its own landmark tensor (in this graph, equal copies of the mesh).
            parts = [self.emit("Gather", [source, self.const_name(f"{n}_{tag}{r}_idx", indices[r:r + 1], np.int64)],
                               f"{n}_{tag}{r}_pts", axis=1) for r, source in enumerate(sources)]
            return self.emit("Concat", parts, f"{n}_{tag}_pts", axis=1)
        subset_pts, pair_pts = gather(index, "sub"), gather(pair, "pair")
        xs, ys = (self.column(subset_pts, a, 3, f"{n}_sub_{'xy'[a]}") for a in (0, 1))  # [N, R, K, 1]
        left, right = (self.column(pair_pts, k, 2, f"{n}_{side}") for k, side in enumerate(("left", "right")))
        dx = self.emit("Sub", [self.column(right, 0, 3, f"{n}_rx"), self.column(left, 0, 3, f"{n}_lx")], f"{n}_dx")
        dy = self.emit("Sub", [self.column(right, 1, 3, f"{n}_ry"), self.column(left, 1, 3, f"{n}_ly")], f"{n}_dy")
        # rotation = target - atan2(dy, dx); its cosine and sine from the unit direction, no trig op.
        length = self.emit("Sqrt", [self.emit("Add", [self.emit("Mul", [dx, dx], f"{n}_dx2"),
                                                      self.emit("Mul", [dy, dy], f"{n}_dy2")], f"{n}_len2")],
                           f"{n}_len")
        ux = self.emit("Div", [dx, length], f"{n}_ux")
        uy = self.emit("Div", [dy, length], f"{n}_uy")
        targets = [float(o.get("target_rotation_radians", 0.0)) for o in options]
        ct, st = per_region("cos_t", np.cos(targets).tolist()), per_region("sin_t", np.sin(targets).tolist())
        # cos(t - a) = cos t ux + sin t uy; sin(t - a) = sin t ux - cos t uy
        c = self.emit("Add", [self.emit("Mul", [ux, ct], f"{n}_c1"), self.emit("Mul", [uy, st], f"{n}_c2")], f"{n}_c")
        s = self.emit("Sub", [self.emit("Mul", [ux, st], f"{n}_s1"), self.emit("Mul", [uy, ct], f"{n}_s2")], f"{n}_s")
        # Subset in the rotated frame: x' = c x - s y, y' = s x + c y; its box and the box's centre.
        xr = self.emit("Sub", [self.emit("Mul", [xs, c], f"{n}_xc"), self.emit("Mul", [ys, s], f"{n}_ys")], f"{n}_xr")
        yr = self.emit("Add", [self.emit("Mul", [xs, s], f"{n}_xs"), self.emit("Mul", [ys, c], f"{n}_yc")], f"{n}_yr")
        box = {}
        for axis_name, values in (("x", xr), ("y", yr)):
            hi = self.emit("ReduceMax", [values], f"{n}_{axis_name}max", axes=[2], keepdims=1)
            lo = self.emit("ReduceMin", [values], f"{n}_{axis_name}min", axes=[2], keepdims=1)
            box[axis_name] = (self.emit("Sub", [hi, lo], f"{n}_{axis_name}size"),
                              self.emit("Mul", [self.emit("Add", [hi, lo], f"{n}_{axis_name}sum"),
                                                self.const_name("half", 0.5)], f"{n}_{axis_name}mid"))
        (w, mx), (h, my) = box["x"], box["y"]
        # Box centre back in the input frame: R(-rotation) (mx, my).
        cx = self.emit("Add", [self.emit("Mul", [mx, c], f"{n}_cx1"), self.emit("Mul", [my, s], f"{n}_cx2")], f"{n}_cx")
        cy = self.emit("Sub", [self.emit("Mul", [my, c], f"{n}_cy1"), self.emit("Mul", [mx, s], f"{n}_cy2")], f"{n}_cy")
        sx = self.emit("Mul", [w, per_region("kx", [o["scale_x"] / o["output_width"] for o in options])], f"{n}_sx")
        sy = self.emit("Mul", [h, per_region("ky", [o["scale_y"] / o["output_height"] for o in options])], f"{n}_sy")
        # M = shift(centre) · R(-rotation) · scale · shift(-out/2): rows [a0 a1 0 a3], [b0 b1 0 b3].
        a0 = self.emit("Mul", [c, sx], f"{n}_a0")
        a1 = self.emit("Mul", [s, sy], f"{n}_a1")
        b0 = self.emit("Neg", [self.emit("Mul", [s, sx], f"{n}_nb0")], f"{n}_b0")
        b1 = self.emit("Mul", [c, sy], f"{n}_b1")
        half_w = per_region("half_w", [o["output_width"] / 2.0 for o in options])
        half_h = per_region("half_h", [o["output_height"] / 2.0 for o in options])

        def offset(centre: str, p: str, q: str, tag: str) -> str:
            shift = self.emit("Add", [self.emit("Mul", [p, half_w], f"{n}_{tag}w"),
                                      self.emit("Mul", [q, half_h], f"{n}_{tag}h")], f"{n}_{tag}shift")
            return self.emit("Sub", [centre, shift], f"{n}_{tag}")
        a3, b3 = offset(cx, a0, a1, "a3"), offset(cy, b0, b1, "b3")
        zero = self.emit("Mul", [a0, self.const_name("zero", 0.0)], f"{n}_zero")
        one = self.emit("Add", [zero, self.const_name("one", 1.0)], f"{n}_one")
        entries = [a0, a1, zero, a3, b0, b1, zero, b3, zero, zero, one, zero, zero, zero, zero, one]
        matrices = self.emit("Concat", entries, f"{n}_flat", axis=3)  # [N, R, 1, 16]
        for r, (_, _, region_out) in enumerate(group):
            self.reshape(self.column(matrices, r, 1, f"{n}_m{r}"), [4, 4], self.names[region_out])
            self.emitted.add(region_out)

    def op_CUSTOM_TransformTensorBilinear(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        """Bilinear crops of an NHWC map through 4×4 matrices (TransformTensorBilinearV2): output pixel
        (x, y) reads the input at M·(x + 0.5, y + 0.5, 0, 1) - 0.5, zero where that is outside.
        All regions (crops of one map, one size) in one pass."""
        if out in self.emitted:
            return
        group = self.same_custom_ops(op)
        self.ready(group, "TransformTensorBilinear")
        sizes = {(int(o["output_height"]), int(o["output_width"])) for o in map(self.custom_options, (g for g, _, _ in group))}
        if len(sizes) != 1 or len({i[0] for _, i, _ in group}) != 1:
            raise ConversionError("TransformTensorBilinear ops must crop one map to one size")
        ((out_h, out_w),) = sizes
        regions, pixels = len(group), out_h * out_w
        _, in_h, in_w, channels = self.shape(ins[0])
        n = "crops"
        rows = self.emit("Concat", [self.reshape(self.names[i[1]], [1, 16], f"{n}_m{r}")
                                    for r, (_, i, _) in enumerate(group)], f"{n}_m", axis=1)  # [N, R, 16]
        m = [self.column(rows, k, 2, f"{n}_m_{k}") for k in (0, 1, 3, 4, 5, 7)]  # each [N, R, 1]
        grid_y, grid_x = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
        gx = self.const_name(f"grid_x{out_h}x{out_w}", grid_x.reshape(1, 1, -1) + 0.5)
        gy = self.const_name(f"grid_y{out_h}x{out_w}", grid_y.reshape(1, 1, -1) + 0.5)
        minus_half = self.const_name("minus_half", -0.5)

        def sample_coord(p: str, q: str, t: str, tag: str) -> str:
            value = self.emit("Add", [self.emit("Mul", [p, gx], f"{n}_{tag}1"),
                                      self.emit("Mul", [q, gy], f"{n}_{tag}2")], f"{n}_{tag}12")
            return self.emit("Add", [self.emit("Add", [value, t], f"{n}_{tag}3"), minus_half], f"{n}_{tag}")
        tx, ty = sample_coord(m[0], m[1], m[2], "tx"), sample_coord(m[3], m[4], m[5], "ty")  # [N, R, P]
        zero, one = self.const_name("zero", 0.0), self.const_name("one", 1.0)

        def positive(value: str, tag: str) -> str:
            # 1 where value > 0 else 0, exactly: Ceil(Clip(value, 0, 1)).
            return self.emit("Ceil", [self.emit("Clip", [value, zero, one], f"{n}_{tag}c")], f"{n}_{tag}")
        limits = {"x": self.const_name(f"lim{in_w - 1}", in_w - 1.0), "y": self.const_name(f"lim{in_h - 1}", in_h - 1.0)}
        inside = one
        corners = {}
        for axis_name, t in (("x", tx), ("y", ty)):
            below = positive(self.emit("Neg", [t], f"{n}_{axis_name}neg"), f"{axis_name}below")
            above = positive(self.emit("Sub", [t, limits[axis_name]], f"{n}_{axis_name}over"), f"{axis_name}above")
            keep = self.emit("Sub", [one, self.emit("Add", [below, above], f"{n}_{axis_name}out")], f"{n}_{axis_name}in")
            inside = self.emit("Mul", [inside, keep], f"{n}_inside_{axis_name}")
            lo = self.emit("Floor", [t], f"{n}_{axis_name}0")
            frac = self.emit("Sub", [t, lo], f"{n}_{axis_name}f")
            # Clamped indices only keep the gathers in range: where they clamp, the weight is zero.
            lo_c = self.emit("Clip", [lo, zero, limits[axis_name]], f"{n}_{axis_name}0c")
            hi_c = self.emit("Clip", [self.emit("Add", [lo, one], f"{n}_{axis_name}1"), zero, limits[axis_name]],
                             f"{n}_{axis_name}1c")
            corners[axis_name] = ((lo_c, self.emit("Sub", [one, frac], f"{n}_{axis_name}w0")), (hi_c, frac))
        # Row of each corner in the [N*H*W, C] map: batch * H*W + y * W + x.
        ones = self.column(m[2], 0, 1, f"{n}_probe")  # [N, 1, 1], any per-item value: only its shape is used
        ones = self.emit("Add", [self.emit("Mul", [ones, zero], f"{n}_zeros"), one], f"{n}_ones")
        batch = self.emit("Sub", [self.emit("CumSum", [ones, self.const_name("axis0_scalar", 0, np.int64)],
                                            f"{n}_count"), one], f"{n}_batch")
        base = self.emit("Mul", [batch, self.const_name(f"hw{in_h * in_w}", float(in_h * in_w))], f"{n}_base")
        nhwc = self.emit("Transpose", [self.names[ins[0]]], f"{n}_nhwc", perm=list(TO_NHWC))
        table = self.reshape(nhwc, [channels], f"{n}_table")  # [N*H*W, C]
        width = self.const_name(f"w{in_w}", float(in_w))
        result = None
        for yi, (y_idx, y_w) in enumerate(corners["y"]):
            row = self.emit("Add", [base, self.emit("Mul", [y_idx, width], f"{n}_row{yi}")], f"{n}_rowb{yi}")
            for xi, (x_idx, x_w) in enumerate(corners["x"]):
                tag = f"{yi}{xi}"
                index = self.emit("Cast", [self.emit("Add", [row, x_idx], f"{n}_idxf{tag}")], f"{n}_idx{tag}",
                                  to=TensorProto.INT64)
                weight = self.emit("Mul", [self.emit("Mul", [y_w, x_w], f"{n}_w{tag}"), inside], f"{n}_wm{tag}")
                values = self.emit("Gather", [table, index], f"{n}_v{tag}", axis=0)  # [N, R, P, C]
                term = self.emit("Mul", [values, self.reshape(weight, [regions, pixels, 1], f"{n}_w3{tag}")],
                                 f"{n}_t{tag}")
                result = term if result is None else self.emit("Add", [result, term], f"{n}_sum{tag}")
        flat = self.reshape(result, [regions, pixels * channels], f"{n}_flat")
        for r, (_, _, region_out) in enumerate(group):
            crop = self.reshape(self.column(flat, r, 1, f"{n}_r{r}"), [out_h, out_w, channels], f"{n}_r{r}_nhwc")
            self.emit("Transpose", [crop], self.names[region_out], perm=list(TO_NCHW))
            self.emitted.add(region_out)

    def op_CUSTOM_TransformLandmarks(self, op: tflite.Operator, ins: list[int], out: int) -> None:
        """2-D points [N, K, 2] through the first two rows of a 4×4 matrix (TransformLandmarksV2)."""
        self.custom_options(op)  # version check; the op's options (dimensions) come from its shape
        _, count, dims = self.shape(ins[0])
        if dims != 2:
            raise ConversionError("TransformLandmarks of 3-D points is not supported")
        n = self.names[out]
        rows = self.reshape(self.names[ins[1]], [1, 16], f"{n}_m16")
        m = [self.column(rows, k, 2, f"{n}_m{k}") for k in (0, 1, 3, 4, 5, 7)]  # [N, 1, 1] each
        x = self.column(self.names[ins[0]], 0, 2, f"{n}_x")  # [N, K, 1]
        y = self.column(self.names[ins[0]], 1, 2, f"{n}_y")

        def affine(p: str, q: str, t: str, tag: str) -> str:
            value = self.emit("Add", [self.emit("Mul", [x, p], f"{n}_{tag}1"), self.emit("Mul", [y, q], f"{n}_{tag}2")],
                              f"{n}_{tag}12")
            return self.emit("Add", [value, t], f"{n}_{tag}")
        self.emit("Concat", [affine(m[0], m[1], m[2], "ox"), affine(m[3], m[4], m[5], "oy")], n, axis=2)
        subset = self.region_of_matrix.get(ins[1])
        if subset is not None and len(subset) == count:
            # The region's contour, one point per subset vertex: these refine the mesh.
            self.refinements.append((out, subset))

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

    def refine(self, mesh_idx: int, output: str) -> None:
        """Mesh points [N, P*3] with the attention regions' x, y in place of their vertices' (z kept),
        as MediaPipe's LandmarksRefinementCalculator does; a later region wins a shared vertex."""
        if not self.refinements:
            raise ConversionError("the model has no region outputs to refine the mesh with")
        count = int(np.prod(self.shape(mesh_idx)[1:])) // 3
        mesh = self.reshape(self.to_tflite_order(mesh_idx), [count, 3], "refine_mesh")
        sources = [self.span(mesh, 0, 2, 2, "refine_mesh_xy")]
        pick = np.arange(count)  # row of the concatenated [mesh; regions] that each vertex takes
        offset = count
        for out_idx, vertices in self.refinements:
            sources.append(self.names[out_idx])
            pick[vertices] = offset + np.arange(len(vertices))
            offset += len(vertices)
        stacked = self.emit("Concat", sources, "refine_all_xy", axis=1)
        xy = self.emit("Gather", [stacked, self.const_name("refine_pick", pick, np.int64)], "refine_xy", axis=1)
        z = self.column(mesh, 2, 2, "refine_z")
        self.reshape(self.emit("Concat", [xy, z], "refine_xyz", axis=2), [count * 3], output)

    def convert(self, doc: str) -> onnx.ModelProto:
        (input_idx,) = self.graph.InputsAsNumpy().tolist()
        self.names[input_idx] = "input"
        for out in self.spec.outputs:
            if not out.flat:
                self.names[self.tensor(out.tflite_name)] = out.onnx_name

        self.plan_twins()
        partner_of = {left: right for right, left in self.twin_of.items()}
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            if k in self.twin_of:
                continue  # emitted with its left twin
            if k in partner_of:
                (out,) = op.OutputsAsNumpy().tolist()
                self.emit_twin(op, op.InputsAsNumpy().tolist(), out, self.graph.Operators(partner_of[k]))
                self.emitted.add(out)
                continue
            name = self.op_name(op)
            handler = getattr(self, f"op_{name.replace(':', '_')}", None)
            if handler is None:
                raise ConversionError(f"unsupported TFLite op {name} (operator #{k})")
            (out,) = op.OutputsAsNumpy().tolist()
            handler(op, op.InputsAsNumpy().tolist(), out)
            self.emitted.add(out)

        outputs = []
        for spec in self.spec.outputs:
            idx = self.tensor(spec.tflite_name)
            shape = self.shape(idx)
            if spec.refined:
                self.refine(idx, spec.onnx_name)
                dims = [int(np.prod(shape[1:]))]
            elif spec.flat:
                size = int(np.prod(shape[1:]))
                self.reshape(self.to_tflite_order(idx), [size], spec.onnx_name)
                dims = [size]
            else:
                dims = [shape[3], shape[1], shape[2]] if len(shape) == 4 else shape[1:]
            outputs.append(helper.make_tensor_value_info(spec.onnx_name, TensorProto.FLOAT, ["batch", *dims]))

        _, h, w, c = self.shape(input_idx)
        # Drop what no output needs (the attention mesh's unrefined copy of the mesh, say).
        needed = {o.name for o in outputs}
        kept_nodes = []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output):
                kept_nodes.append(node)
                needed.update(node.input)
        self.nodes = kept_nodes[::-1]
        graph = helper.make_graph(
            self.nodes, Path(self.spec.target).stem,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, h, w])],
            outputs, [t for name, t in self.initializers.items() if name in needed])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="face-tracker tools/convert_tflite.py", doc_string=doc)
        model.ir_version = 8  # ONNX Runtime and OpenCV 4.x both read IR 8 (opset 13)
        onnx.checker.check_model(model, full_check=True)
        return model


def convert(data: bytes, spec: ModelSpec, doc: str = "") -> onnx.ModelProto:
    """Convert one TFLite flatbuffer to an ONNX model as described by `spec`."""
    return _Converter(data, spec).convert(doc)


# -- NumPy transcriptions of the MediaPipe custom ops' C++ kernels (the ONNX graphs' reference) ----
def reference_landmarks_to_transform_matrix(landmarks: np.ndarray, options: dict) -> np.ndarray:
    """LandmarksToTransformMatrixV2 on one [P, 3] landmark array, as its C++ kernel computes it."""
    left, right = landmarks[options["left_rotation_idx"]], landmarks[options["right_rotation_idx"]]
    rotation = options.get("target_rotation_radians", 0.0) - np.arctan2(right[1] - left[1], right[0] - left[0])
    c, s = np.cos(rotation), np.sin(rotation)
    points = landmarks[list(options["subset_idxs"]), :2].astype(np.float64)
    rotated = points @ np.array([[c, -s], [s, c]]).T
    hi, lo = rotated.max(axis=0), rotated.min(axis=0)
    middle = (hi + lo) / 2
    centre = np.array([[c, s], [-s, c]]) @ middle
    shift = np.eye(4)
    shift[:2, 3] = centre
    rotate = np.eye(4)
    rotate[:2, :2] = [[c, s], [-s, c]]
    scale = np.diag([options["scale_x"] * (hi[0] - lo[0]) / options["output_width"],
                     options["scale_y"] * (hi[1] - lo[1]) / options["output_height"], 1.0, 1.0])
    shift2 = np.eye(4)
    shift2[:2, 3] = [-options["output_width"] / 2.0, -options["output_height"] / 2.0]
    return shift @ rotate @ scale @ shift2


def reference_transform_tensor_bilinear(features: np.ndarray, matrix: np.ndarray, options: dict) -> np.ndarray:
    """TransformTensorBilinearV2 on one [H, W, C] map: [out_h, out_w, C], pixel by pixel."""
    height, width, channels = features.shape
    x_row, y_row = matrix[0].astype(np.float64).copy(), matrix[1].astype(np.float64).copy()
    x_row[3] += x_row[0] * 0.5 + x_row[1] * 0.5 - 0.5  # the kernel's pixel-centre correction
    y_row[3] += y_row[0] * 0.5 + y_row[1] * 0.5 - 0.5
    out = np.zeros((options["output_height"], options["output_width"], channels), np.float64)

    def read(h: int, w: int) -> np.ndarray:
        inside = 0 <= h < height and 0 <= w < width
        return features[h, w].astype(np.float64) if inside else np.zeros(channels)

    for oy in range(out.shape[0]):
        for ox in range(out.shape[1]):
            coord = np.array([ox, oy, 0.0, 1.0])
            tx, ty = x_row @ coord, y_row @ coord
            if tx < 0 or tx > width - 1 or ty < 0 or ty > height - 1:
                continue
            fx, fy = int(np.floor(tx)), int(np.floor(ty))
            right, lower = tx - fx, ty - fy
            upper_row = (1 - right) * read(fy, fx) + right * read(fy, fx + 1)
            lower_row = (1 - right) * read(fy + 1, fx) + right * read(fy + 1, fx + 1)
            out[oy, ox] = lower * lower_row + (1 - lower) * upper_row
    return out


def reference_transform_landmarks(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """TransformLandmarksV2 on one [K, 2] point array."""
    homogeneous = np.column_stack([points, np.zeros(len(points)), np.ones(len(points))])
    return homogeneous @ matrix[:2].T.astype(np.float64)


_CUSTOM_REFERENCE = {
    "Landmarks2TransformMatrix": lambda ins, o: reference_landmarks_to_transform_matrix(ins[0], o),
    "TransformTensorBilinear": lambda ins, o: reference_transform_tensor_bilinear(ins[0], ins[1], o),
    "TransformLandmarks": lambda ins, o: reference_transform_landmarks(ins[0], ins[1]),
}


def custom_op_parity(data: bytes, model: onnx.ModelProto, image: np.ndarray) -> dict[str, float]:
    """Per custom op type, max |ONNX - reference| relative to the output's range, each op fed the
    ONNX graph's own inputs to it for `image` ([3, H, W] in the model's input range)."""
    import onnxruntime as ort

    converter = _Converter(data, ModelSpec("", "", (0.0, 1.0), ()))
    graph = converter.graph
    probes = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        name = converter.op_name(op)
        if name.startswith("CUSTOM:"):
            ins = [i for i in op.InputsAsNumpy().tolist() if converter.const(i) is None]
            probes.append((name[7:], op, ins, op.OutputsAsNumpy().tolist()[0]))
    wanted = sorted({f"t{i}" for _, _, ins, out in probes for i in [*ins, out]})
    probe_model = onnx.ModelProto()
    probe_model.CopyFrom(model)
    probe_model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted)
    session = ort.InferenceSession(probe_model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(wanted, session.run(wanted, {"input": image[None]})))

    def tflite_layout(name: str) -> np.ndarray:  # one batch item, in the TFLite op's layout
        value = values[name][0]
        return value.transpose(1, 2, 0) if value.ndim == 3 and name in feature_maps else value

    feature_maps = {f"t{ins[0]}" for kind, _, ins, _ in probes if kind == "TransformTensorBilinear"}
    feature_maps |= {f"t{out}" for kind, _, _, out in probes if kind == "TransformTensorBilinear"}
    errors: dict[str, float] = {}
    for kind, op, ins, out in probes:
        options = flexbuffers.Loads(op.CustomOptionsAsNumpy().tobytes()) if op.CustomOptionsLength() else {}
        want = _CUSTOM_REFERENCE[kind]([tflite_layout(f"t{i}") for i in ins], options)
        got = tflite_layout(f"t{out}")
        scale = max(float(np.abs(want).max()), 1e-6)
        errors[kind] = max(errors.get(kind, 0.0), float(np.abs(got - want).max()) / scale)
    return errors


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
    from report import folder_to_write, import_mediapipe  # tools/ is on the path: this script's own folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=folder_to_write, default=Path(__file__).resolve().parent.parent / "engines",
                        help="output directory (default: the repository's engines/, wherever it is run from)")
    args = parser.parse_args(argv)

    mediapipe = import_mediapipe()  # tool-time only: the wheel is where the .tflite files live

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
            if any(out.refined for out in spec.outputs):
                # The interpreter cannot run MediaPipe's custom ops: check those against their
                # kernels' transcriptions instead (the other layers are the ones checked above).
                image = np.random.default_rng(0).uniform(*spec.input_range, (3, 192, 192)).astype(np.float32)
                error = max(custom_op_parity(data, model, image).values())
                against = "custom ops vs their C++ kernels, relative"
            else:
                error = parity(source, model, spec)
                against = "ORT - TFLite"
        except ConversionError as exc:
            print(f"{spec.target}: FAILED: {exc}", file=sys.stderr)
            failed = True
            continue
        if error >= PARITY_TOL:
            print(f"{spec.target}: FAILED: max |{against}| = {error:.2e} >= {PARITY_TOL}", file=sys.stderr)
            failed = True
            continue
        if spec.shipped:
            (args.out / spec.target).write_bytes(model.SerializeToString())
        ops = Counter(node.op_type for node in model.graph.node)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                     if t.data_type == TensorProto.FLOAT)
        op_list = ", ".join(f"{k}x{v}" for k, v in sorted(ops.items()))
        print(f"{spec.target}{'' if spec.shipped else ' (checked, not written)'}: "
              f"{len(model.graph.node)} ops ({op_list}), "
              f"{params:,} params, max |{against}| = {error:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
