"""Decomposed graphs, built at load from a model's own weights: a stateful model's step
graphs, and a window model's window greedy graph.

A stateful model's `model.onnx` runs ONNX's native `RNN` / `GRU` / `LSTM` operators, which
read any number of characters in one Run (the warm-up, and the contract other clients rely
on). For the one character of a generation step those operators do more than needed: they
multiply a one-hot vector by the input kernel and loop over a time axis of one. Here each
layer becomes a `Gather` of a precomputed `[vocabulary, gates·units]` table (input kernel
and both biases folded in), one matrix product with the recurrent kernel, and the gate
arithmetic as elementwise operators; LSTM gates are reordered so that one `Sigmoid` covers
i, f and o. With int8 weights the recurrent product keeps the weights in int8 and quantizes
the activations each step, as LiteRT's dynamic-range kernels do: onnxruntime's
`MatMulNBits` with 8 bits (from onnxruntime 1.22, whose one-row kernels are the ones built
for LLM decoding) or `DynamicQuantizeMatMul` before that.

Greedy generation of one stream runs the greedy graph (layers up to GREEDY_MAX_UNITS wide):
GREEDY_STEPS copies of the step chained in one graph, each reading the character the one
before chose, so that a Run's fixed cost is paid once for all of them. Its step is the
one-step graph's less two nodes (see `_Builder.build`): it writes no probabilities, and it
reads one stream, whose table row MatMulNBits can add as its own bias. Sampling, batches,
`Context` and wider models run the one-step graph.

A window model's greedy text can run on the window greedy graph (`_Builder.window`):
GREEDY_STEPS windows chained in one graph, each the layers decomposed over its seq_length
positions from zero states, each character's table rows looked up once for the windows
that read it. It pays for short SimpleRNN windows (the default model: 0.45x model.onnx's
time), not for LSTM and GRU ones (`window_builder`, decided at load).

Measured (`benchmarks/bench_builders.py`, greedy time per generated character against the
native operator on the same weights, 32 to 512 units): LSTM 0.56-0.92x, GRU 0.33-0.92x,
SimpleRNN 0.34-0.77x. Which builder a model uses is decided at export (`preferred_builder`)
and recorded in `vocab.json` (`graph_builder`).

The builder reads only graphs that `graph_rules` has accepted, and recognizes exactly the
shape textgen-train writes; anything else returns None and the native graph runs every
step (always correct, only slower). The graph built here never leaves the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .artifact import GRAPH_BUILDERS, ModelSpec
from .graph_rules import ACTIVATIONS, GATES, IR_VERSION, MS_DOMAIN, MS_OPSET, OPSET
from .onnx_proto import (
    ATTR_INT,
    FLOAT,
    INT32,
    INT64,
    Attribute,
    Model,
    Node,
    Parts,
    ProtoError,
    encode_model,
    encode_node,
    encode_tensor,
    encode_value_info,
)

NATIVE, DECOMPOSED = GRAPH_BUILDERS


def _release(version: str) -> tuple[int, ...]:
    """(1, 22) from "1.22.0" or "1.22.0.dev2025": the numeric release, for comparisons."""
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# The int8 products of a step, and the width from which a layer multiplies in int8 with each:
# narrower layers multiply the dequantized weights in float, which measured faster there
# (quantizing the activations each step costs more than the smaller product saves).
# MatMulNBits with 8 bits (onnxruntime >= 1.22; 4-bit only before, refused at session
# creation) runs one row in 0.69x DynamicQuantizeMatMul's time at 256x1024 and 0.76x at
# 512x2048, so LSTM and GRU layers use it from 128 units. A SimpleRNN always multiplies in
# float: its ungated recurrence compounds the rounding of the activations, and held-out
# agreement with fp32 (bench_int8's text, tanh, 300 steps) fell from 99.22% to 99.04% at 256
# units and from 99.15% to 98.89% at 512 (98.97% with 32-wide blocks, 99.01% with
# DynamicQuantizeMatMul), under or too near the 99% the int8 variant promises.
INT8_KERNELS: dict[str, dict[str, int]] = {
    "MatMulNBits": {"LSTM": 128, "GRU": 128},
    "DynamicQuantizeMatMul": {"LSTM": 256, "GRU": 256},
}
# The output layer multiplies in int8 (MatMulNBits only) from a last layer this wide: at 512
# units it saved 1.3 us of an LSTM's 21.8 us step, and held-out agreement stayed at 99.49%
# (LSTM) and 99.52% (GRU); at 256, 0.35-0.45 us of an 8 us greedy step, with agreement
# 99.09% (LSTM, was 99.11%), 99.57% (GRU, 99.58%) and 99.23% (SimpleRNN, 99.22%) on
# bench_int8's held-out text. Narrower, its product is small, and rounding its input cost
# agreement with DynamicQuantizeMatMul's per-tensor activations.
INT8_HEAD_UNITS = 256
INT8_KERNEL = "MatMulNBits" if _release(ort.__version__) >= (1, 22) else "DynamicQuantizeMatMul"
_RECURRENT = ("RNN", "GRU", "LSTM", "DynamicQuantizeLSTM")
_ACT_OPS = {op.encode(): op for op in ACTIVATIONS.values()}  # attribute bytes -> op


def preferred_builder(cell: str, units: int) -> str:
    """The builder a stateful model of `cell` ("lstm", "gru", "simple") and `units` gets.

    From bench_builders' measurements: decomposed is faster for every cell at every size
    measured (32-512 units; GRU 32 too since greedy text runs on the greedy graph: 0.87x
    and 0.91x native in two runs, where one step per Run measured 1.03x).
    """
    return DECOMPOSED


def chosen_builder(model: Model, spec: ModelSpec) -> str:
    """The builder a model's generation runs on unless told otherwise: vocab.json's
    `graph_builder` for a stateful model, `window_builder`'s for a window model."""
    return spec.graph_builder if spec.stateful else window_builder(model, spec)


def window_builder(model: Model, spec: ModelSpec) -> str:
    """The builder a window model's greedy generation runs on, decided at load from its
    (vetted) graph (vocab.json records a choice for stateful models only): the window
    greedy graph ("decomposed") for the models WINDOW_CELLS, WINDOW_MAX_POSITIONS and
    WINDOW_MAX_UNITS describe, else model.onnx ("native")."""
    layers = cells(model)
    positions = spec.seq_length * len(layers)
    fits = all(op in WINDOW_CELLS and units <= WINDOW_MAX_UNITS for op, units in layers)
    return DECOMPOSED if layers and fits and positions <= WINDOW_MAX_POSITIONS else NATIVE


def cells(model: Model) -> list[tuple[str, int]]:
    """(operator, units) of each recurrent layer of a vetted graph."""
    cells = []
    for node in model.graph.nodes if model.graph is not None else []:
        if node.op_type in _RECURRENT:
            size = [Attribute.value(a) for a in node.attributes if a.name == "hidden_size"]
            cells.append((node.op_type, size[0] if size and isinstance(size[0], int) else 0))
    return cells


# Characters the greedy graph runs per Run: each Run's fixed cost (about 1.2 us of binding,
# dispatch and Python around it) is paid once for all of them. One LSTM 128 int8 step
# measured 7.7 us per character with one per Run, 7.3 with 2, 7.1 with 4, 6.9 with 8 and
# 6.8 with 16; 8 keeps the graph small and wastes at most 7 steps at the end of a text.
GREEDY_STEPS = 8
# The widest layer a greedy graph is built for, by precision. It is a second session over
# the weights, whose float matrices onnxruntime packs again: in fp32, up to 256 units it
# saved 5-16% of a character (bench_litert) for 2-4 MB of peak RSS, and at 512 units 5%
# (51.9 -> 49.3 us) for 12 MB. In int8 every matrix but the input table stays int8: at 512
# units it saved 12% (20.2 -> 17.7 us) for under 1 MB.
GREEDY_MAX_UNITS = {"fp32": 256, "int8": 512}
# Window models whose greedy generation runs the window greedy graph (`window_builder`):
# SimpleRNN layers, at most WINDOW_MAX_POSITIONS layer positions (seq_length x layers) at
# most WINDOW_MAX_UNITS wide. Measured per generated character against model.onnx, both
# greedy through `generate` (identical text in every row; bench_builders): SimpleRNN 50,
# window 3 (the default model) 2.11 against 4.64 us (0.45x); 50 units, window 10: 0.64x
# fp32, 0.60x int8; 256 units, window 20: 0.78-0.80x both. The ratio grows with the window
# (each position adds kernels where the RNN operator adds a step of its loop) and from
# about 24 positions it is within the noise: 50 units, window 24, 0.82-0.92x fp32 and
# 0.78-1.06x int8 in two runs; window 40 0.93x, 0.89x in one. LSTM and GRU windows lose
# (LSTM 64 window 3 1.30-1.34x, window 10 2.47x; GRU 64 window 3 1.37-1.51x, 128 window 8
# 1.53x; LSTM 256 window 10 1.21x): every position is a dozen kernels where model.onnx runs
# all of a window's positions in one fused operator.
WINDOW_CELLS = ("RNN",)
WINDOW_MAX_POSITIONS = 24
WINDOW_MAX_UNITS = 256


def wants_greedy_graph(spec: ModelSpec, precision: str) -> bool:
    """Whether greedy generation of this stateful model in `precision` gets a greedy graph."""
    return max(s.shape[1] for s in spec.states) <= GREEDY_MAX_UNITS[precision]


def greedy_outputs(spec: ModelSpec, steps: int = GREEDY_STEPS) -> list[str]:
    """The greedy graph's outputs of the characters it chose, in order, each [batch] int64
    (its states come out under the spec's names, as the one-step graph's do)."""
    if steps == 1:  # the one-step graph itself
        return [spec.next.name]
    return [_in_step(k, spec.next.name) for k in range(steps)]


def _in_step(k: int, name: str) -> str:
    """Step k's copy of a tensor of the one-step graph (no name of ours has a "/")."""
    return f"s{k}/{name}"


@dataclass
class _Layer:
    op: str  # RNN, GRU or LSTM
    units: int
    acts: list[str]
    w: np.ndarray  # [gates*units, inputs], ONNX gate order
    r: np.ndarray  # [gates*units, units]
    b: np.ndarray  # [2*gates*units]: input bias, then recurrent bias
    h_in: str
    h_out: str
    c_in: str = ""
    c_out: str = ""


class _Unknown(Exception):
    """The graph is not in the form this builder recognizes."""


def decompose(
    model: Model,
    spec: ModelSpec,
    precision: str,
    int8_kernel: str = INT8_KERNEL,
    steps: int = 1,
) -> bytes | None:
    """The serialized step graph for `model` (a checked stateful graph), or None when the
    graph is not one this builder recognizes. `int8_kernel`: one of INT8_KERNELS (the
    default is the faster one the installed onnxruntime runs). `steps` > 1: the greedy
    graph, which runs that many characters per Run (see `greedy_outputs`)."""
    graphs = decompose_each(model, spec, precision, (steps,), int8_kernel)
    return None if graphs is None else graphs[0]


def decompose_each(
    model: Model,
    spec: ModelSpec,
    precision: str,
    counts: Sequence[int],
    int8_kernel: str = INT8_KERNEL,
) -> list[bytes] | None:
    """`decompose` for each number of steps in `counts`, from one reading of the native
    graph: its layers are parsed and their int8 matrices quantized once, and every graph
    shares those initializers (the folded float tables are recomputed per graph: about
    0.4 ms at 256 units)."""
    if not spec.stateful or model.graph is None:
        return None
    if int8_kernel not in INT8_KERNELS:
        raise ValueError(f"int8_kernel must be one of {', '.join(INT8_KERNELS)}")
    if any(n < 1 for n in counts):
        raise ValueError("steps must be at least 1")
    try:
        builder = _Builder(model, spec, precision, int8_kernel)
        graphs = []
        for n in counts:
            builder.build(greedy=n > 1)
            graphs.append(builder.serialized(n))
        return graphs
    except (_Unknown, ProtoError, ValueError, IndexError, KeyError):
        # A graph graph_rules accepted but not in our exporters' exact form (an edited or
        # fuzzed file): model.onnx itself still runs every step correctly.
        return None


def decompose_window(
    model: Model,
    spec: ModelSpec,
    precision: str,
    steps: int = GREEDY_STEPS,
    int8_kernel: str = INT8_KERNEL,
) -> bytes | None:
    """The serialized window greedy graph of a window model (see `_Builder.window`), or
    None when the graph is not one this builder recognizes."""
    if spec.stateful or model.graph is None:
        return None
    if steps < 1:
        raise ValueError("steps must be at least 1")
    try:
        return _Builder(model, spec, precision, int8_kernel).window(steps)
    except (_Unknown, ProtoError, ValueError, IndexError, KeyError):
        return None


class _Builder:
    def __init__(self, model: Model, spec: ModelSpec, precision: str, int8_kernel: str) -> None:
        assert model.graph is not None
        self.graph = model.graph
        self.spec = spec
        self.int8_weights = precision == "int8"
        self.int8_kernel = int8_kernel
        self.consts: dict[str, np.ndarray] = {}
        for t in self.graph.initializers:
            self.consts[t.name] = t.array()
        self.producer: dict[str, Node] = {o: n for n in self.graph.nodes for o in n.outputs if o}
        for node in self.graph.nodes:
            if node.op_type == "DequantizeLinear" and all(i in self.consts for i in node.inputs):
                self.consts[node.outputs[0]] = _dequantize(node, self.consts)
        # One step's nodes (op, inputs, outputs, int attributes), encoded by serialized().
        self.nodes: list[tuple[str, list[str], list[str], dict[str, int]]] = []
        self.greedy = False  # which step build() emits: see there
        self.rows: set[str] = set()  # a table's row for the step's character (greedy step)
        self.head_at = 0  # nodes[:head_at] are the layers; the output layer follows
        self.hidden = ""  # a window graph's last hidden state, which its output layer reads
        self._layers: list[_Layer] | None = None
        # Initializers by name, shared by every graph this builder serializes.
        self.inits: dict[str, Parts] = {}

    # --- reading the native graph -------------------------------------------------------

    def const(self, name: str) -> np.ndarray:
        if name not in self.consts:
            raise _Unknown(name)
        return self.consts[name].astype(np.float32, copy=False)

    def made_by(self, name: str, op: str) -> Node:
        node = self.producer.get(name)
        if node is None or node.op_type != op:
            raise _Unknown(name)
        return node

    def one_hot_scale(self, x0: str) -> np.ndarray:
        """What the first layer's input x0 holds for character i, which is i's column of W
        scaled by this [vocabulary] vector: x0 = Gather(table, Transpose(char_ids)) with a
        diagonal table (its diagonal), or OneHot(Transpose(char_ids)) of values [0, on]."""
        front = self.producer.get(x0)
        if front is not None and front.op_type == "OneHot":
            self.made_by(front.inputs[0], "Transpose")
            depth, values = self.const(front.inputs[1]), self.const(front.inputs[2])
            axis = {a.name: Attribute.value(a) for a in front.attributes}.get("axis", -1)
            if depth.size != 1 or axis != -1 or values.shape != (2,) or values[0] != 0:
                raise _Unknown("one-hot")
            return np.full(int(depth.reshape(())), values[1], np.float32)
        gather = self.made_by(x0, "Gather")
        self.made_by(gather.inputs[1], "Transpose")
        table = self.const(gather.inputs[0])
        diag = np.diagonal(table)
        if table.shape != (len(diag), len(diag)) or np.count_nonzero(table) != np.count_nonzero(
            diag
        ):
            raise _Unknown("one-hot table")
        return diag

    def layers(self) -> list[_Layer]:
        cells = [n for n in self.graph.nodes if n.op_type in _RECURRENT]
        consumers: dict[str, list[Node]] = {}
        for node in self.graph.nodes:
            for i in node.inputs:
                consumers.setdefault(i, []).append(node)
        layers = []
        for k, node in enumerate(cells):
            ins = list(node.inputs) + [""] * (12 - len(node.inputs))
            op = "LSTM" if node.op_type == "DynamicQuantizeLSTM" else node.op_type
            attrs = {a.name: Attribute.value(a) for a in node.attributes}
            acts = [_ACT_OPS.get(bytes(s), "") for s in attrs.get("activations", [])]
            if "" in acts or attrs.get("linear_before_reset", 1) != 1:
                raise _Unknown(node.name)
            if node.op_type == "DynamicQuantizeLSTM":
                w = _scaled(self.const(ins[1]), self.const(ins[8]), self.const(ins[9]))
                r = _scaled(self.const(ins[2]), self.const(ins[10]), self.const(ins[11]))
            else:
                w, r = self.const(ins[1])[0], self.const(ins[2])[0]
            units = int(attrs["hidden_size"])  # type: ignore[arg-type]
            gates = GATES[op]
            b = self.const(ins[3])[0] if ins[3] else np.zeros(2 * gates * units, np.float32)
            if k == 0:
                w = w * self.one_hot_scale(ins[0])[None, :]
            elif self.made_by(ins[0], "Squeeze").inputs[0] != cells[k - 1].outputs[0]:
                raise _Unknown(node.name)
            if self.spec.stateful:
                layer = _Layer(
                    op, units, acts, w, r, b, *self.state(ins[5], node.outputs[1], consumers)
                )
                if op == "LSTM":
                    layer.c_in, layer.c_out = self.state(ins[6], node.outputs[2], consumers)
            else:  # a window: every window starts from zero; its positions chain the states
                if ins[5] or ins[6]:
                    raise _Unknown(node.name)
                layer = _Layer(op, units, acts, w, r, b, f"l{k}_h_in", f"l{k}_h_out")
                if op == "LSTM":
                    layer.c_in, layer.c_out = f"l{k}_c_in", f"l{k}_c_out"
                if k == len(cells) - 1:  # the output layer reads Squeeze(Y_h)
                    squeezes = [
                        n for n in consumers.get(node.outputs[1], []) if n.op_type == "Squeeze"
                    ]
                    if len(squeezes) != 1:
                        raise _Unknown(node.name)
                    self.hidden = squeezes[0].outputs[0]
            if w.shape != (gates * units, w.shape[1]) or r.shape != (gates * units, units):
                raise _Unknown(node.name)
            layers.append(layer)
        if not layers:
            raise _Unknown("no recurrent layer")
        return layers

    def state(self, initial: str, final: str, consumers: dict[str, list[Node]]) -> tuple[str, str]:
        """The graph input feeding a layer's initial state and the output of its final one."""
        source = self.made_by(initial, "Unsqueeze").inputs[0]
        squeezes = [n for n in consumers.get(final, []) if n.op_type == "Squeeze"]
        if len(squeezes) != 1:
            raise _Unknown(final)
        return source, squeezes[0].outputs[0]

    def head(self, hidden: str) -> tuple[np.ndarray, np.ndarray]:
        """The output layer's weight [units, vocab] and bias, from the nodes after the last
        layer: (a stateful graph's Identity,) Gemm (fp32) or quantize_dynamic's MatMulInteger
        form (int8), then Softmax and ArgMax, which the step graph writes again itself."""
        reached, nodes = {hidden}, []
        for node in self.graph.nodes:
            if any(i in reached for i in node.inputs):
                nodes.append(node)
                reached.update(node.outputs)
        if nodes and nodes[0].op_type == "Identity":  # a stateful graph's `hidden`
            nodes = nodes[1:]
        ops = [n.op_type for n in nodes]
        outside = [i for n in nodes for i in n.inputs if i and i not in reached]
        if ops == ["Gemm", "Softmax", "ArgMax"] and len(outside) == 2:
            return self.const(outside[0]), self.const(outside[1])
        quantized = [
            "DynamicQuantizeLinear", "Mul", "MatMulInteger", "Cast", "Mul", "Add", "Softmax",
            "ArgMax",
        ]  # fmt: skip
        if ops != quantized:
            raise _Unknown("head")
        matmul, scales, bias = nodes[2], nodes[1], nodes[5]
        q, zero = self.const(matmul.inputs[1]), self.const(matmul.inputs[3])
        scale = [self.const(i) for i in scales.inputs if i not in reached]
        b = [self.const(i) for i in bias.inputs if i not in reached]
        if len(scale) != 1 or len(b) != 1:
            raise _Unknown("head")
        return (q - zero) * scale[0], b[0]

    # --- writing the step graph ---------------------------------------------------------

    def add(self, name: str, array: np.ndarray) -> str:
        self.inits[name] = encode_tensor(name, array)
        return name

    def row(self, table: str, ids: str, out: str, bias: bool = True) -> None:
        """out = the table's rows for `ids`: [batch, N], or in the greedy step (one id
        of shape [1]) for a product's `bias`, the one row as [N], the shape MatMulNBits'
        bias input must have (GatherND: measured 1.2% of a GRU 256 int8 step slower than
        Gather, so a row that is no bias stays [1, N])."""
        if self.greedy:
            self.node("GatherND" if bias else "Gather", [table, ids], [out])
            self.rows.add(out)
        else:
            self.node("Gather", [table, ids], [out])

    def node(self, op: str, inputs: list[str], outputs: list[str], **ints: int) -> None:
        self.nodes.append((op, inputs, outputs, ints))

    def encoded(self, steps: int) -> list[bytes]:
        """The nodes of `steps` chained copies of the step: step k reads the states step
        k-1 wrote and the character it chose, the last writes the states under their own
        names; the weights are shared."""
        spec = self.spec
        last = steps - 1
        state_out = {s.input: s.output for s in spec.states}
        finals = set(state_out.values())

        def name(k: int, x: str) -> str:
            if steps == 1 or not x or x in self.inits:
                return x
            if x == spec.input.name:  # step k's character
                return x if k == 0 else _in_step(k - 1, spec.next.name)
            if x in state_out:  # step k's states in
                return x if k == 0 else _in_step(k - 1, state_out[x])
            return x if k == last and x in finals else _in_step(k, x)

        out = []
        for k in range(steps):
            for op, inputs, outputs, ints in self.nodes:
                out.append(
                    _encoded(op, [name(k, x) for x in inputs], [name(k, x) for x in outputs], ints)
                )
        return out

    def product(self, x: str, weight: np.ndarray, addend: str, out: str, int8: bool) -> None:
        """out = x @ weight + addend (addend: a tensor of the graph, or a bias constant),
        multiplied in int8 (weights quantized per output column) or in float."""
        if int8 and self.int8_kernel == "MatMulNBits":
            if addend in self.rows or addend in self.inits:  # [N]: MatMulNBits adds it itself
                self.nbits_product(x, weight, out, out, bias=addend)
            else:
                self.nbits_product(x, weight, out, f"{out}_mm")
                self.node("Add", [f"{out}_mm", addend], [out])
        elif int8:
            if f"{out}_q" not in self.inits:  # quantized once for all of this builder's graphs
                q, scale = symmetric_int8(weight, axis=1)
                self.add(f"{out}_q", q)
                self.add(f"{out}_s", scale)
                self.add(f"{out}_z", np.zeros_like(scale, dtype=np.int8))
            ins = [x, f"{out}_q", f"{out}_s", f"{out}_z"]
            self.node("DynamicQuantizeMatMul", ins, [f"{out}_mm"])
            self.node("Add", [f"{out}_mm", addend], [out])
        else:
            self.node("Gemm", [x, self.add(f"{out}_w", weight), addend], [out])

    def nbits_product(
        self, x: str, weight: np.ndarray, name: str, out: str, bias: str = ""
    ) -> None:
        """out = x @ weight (+ bias, a [N] tensor) through MatMulNBits: the same int8
        integers and per-column scales as DynamicQuantizeMatMul's, stored unsigned (+128,
        its default zero point) as [columns, blocks, block] with the input axis padded to
        whole blocks, under `name`_q and `name`_s (quantized once for all of this builder's
        graphs)."""
        k, n = weight.shape
        block = _nbits_block(k)
        blocks = -(-k // block)
        if f"{name}_q" not in self.inits:
            q, scale = symmetric_int8(weight, axis=1)
            stored = np.full((n, blocks * block), 128, np.uint8)
            stored[:, :k] = (q.T.astype(np.int16) + 128).astype(np.uint8)
            self.add(f"{name}_q", stored.reshape(n, blocks, block))
            self.add(f"{name}_s", np.repeat(scale, blocks))
        ins = [x, f"{name}_q", f"{name}_s"] + (["", "", bias] if bias else [])
        # accuracy_level 4: int8 products over activations quantized per block.
        self.node("MatMulNBits", ins, [out], K=k, N=n, bits=8, block_size=block, accuracy_level=4)

    def split(self, x: str, sizes: list[int], outs: list[str]) -> None:
        self.node(
            "Split", [x, self.add(f"{outs[0]}_sizes", np.array(sizes, np.int64))], outs, axis=1
        )

    def layer(self, k: int, layer: _Layer, x: str) -> str:
        """Emit layer k reading `x` (ids for layer 0, else the layer below's h)."""
        u, p = layer.units, f"l{k}"
        width = INT8_KERNELS[self.int8_kernel].get(layer.op)
        int8 = self.int8_weights and width is not None and u >= width
        if layer.op == "GRU":
            return self.gru(k, layer, x, int8)
        gates = GATES[layer.op]
        w_b, r_b = layer.b[: gates * u], layer.b[gates * u :]
        # Gate columns in the order the arithmetic below reads them.
        order = [0, 2, 1, 3] if layer.op == "LSTM" else list(range(gates))  # i o f c -> i f o c
        w = reorder_gates(layer.w.T, order, gates)
        r = reorder_gates(layer.r.T, order, gates)
        folded = reorder_gates(w_b + r_b, order, gates)
        act = layer.acts
        if k == 0:
            self.row(self.add(f"{p}_table", w + folded[None]), x, f"{p}_x")
        else:
            self.product(x, w, self.add(f"{p}_b", folded), f"{p}_x", int8)
        self.product(layer.h_in, r, f"{p}_x", f"{p}_z", int8)
        if layer.op == "RNN":
            self.node(act[0], [f"{p}_z"], [layer.h_out])
            return layer.h_out
        self.split(f"{p}_z", [3 * u, u], [f"{p}_ifo", f"{p}_g"])
        self.node(act[0], [f"{p}_ifo"], [f"{p}_ifo_a"])
        self.node(act[1], [f"{p}_g"], [f"{p}_g_a"])
        self.split(f"{p}_ifo_a", [u, u, u], [f"{p}_i", f"{p}_f", f"{p}_o"])
        self.node("Mul", [f"{p}_f", layer.c_in], [f"{p}_fc"])
        self.node("Mul", [f"{p}_i", f"{p}_g_a"], [f"{p}_ig"])
        self.node("Add", [f"{p}_fc", f"{p}_ig"], [layer.c_out])
        self.node(act[2], [layer.c_out], [f"{p}_c_a"])
        self.node("Mul", [f"{p}_o", f"{p}_c_a"], [layer.h_out])
        return layer.h_out

    def gru(self, k: int, layer: _Layer, x: str, int8: bool) -> str:
        """A GRU layer (linear_before_reset): h~ = g(x_h + r * (h R_h + Rb_h)).

        In the first layer one recurrent product gives both [z, r]'s input and h R_h + Rb_h:
        its addend is a table row holding the input's z, r part (both biases folded) next to
        R's h bias, so the input needs no Split and the z, r parts no Add."""
        u, p = layer.units, f"l{k}"
        w, r = (np.ascontiguousarray(m.T, np.float32) for m in (layer.w, layer.r))
        w_b, r_b = np.split(layer.b, 2)
        zr_bias = w_b[: 2 * u] + r_b[: 2 * u]
        if k == 0:  # two tables: [x_zr + biases | Rb_h] and x_h + Wb_h
            first = np.concatenate([w[:, : 2 * u] + zr_bias, np.tile(r_b[2 * u :], (len(w), 1))], 1)
            self.row(self.add(f"{p}_table", first), x, f"{p}_add")
            second = w[:, 2 * u :] + w_b[2 * u :]
            self.row(self.add(f"{p}_table_h", second), x, f"{p}_xh", bias=False)
            self.product(layer.h_in, r, f"{p}_add", f"{p}_s", int8)
            self.split(f"{p}_s", [2 * u, u], [f"{p}_zr_in", f"{p}_hh"])
        else:  # the layer below's h: a product for each, then add the z, r parts
            bias = np.concatenate([zr_bias, w_b[2 * u :]])
            self.product(x, w, self.add(f"{p}_b", bias), f"{p}_x", int8)
            self.split(f"{p}_x", [2 * u, u], [f"{p}_xzr", f"{p}_xh"])
            rb = np.concatenate([np.zeros(2 * u, np.float32), r_b[2 * u :]])
            self.product(layer.h_in, r, self.add(f"{p}_rb", rb), f"{p}_s", int8)
            self.split(f"{p}_s", [2 * u, u], [f"{p}_hzr", f"{p}_hh"])
            self.node("Add", [f"{p}_xzr", f"{p}_hzr"], [f"{p}_zr_in"])
        act = layer.acts
        self.node(act[0], [f"{p}_zr_in"], [f"{p}_zr"])
        self.split(f"{p}_zr", [u, u], [f"{p}_z", f"{p}_r"])
        self.node("Mul", [f"{p}_r", f"{p}_hh"], [f"{p}_rh"])
        self.node("Add", [f"{p}_xh", f"{p}_rh"], [f"{p}_n_in"])
        self.node(act[1], [f"{p}_n_in"], [f"{p}_n"])
        # (1 - z) * n + z * h, written as n + z * (h - n)
        self.node("Sub", [layer.h_in, f"{p}_n"], [f"{p}_d"])
        self.node("Mul", [f"{p}_z", f"{p}_d"], [f"{p}_zd"])
        self.node("Add", [f"{p}_n", f"{p}_zd"], [layer.h_out])
        return layer.h_out

    def build(self, greedy: bool = False) -> None:
        """Emit one step's nodes, and its initializers, from the native graph's weights.

        `greedy`: the greedy graph's step, which reads one stream (ids [1]) and writes no
        probabilities. Its first layer reads its table row as one [N] row, which
        MatMulNBits adds as its own bias (no Add; measured 3-4% of an int8 256-unit step),
        and ArgMax reads the logits, not Softmax's probabilities (Softmax is 3% of such a
        step): both argmaxes are the same except where rounding inside Softmax makes two
        probabilities equal, a tie below the rounding this graph already differs from
        model.onnx by (its sums are folded and reordered).
        """
        spec = self.spec
        self.nodes, self.rows, self.greedy = [], set(), greedy
        if self._layers is None:
            self._layers = self.layers()
        layers = self._layers
        dense_w, dense_b = self.head(layers[-1].h_out if spec.stateful else self.hidden)
        wanted = [(s.input, s.output) for s in spec.states]
        found = []
        for x in layers:
            found += [(x.h_in, x.h_out)] + ([(x.c_in, x.c_out)] if x.c_in else [])
        if spec.stateful and found != wanted:
            raise _Unknown("states")
        if dense_w.shape != (layers[-1].units, spec.vocab_size):
            raise _Unknown("output layer")
        # The ids come as [batch], not model.onnx's [batch, 1]: callers bind a flat view of
        # the same array, and the Squeeze it would need (5% of a 64-unit step) is gone.
        x = spec.input.name
        for k, layer in enumerate(layers):
            x = self.layer(k, layer, x)
        self.head_at = len(self.nodes)  # the window graph's template ends here
        head_int8 = (
            self.int8_weights
            and self.int8_kernel == "MatMulNBits"
            and layers[-1].units >= INT8_HEAD_UNITS
        )
        self.product(x, dense_w, self.add("dense_bias", dense_b), "logits", int8=head_int8)
        if greedy:
            self.node("ArgMax", ["logits"], [spec.next.name], axis=-1, keepdims=0)
            return
        self.node("Softmax", ["logits"], [spec.output.name], axis=-1)
        # ArgMax over the probabilities, as model.onnx does (the notebook's np.argmax).
        self.node("ArgMax", [spec.output.name], [spec.next.name], axis=-1, keepdims=0)

    def window(self, steps: int) -> bytes:
        """The window greedy graph: `steps` windows chained in one graph, each reading the
        seq_length characters before its choice, from the window ids [seq_length] (int64)
        it is given, then the characters the windows before it chose; it writes each
        window's choice (`greedy_outputs`).

        Each window runs the layers over its positions from zero states, as model.onnx
        does; a character's table rows are looked up once, for every window that reads it.
        """
        spec = self.spec
        length = spec.seq_length
        self.build(greedy=True)  # one position of every layer, then the output layer
        template, head = self.nodes[: self.head_at], self.nodes[self.head_at :]
        layers = self._layers or []
        hidden = layers[-1].h_out
        state_out = {x.h_in: x.h_out for x in layers} | {x.c_in: x.c_out for x in layers}
        state_out.pop("", None)
        zeros = {
            name: self.add(f"zero{x.units}", np.zeros((1, x.units), np.float32))
            for x in layers
            for name in (x.h_in, x.c_in)
            if name
        }
        outs = greedy_outputs(spec, steps)
        chars = [_in_step(j, spec.input.name) for j in range(length)]
        sizes = self.add(f"window{length}_sizes", np.ones(length, np.int64))
        nodes = [_encoded("Split", [spec.input.name, sizes], chars, {"axis": 0})]
        lookups = [n for n in template if n[2][0] in self.rows]
        body = [n for n in template if n[2][0] not in self.rows]

        def rows_of(j: int) -> None:  # character j's table rows, for every window
            for op, inputs, outputs, ints in lookups:
                ins = [chars[j] if x == spec.input.name else x for x in inputs]
                nodes.append(_encoded(op, ins, [f"c{j}/{outputs[0]}"], ints))

        for j in range(length):
            rows_of(j)
        for t in range(steps):
            for p in range(length):

                def name(x: str, t: int = t, p: int = p) -> str:
                    if not x or x in self.inits:
                        return x
                    if x in self.rows:
                        return f"c{t + p}/{x}"
                    if x in state_out:  # zero at a window's first position
                        return zeros[x] if p == 0 else f"w{t}p{p - 1}/{state_out[x]}"
                    return f"w{t}p{p}/{x}"

                for op, inputs, outputs, ints in body:
                    ins, out = [name(x) for x in inputs], [name(x) for x in outputs]
                    nodes.append(_encoded(op, ins, out, ints))

            def head_name(x: str, t: int = t) -> str:
                if not x or x in self.inits:
                    return x
                if x == spec.next.name:
                    return outs[t]
                return f"w{t}p{length - 1}/{x}" if x == hidden else f"w{t}/{x}"

            for op, inputs, outputs, ints in head:
                ins, out = [head_name(x) for x in inputs], [head_name(x) for x in outputs]
                nodes.append(_encoded(op, ins, out, ints))
            chars.append(outs[t])
            if t < steps - 1:
                rows_of(length + t)
        used = {x for _, ins, _, _ in self.nodes for x in ins} | set(zeros.values()) | {sizes}
        opsets = {"": OPSET, MS_DOMAIN: MS_OPSET} if self.int8_weights else {"": OPSET}
        return encode_model(
            nodes,
            [parts for name, parts in self.inits.items() if name in used],
            [encode_value_info(spec.input.name, INT64, [length])],
            [encode_value_info(n, INT64, [1]) for n in outs],
            ir_version=IR_VERSION,
            opsets=opsets,
            name="window",
        )

    def serialized(self, steps: int) -> bytes:
        """The serialized graph of `steps` chained copies of the built step: the one-step
        graph, or (steps > 1, after build(greedy=True)) the greedy graph, whose ids are
        int64 [1] (GatherND's indices) and whose states are [1, units]."""
        spec = self.spec
        if steps == 1:
            batch: list[str | int] = ["batch"]
            in_type = INT32 if spec.input.dtype == "int32" else INT64
            outputs = [
                encode_value_info(spec.output.name, FLOAT, ["batch", spec.vocab_size]),
                encode_value_info(spec.next.name, INT64, ["batch"]),
            ]
        else:  # greedy: one stream; the chosen characters only
            batch, in_type = [1], INT64
            outputs = [encode_value_info(n, INT64, batch) for n in greedy_outputs(spec, steps)]
        inputs = [encode_value_info(spec.input.name, in_type, batch)]
        for s in spec.states:
            inputs.append(encode_value_info(s.input, FLOAT, [*batch, s.shape[1]]))
            outputs.append(encode_value_info(s.output, FLOAT, [*batch, s.shape[1]]))
        opsets = {"": OPSET, MS_DOMAIN: MS_OPSET} if self.int8_weights else {"": OPSET}
        used = {x for _, ins, _, _ in self.nodes for x in ins}
        return encode_model(
            self.encoded(steps),
            [parts for name, parts in self.inits.items() if name in used],
            inputs,
            outputs,
            ir_version=IR_VERSION,
            opsets=opsets,
            name="step",
        )


def _encoded(op: str, inputs: list[str], outputs: list[str], ints: dict[str, int]) -> bytes:
    attrs = [Attribute(name=a, type=ATTR_INT, i=v) for a, v in ints.items()]
    domain = MS_DOMAIN if op in INT8_KERNELS else ""
    return encode_node(op, inputs, outputs, name=outputs[0], domain=domain, attributes=attrs)


def _nbits_block(k: int) -> int:
    """MatMulNBits' block (a power of two from 16): one block per column where the input
    axis is a power of two (fastest measured), else the largest that pads it by <= 1/8."""
    for block in (1024, 512, 256, 128, 64, 32):
        if block < 2 * k and -(-k // block) * block - k <= k / 8:
            return block
    return 16


def _dequantize(node: Node, consts: dict[str, np.ndarray]) -> np.ndarray:
    q, scale, zero = (consts[i] for i in node.inputs)
    axis = 1
    for a in node.attributes:
        if a.name == "axis" and a.i is not None:
            axis = a.i
    shape = [1] * q.ndim
    if scale.ndim:
        shape[axis] = -1
    diff = q.astype(np.float32) - zero.astype(np.float32).reshape(shape)
    return diff * scale.astype(np.float32).reshape(shape)


def _scaled(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLSTM's [1, in, gates*units] int8 weight as a float [gates*units, in]."""
    return ((q[0] - zero.reshape(1, -1)) * scale.reshape(1, -1)).T


def reorder_gates(a: np.ndarray, order: list[int], gates: int) -> np.ndarray:
    """`a` with the `gates` blocks of its last axis in `order` (a contiguous float32 copy):
    Keras, ONNX and the step graph each list the gates in their own order."""
    parts = np.split(a, gates, axis=-1)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=-1), np.float32)


def symmetric_int8(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per index of `axis` (peak / 127, zero point 0): the
    exporter's rule for int8 weights, so a weight read back from an int8 file quantizes to
    the same integers again."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale
