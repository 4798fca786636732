"""Which ONNX graphs the runtime runs: exactly the shapes textgen-train's exporters write.

A denylist over a general ONNX executor cannot be made safe (a `Loop` with a huge trip
count hangs, a `ConstantOfShape` allocates gigabytes, a function body hides anything), so
this is an allowlist, next to the artifact contract it belongs to:

- the file parses in `onnx_proto`'s strict form (no external or sparse data, no functions,
  no subgraphs, no training info, canonical protobuf);
- IR version and operator sets are the ones we write; every node is one of the operators
  our exporters emit for that precision, with only the attributes they set;
- the nodes form a graph in order (each input defined before use, each name defined once)
  from the inputs vocab.json declares to the outputs it declares;
- shapes are inferred for every tensor with the batch and the time axis as symbols, and no
  tensor may be larger than the largest weight times batch times time. With these operators
  that bounds both memory and work by the model's own size and the caller's input: nothing
  can loop, and nothing can allocate what the weights do not already account for.

The trainer imports OPSET and IR_VERSION from here, so what is written and what is accepted
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .artifact import ONE_HOT_OP_CHARS, ModelSpec
from .onnx_proto import (
    DTYPES,
    FLOAT,
    INT8,
    INT32,
    INT64,
    UINT8,
    Attribute,
    Model,
    Node,
    ProtoError,
)

# Opset 17 / IR 8 load in every onnxruntime from 1.14 on; newer opsets buy nothing for an RNN.
OPSET = 17
IR_VERSION = 8
# onnxruntime's contrib domain: the int8 LSTM kernel (DynamicQuantizeLSTM) lives there.
MS_DOMAIN = "com.microsoft"
MS_OPSET = 1
# Cell activations the exporters map onto ONNX's RNN operators (Keras name -> ONNX name).
ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
# A graph with more nodes than this is not ours (16 stacked layers use about 100).
MAX_NODES = 2_000

Dim = int | str  # an int, or a symbol: "batch" or "time"


class GraphRuleError(Exception):
    """The graph is not one our exporters write (the message says what differs)."""


class GraphMismatchError(GraphRuleError):
    """The graph's inputs or outputs are not the ones vocab.json declares (files from two
    different exports, or an edited vocab.json)."""


@dataclass(frozen=True)
class Value:
    """What the checker knows about one tensor: element type, shape, (for small integer
    constants such as axes) the values, and whether it is a constant of the file (a weight,
    or a weight dequantized once at load)."""

    dtype: int
    shape: tuple[Dim, ...]
    const: tuple[int, ...] | None = None
    initializer: bool = False

    @property
    def static(self) -> int:
        """Product of the known dimensions: the size per batch row and time step."""
        n = 1
        for d in self.shape:
            if isinstance(d, int):
                n *= d
        return n


def _fail(problem: str) -> GraphRuleError:
    return GraphRuleError(problem)


def _attrs(node: Node, allowed: dict[str, int]) -> dict[str, object]:
    """The node's attributes by name; any attribute not in `allowed` (name -> type) fails."""
    out: dict[str, object] = {}
    for attr in node.attributes:
        if attr.name not in allowed or attr.type != allowed[attr.name]:
            raise _fail(f"{node.op_type} node {node.name!r} has attribute {attr.name!r}")
        if attr.name in out:
            raise _fail(f"{node.op_type} node {node.name!r} sets {attr.name!r} twice")
        out[attr.name] = Attribute.value(attr)
    return out


def _need(value: Value, dtype: int, rank: int | None, what: str) -> None:
    if value.dtype != dtype or (rank is not None and len(value.shape) != rank):
        raise _fail(f"{what} is {_describe(value)}, expected {_dtype_name(dtype)} rank {rank}")


def _dtype_name(dtype: int) -> str:
    return DTYPES[dtype].__name__ if dtype in DTYPES else str(dtype)


def _describe(value: Value) -> str:
    return f"{_dtype_name(value.dtype)}{list(value.shape)}"


def _broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...], what: str) -> tuple[Dim, ...]:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + a
    b = (1,) * (n - len(b)) + b
    out: list[Dim] = []
    for x, y in zip(a, b, strict=True):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise _fail(f"{what}: shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(out)


# --- one function per operator: inputs (None = absent optional) -> outputs ----------------

Rule = Callable[[Node, list["Value | None"]], list["Value | None"]]


def _transpose(node: Node, ins: list[Value | None]) -> list[Value | None]:
    (x,) = _present(node, ins, 1)
    perm = list(_attrs(node, {"perm": 7}).get("perm", range(len(x.shape))[::-1]))
    if sorted(perm) != list(range(len(x.shape))):
        raise _fail(f"Transpose {node.name!r}: perm {perm} is not a permutation")
    return [Value(x.dtype, tuple(x.shape[p] for p in perm))]


def _gather(node: Node, ins: list[Value | None]) -> list[Value | None]:
    table, ids = _present(node, ins, 2)
    if _attrs(node, {"axis": 2}).get("axis", 0) != 0:
        raise _fail(f"Gather {node.name!r} is not a row lookup")
    if not table.initializer or len(table.shape) != 2 or ids.dtype not in (INT32, INT64):
        raise _fail(f"Gather {node.name!r} must look rows up in a weight table")
    return [Value(table.dtype, ids.shape + table.shape[1:])]


def _one_hot(node: Node, ins: list[Value | None]) -> list[Value | None]:
    ids, depth, values = _present(node, ins, 3)
    if _attrs(node, {"axis": 2}).get("axis", -1) != -1:
        raise _fail(f"OneHot {node.name!r} must add its axis last")
    if ids.dtype not in (INT32, INT64) or not depth.initializer or depth.const is None:
        raise _fail(f"OneHot {node.name!r} needs character ids and a constant depth")
    if len(depth.const) != 1 or depth.const[0] < 1:
        raise _fail(f"OneHot {node.name!r} has depth {list(depth.const)}")
    if not values.initializer or values.dtype != FLOAT or values.shape != (2,):
        raise _fail(f"OneHot {node.name!r} needs constant float [off, on] values")
    return [Value(FLOAT, ids.shape + (depth.const[0],))]


def _axes(node: Node, axes: Value | None) -> list[int]:
    # A 1-D int64 constant, as ONNX and our exporters have it (a [1, 1] one passed the
    # values check and failed only when onnxruntime ran the node).
    if axes is None or axes.const is None or axes.dtype != INT64 or len(axes.shape) != 1:
        raise _fail(f"{node.op_type} {node.name!r} needs constant 1-D int64 axes")
    return list(axes.const)


def _squeeze(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    x, axes = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or len(ins) > 2:
        raise _fail(f"Squeeze {node.name!r} has the wrong inputs")
    rank = len(x.shape)
    drop = {a % rank for a in _axes(node, axes) if -rank <= a < rank}
    if len(drop) != len(axes.const) or any(x.shape[a] != 1 for a in drop):
        raise _fail(f"Squeeze {node.name!r} removes an axis that is not 1")
    return [Value(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in drop))]


def _unsqueeze(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    x, axes = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or len(ins) > 2:
        raise _fail(f"Unsqueeze {node.name!r} has the wrong inputs")
    rank = len(x.shape) + len(_axes(node, axes))
    where = {a % rank for a in axes.const if -rank <= a < rank}
    if len(where) != len(axes.const):
        raise _fail(f"Unsqueeze {node.name!r} has bad axes")
    dims = iter(x.shape)
    return [Value(x.dtype, tuple(1 if i in where else next(dims) for i in range(rank)))]


def _identity(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    (x,) = _present(node, ins, 1)
    return [x]


def _softmax(node: Node, ins: list[Value | None]) -> list[Value | None]:
    (x,) = _present(node, ins, 1)
    axis = _attrs(node, {"axis": 2}).get("axis", -1)
    if x.dtype != FLOAT or axis not in (-1, len(x.shape) - 1):
        raise _fail(f"Softmax {node.name!r} must run over the last axis of a float tensor")
    return [Value(FLOAT, x.shape)]


def _argmax(node: Node, ins: list[Value | None]) -> list[Value | None]:
    (x,) = _present(node, ins, 1)
    a = _attrs(node, {"axis": 2, "keepdims": 2, "select_last_index": 2})
    if a.get("keepdims", 1) != 0 or a.get("select_last_index", 0) != 0:
        raise _fail(f"ArgMax {node.name!r} must drop its axis")
    if x.dtype != FLOAT or a.get("axis", 0) not in (-1, len(x.shape) - 1):
        raise _fail(f"ArgMax {node.name!r} must run over the last axis")
    return [Value(INT64, x.shape[:-1])]


def _gemm(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    a, w, b = _present(node, ins, 3)
    _need(a, FLOAT, 2, f"Gemm {node.name!r} input")
    _need(w, FLOAT, 2, f"Gemm {node.name!r} weight")
    if not (w.initializer and b.initializer) or a.shape[1] != w.shape[0]:
        raise _fail(f"Gemm {node.name!r} must multiply by weights of matching shape")
    _need(b, FLOAT, None, f"Gemm {node.name!r} bias")
    return [Value(FLOAT, _broadcast((a.shape[0], w.shape[1]), b.shape, f"Gemm {node.name!r}"))]


def _matmul(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    a, w = _present(node, ins, 2)
    _need(w, FLOAT, 2, f"MatMul {node.name!r} weight")
    if a.dtype != FLOAT or not a.shape or not w.initializer or a.shape[-1] != w.shape[0]:
        raise _fail(f"MatMul {node.name!r} must multiply by a weight of matching shape")
    return [Value(FLOAT, a.shape[:-1] + w.shape[1:])]


def _elementwise(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    a, b = _present(node, ins, 2)
    if a.dtype != FLOAT or b.dtype != FLOAT:
        raise _fail(f"{node.op_type} {node.name!r} must combine float tensors")
    return [Value(FLOAT, _broadcast(a.shape, b.shape, f"{node.op_type} {node.name!r}"))]


def _cast(node: Node, ins: list[Value | None]) -> list[Value | None]:
    (x,) = _present(node, ins, 1)
    if _attrs(node, {"to": 2}).get("to") != FLOAT or x.dtype != INT32:
        raise _fail(f"Cast {node.name!r} must turn int32 into float")
    return [Value(FLOAT, x.shape)]


def _quantize_linear(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    (x,) = _present(node, ins, 1)
    _need(x, FLOAT, None, f"DynamicQuantizeLinear {node.name!r} input")
    return [Value(UINT8, x.shape), Value(FLOAT, ()), Value(UINT8, ())]


def _matmul_integer(node: Node, ins: list[Value | None]) -> list[Value | None]:
    _attrs(node, {})
    a, w, a_zero, w_zero = _present(node, ins, 4)
    _need(w, INT8, 2, f"MatMulInteger {node.name!r} weight")
    if (
        a.dtype != UINT8
        or not a.shape
        or a.shape[-1] != w.shape[0]
        or not w.initializer
        or a_zero.dtype != UINT8
        or a_zero.shape != ()
        or not w_zero.initializer
        or w_zero.dtype != INT8
        or w_zero.shape not in ((), (w.shape[1],))
    ):
        raise _fail(f"MatMulInteger {node.name!r} is not a quantized weight product")
    return [Value(INT32, a.shape[:-1] + w.shape[1:])]


def _dequantize_linear(node: Node, ins: list[Value | None]) -> list[Value | None]:
    """int8 weights with a per-channel (or one) scale and zero point, all constants: the
    output is a float constant of the weights' shape, which onnxruntime folds at load."""
    x, scale, zero = _present(node, ins, 3)
    axis = _attrs(node, {"axis": 2}).get("axis", 1)
    if not (x.initializer and scale.initializer and zero.initializer) or x.dtype != INT8:
        raise _fail(f"DequantizeLinear {node.name!r} must dequantize int8 weights")
    if not isinstance(axis, int) or not -len(x.shape) <= axis < len(x.shape):
        raise _fail(f"DequantizeLinear {node.name!r} has axis {axis}")
    channels = x.shape[axis]
    if scale.dtype != FLOAT or scale.shape not in ((), (channels,)):
        raise _fail(f"DequantizeLinear {node.name!r}: scale is {_describe(scale)}")
    if zero.dtype != INT8 or zero.shape != scale.shape:
        raise _fail(f"DequantizeLinear {node.name!r}: zero point is {_describe(zero)}")
    return [Value(FLOAT, x.shape, initializer=True)]


# Gates per cell: an ONNX RNN has 1, a GRU 3, an LSTM 4.
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4, "DynamicQuantizeLSTM": 4}
_ACTIVATION_COUNT = {"RNN": 1, "GRU": 2, "LSTM": 3, "DynamicQuantizeLSTM": 3}


def _recurrent(node: Node, ins: list[Value | None]) -> list[Value | None]:
    """RNN / GRU / LSTM / DynamicQuantizeLSTM: one forward layer, X [T, B, I] -> Y, Y_h, Y_c."""
    op = node.op_type
    allowed = {"hidden_size": 2, "activations": 8}
    if op == "GRU":
        allowed["linear_before_reset"] = 2
    a = _attrs(node, allowed)
    hidden = a.get("hidden_size")
    acts = [s.decode("utf-8", "replace") for s in a.get("activations", [])]
    if not isinstance(hidden, int) or hidden < 1:
        raise _fail(f"{op} {node.name!r} needs hidden_size")
    if len(acts) != _ACTIVATION_COUNT[op] or not set(acts) <= set(ACTIVATIONS.values()):
        raise _fail(f"{op} {node.name!r} has activations {acts}")
    if a.get("linear_before_reset", 1) != 1:
        raise _fail(f"{op} {node.name!r} must use linear_before_reset=1")
    quantized = op == "DynamicQuantizeLSTM"
    slots = 12 if quantized else (7 if op == "LSTM" else 6)
    if len(ins) > slots or ins[0] is None:
        raise _fail(f"{op} {node.name!r} has the wrong inputs")
    ins = ins + [None] * (slots - len(ins))
    x, w, r, b, seq_lens, h0 = ins[:6]
    gates = GATES[op] * hidden
    _need(x, FLOAT, 3, f"{op} {node.name!r} input")
    if seq_lens is not None:
        raise _fail(f"{op} {node.name!r} must not take sequence lengths")
    if quantized:
        if ins[7] is not None:
            raise _fail(f"{op} {node.name!r} must not have peepholes")
        w_shape, r_shape, wtype = (1, x.shape[2], gates), (1, hidden, gates), INT8
        for v, what in ((w, "W"), (r, "R")):
            if v is None or not v.initializer or v.dtype != wtype:
                raise _fail(f"{op} {node.name!r}: {what} must be an int8 weight")
        names = ("W_scale", "W_zero_point", "R_scale", "R_zero_point")
        for v, what in zip(ins[8:12], names, strict=True):
            dtype = FLOAT if "scale" in what else INT8
            if v is None or not v.initializer or v.dtype != dtype or v.shape != (1, gates):
                raise _fail(f"{op} {node.name!r}: {what} is not a per-channel constant")
    else:
        w_shape, r_shape, wtype = (1, gates, x.shape[2]), (1, gates, hidden), FLOAT
    for v, what, shape in ((w, "W", w_shape), (r, "R", r_shape), (b, "B", (1, 2 * gates))):
        if v is None or not v.initializer or v.dtype != (wtype if what != "B" else FLOAT):
            raise _fail(f"{op} {node.name!r}: {what} must be a weight")
        if v.shape != shape:
            raise _fail(f"{op} {node.name!r}: {what} is {list(v.shape)}, expected {list(shape)}")
    state = (1, x.shape[1], hidden)
    initial = [h0] + ([ins[6]] if op in ("LSTM", "DynamicQuantizeLSTM") else [])
    for v in initial:
        if v is not None and (v.dtype != FLOAT or v.shape != state):
            raise _fail(f"{op} {node.name!r}: initial state is {_describe(v)}")
    outs: list[Value | None] = [
        Value(FLOAT, (x.shape[0], 1, x.shape[1], hidden)),
        Value(FLOAT, state),
    ]
    if op in ("LSTM", "DynamicQuantizeLSTM"):
        outs.append(Value(FLOAT, state))
    return outs


def _present(node: Node, ins: list[Value | None], n: int) -> list[Value]:
    if len(ins) != n or any(v is None for v in ins):
        raise _fail(f"{node.op_type} {node.name!r} needs exactly {n} inputs")
    return ins  # type: ignore[return-value]


FP32_OPS: dict[tuple[str, str], Rule] = {
    ("", "Transpose"): _transpose,
    ("", "Gather"): _gather,
    ("", "OneHot"): _one_hot,
    ("", "Squeeze"): _squeeze,
    ("", "Unsqueeze"): _unsqueeze,
    ("", "Identity"): _identity,
    ("", "RNN"): _recurrent,
    ("", "GRU"): _recurrent,
    ("", "LSTM"): _recurrent,
    ("", "Gemm"): _gemm,
    ("", "Softmax"): _softmax,
    ("", "ArgMax"): _argmax,
}
# What onnxruntime.quantization.quantize_dynamic turns our graphs into.
INT8_OPS: dict[tuple[str, str], Rule] = {
    **FP32_OPS,
    ("", "MatMul"): _matmul,
    ("", "Add"): _elementwise,
    ("", "Mul"): _elementwise,
    ("", "Cast"): _cast,
    ("", "DynamicQuantizeLinear"): _quantize_linear,
    ("", "MatMulInteger"): _matmul_integer,
    ("", "DequantizeLinear"): _dequantize_linear,
    (MS_DOMAIN, "DynamicQuantizeLSTM"): _recurrent,
}
OPS = {"fp32": FP32_OPS, "int8": INT8_OPS}
OPSETS = {"fp32": [{"": OPSET}], "int8": [{"": OPSET}, {"": OPSET, MS_DOMAIN: MS_OPSET}]}

_INT_CONST_LIMIT = 16  # integer initializers this small are read (axes); others stay opaque


def _initial_values(model: Model, spec: ModelSpec) -> dict[str, Value]:
    graph = model.graph
    assert graph is not None
    values: dict[str, Value] = {}
    # The time axis is a symbol even for a window model: its length is the caller's input.
    values[spec.input.name] = Value(
        INT32 if spec.input.dtype == "int32" else INT64, ("batch", "time")
    )
    for state in spec.states:
        values[state.input] = Value(FLOAT, ("batch", state.shape[1]))
    declared = {v.name: v for v in graph.inputs}
    if sorted(declared) != sorted(values) or len(declared) != len(graph.inputs):
        raise GraphMismatchError(
            f"graph inputs are {sorted(declared)}, vocab.json says {sorted(values)}"
        )
    for name, value in values.items():
        info = declared[name]
        if info.elem_type != value.dtype or info.shape is None or len(info.shape) != 2:
            raise GraphMismatchError(f"graph input {name!r} is not what vocab.json declares")
        if name == spec.input.name and not spec.stateful and info.shape[1] != spec.seq_length:
            raise GraphMismatchError(
                f"the graph reads windows of {info.shape[1]}, vocab.json says seq_length "
                f"{spec.seq_length}"
            )
        if name != spec.input.name and info.shape[1] != value.shape[1]:
            raise GraphMismatchError(
                f"state {name!r} has {info.shape[1]} units, vocab.json says {value.shape[1]}"
            )
    for t in graph.initializers:
        if not t.name or t.name in values:
            raise _fail(f"initializer {t.name!r} is unnamed or shadows another tensor")
        const = None
        if t.data_type in (INT32, INT64) and t.size <= _INT_CONST_LIMIT:
            const = tuple(t.int_values())
        values[t.name] = Value(t.data_type, tuple(t.dims), const, initializer=True)
    return values


def check_model(model: Model, spec: ModelSpec, precision: str) -> None:
    """GraphRuleError unless `model` is a graph our exporters write for `spec` and `precision`."""
    if model.ir_version != IR_VERSION:
        raise _fail(f"IR version {model.ir_version}; rnn-textgen writes {IR_VERSION}")
    if model.opsets not in OPSETS[precision]:
        raise _fail(f"operator sets {model.opsets}; rnn-textgen writes {OPSETS[precision][-1]}")
    graph = model.graph
    assert graph is not None
    if not 1 <= len(graph.nodes) <= MAX_NODES:
        raise _fail(f"{len(graph.nodes)} nodes")
    values = _initial_values(model, spec)
    initializers = graph.initializers
    largest = max([t.size for t in initializers] + [spec.vocab_size])
    budget = 16 * sum(t.size for t in initializers) + 65_536
    rules = OPS[precision]
    for node in graph.nodes:
        rule = rules.get((node.domain, node.op_type))
        if rule is None:
            where = f" (domain {node.domain!r})" if node.domain else ""
            raise _fail(f"operator {node.op_type!r}{where} is not one rnn-textgen writes")
        ins: list[Value | None] = []
        for name in node.inputs:
            if name == "":
                ins.append(None)
            elif name in values:
                ins.append(values[name])
            else:
                raise _fail(f"{node.op_type} {node.name!r} reads {name!r} before it is defined")
        while ins and ins[-1] is None:
            ins.pop()
        outs = rule(node, ins)
        if node.op_type == "OneHot" and not (
            spec.one_hot_op and outs[0] is not None and outs[0].shape[-1] == spec.vocab_size
        ):
            raise _fail(
                f"OneHot {node.name!r} is not the one-hot encoding rnn-textgen writes for "
                f"{spec.vocab_size} characters (it writes OneHot from {ONE_HOT_OP_CHARS})"
            )
        if len(node.outputs) > len(outs):
            raise _fail(f"{node.op_type} {node.name!r} has {len(node.outputs)} outputs")
        for name, value in zip(node.outputs, outs, strict=False):
            if name == "":
                continue
            if name in values:
                raise _fail(f"tensor {name!r} is defined twice")
            assert value is not None
            symbols = [d for d in value.shape if isinstance(d, str)]
            if len(set(symbols)) != len(symbols) or value.static > largest:
                raise _fail(f"{node.op_type} {node.name!r} makes a {_describe(value)} tensor")
            budget -= value.static
            if budget < 0:
                raise _fail("the graph's intermediate tensors outgrow its weights")
            values[name] = value
    _check_outputs(model, spec, values)


def _check_outputs(model: Model, spec: ModelSpec, values: dict[str, Value]) -> None:
    graph = model.graph
    assert graph is not None
    wanted = {
        spec.output.name: Value(FLOAT, ("batch", spec.vocab_size)),
        spec.next.name: Value(INT64, ("batch",)),
    }
    for state in spec.states:
        wanted[state.output] = Value(FLOAT, ("batch", state.shape[1]))
    declared = [v.name for v in graph.outputs]
    if sorted(declared) != sorted(wanted):
        raise GraphMismatchError(
            f"graph outputs are {sorted(declared)}, vocab.json says {sorted(wanted)}"
        )
    for name, want in wanted.items():
        got = values.get(name)
        if got is None or got.initializer or (got.dtype, got.shape) != (want.dtype, want.shape):
            if name == spec.output.name and got is not None and got.shape[:1] == ("batch",):
                raise GraphMismatchError(
                    f"the graph scores {got.shape[-1]} characters, vocab.json has "
                    f"{spec.vocab_size} characters"
                )
            shown = _describe(got) if got else "undefined"
            raise GraphMismatchError(f"graph output {name!r} is {shown}, not {_describe(want)}")


def vet_model(data: bytes, spec: ModelSpec, precision: str) -> Model:
    """Parse and check model bytes, returning the parsed model; GraphRuleError or
    ProtoError says what is wrong."""
    from .onnx_proto import parse_model

    model = parse_model(data)
    check_model(model, spec, precision)
    return model


__all__ = [
    "ACTIVATIONS",
    "IR_VERSION",
    "OPSET",
    "GraphMismatchError",
    "GraphRuleError",
    "ProtoError",
    "check_model",
    "vet_model",
]
