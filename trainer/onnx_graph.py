"""ONNX graphs shaped for inference, built straight from the trained Keras weights.

tf2onnx turns a Keras SimpleRNN or GRU into an ONNX `Loop` whose per-Run overhead dominates a
small model (measured: 19 µs per Run for the default model, against 6 µs for the graph built
here). A window model has a fixed length, so every cell maps onto ONNX's native `RNN`,
`LSTM` or `GRU` operator, and the whole model is a handful of nodes:

    char_ids [batch, L] -> Transpose -> Gather(identity), or OneHot = one-hot [L, batch, V]
      -> RNN | LSTM | GRU (x layers) -> Squeeze -> Gemm -> Softmax = probs [batch, V]
                                                          -> ArgMax = next [batch]

`next` (the greedy choice) is computed in the graph so the runtime's hot loop reads back
one integer per sequence instead of a row of probabilities. These graphs are the only ones
the runtime accepts (`runtime.graph_rules`), so there is no general-purpose fallback: a
model this builder cannot map is refused at export, never exported as something else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.artifact import NEXT_NAME, uses_one_hot_op
from runtime.graph_rules import ACTIVATIONS, IR_VERSION, OPSET
from runtime.step_graph import preferred_builder, reorder_gates, symmetric_int8

from .model import INPUT_NAME, LAYERS, OUTPUT_NAME


class NotNativeError(Exception):
    """The Keras model uses something the native builder does not map."""


def _activation(layer: Any, key: str) -> str:
    name = layer.get_config().get(key)
    if name not in ACTIVATIONS:
        raise NotNativeError(f"{layer.name}: {key} {name!r} has no native ONNX mapping")
    return ACTIVATIONS[name]


def _cell_node(
    layer: Any, x: str, i: int, want_sequence: bool, initial: list[str] | None = None
) -> tuple[list, list, str, list[str]]:
    """ONNX node and initializers for one Keras recurrent layer reading x [L, batch, in].

    Returns the nodes, the initializers, the name of the output the next stage reads (Y if
    want_sequence, else Y_h) and the final-state outputs [Y_h] or [Y_h, Y_c]. `initial`
    names the [1, batch, units] initial state(s) (h, and c for an LSTM); None = zeros.
    """
    import keras

    cfg = layer.get_config()
    if cfg.get("go_backwards") or cfg.get("stateful") or not cfg.get("use_bias", True):
        raise NotNativeError(f"{layer.name}: go_backwards, stateful or no bias")
    weights = layer.get_weights()
    units = int(cfg["units"])
    act = _activation(layer, "activation")
    if isinstance(layer, keras.layers.LSTM):
        # Keras gates are i, f, c, o; ONNX wants i, o, f, c.
        kernel, recurrent, bias = (reorder_gates(w, [0, 3, 1, 2], 4) for w in weights)
        op, attrs = "LSTM", {"activations": [_activation(layer, "recurrent_activation"), act, act]}
        b = np.concatenate([bias, np.zeros_like(bias)])
    elif isinstance(layer, keras.layers.GRU):
        if not cfg.get("reset_after", True):
            raise NotNativeError(f"{layer.name}: GRU with reset_after=False")
        # Same z, r, h gate order; reset_after=True is ONNX's linear_before_reset=1.
        kernel, recurrent, bias = weights
        op = "GRU"
        attrs = {
            "activations": [_activation(layer, "recurrent_activation"), act],
            "linear_before_reset": 1,
        }
        b = np.concatenate([bias[0], bias[1]])
    elif isinstance(layer, keras.layers.SimpleRNN):
        kernel, recurrent, bias = weights
        op, attrs = "RNN", {"activations": [act]}
        b = np.concatenate([bias, np.zeros_like(bias)])
    else:  # pragma: no cover - filtered by the caller
        raise NotNativeError(f"{layer.name}: {type(layer).__name__}")
    names = [f"l{i}_W", f"l{i}_R", f"l{i}_B"]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(kernel.T[None], np.float32), names[0]),
        numpy_helper.from_array(np.ascontiguousarray(recurrent.T[None], np.float32), names[1]),
        numpy_helper.from_array(np.ascontiguousarray(b[None], np.float32), names[2]),
    ]
    inputs = [x, *names]
    if initial:
        inputs += ["", *initial]  # no sequence_lens: every row runs the full length
    y = f"l{i}_Y" if want_sequence else ""
    finals = [f"l{i}_Yh"] + ([f"l{i}_Yc"] if op == "LSTM" and initial else [])
    node = helper.make_node(op, inputs, [y, *finals], hidden_size=units, name=f"l{i}_{op}", **attrs)
    return [node], inits, y or finals[0], finals


def _split_layers(model: Any) -> tuple[list[Any], Any]:
    """The recurrent layers and the softmax Dense, or NotNativeError."""
    import keras

    recurrent_types = (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU)
    cells, dense = [], []
    for layer in model.layers:
        if isinstance(layer, recurrent_types):
            cells.append(layer)
        elif isinstance(layer, keras.layers.Dense):
            dense.append(layer)
        elif not isinstance(layer, keras.layers.InputLayer | keras.layers.Dropout):
            raise NotNativeError(f"layer {layer.name} ({type(layer).__name__})")
    if not cells or len(dense) != 1 or dense[0].get_config().get("activation") != "softmax":
        raise NotNativeError("expected recurrent layers followed by one softmax Dense")
    return cells, dense[0]


def _front(vocab_size: int) -> tuple[list, list]:
    """char_ids [batch, time] -> one-hot x0 [time, batch, vocab], plus shared constants.

    One-hot as a row lookup (the same numbers as tf.one_hot) from an identity table, or,
    where that table would be most of the file (`runtime.artifact.uses_one_hot_op`, format
    version 3), with ONNX's OneHot operator."""
    transpose = helper.make_node(
        "Transpose", [INPUT_NAME], ["ids_tb"], perm=[1, 0], name="time_major"
    )
    axis0 = numpy_helper.from_array(np.array([0], np.int64), "axis0")
    if uses_one_hot_op(vocab_size):
        one_hot = helper.make_node(
            "OneHot",
            ["ids_tb", "one_hot_depth", "one_hot_values"],
            ["x0"],
            axis=-1,
            name="one_hot",
        )
        inits = [
            # int32: the depth type onnxruntime's OneHot kernel pairs with int32 ids.
            numpy_helper.from_array(np.array(vocab_size, np.int32), "one_hot_depth"),
            numpy_helper.from_array(np.array([0, 1], np.float32), "one_hot_values"),
        ]
        return [transpose, one_hot], [*inits, axis0]
    lookup = helper.make_node("Gather", ["one_hot_table", "ids_tb"], ["x0"], name="one_hot")
    table = numpy_helper.from_array(np.eye(vocab_size, dtype=np.float32), "one_hot_table")
    return [transpose, lookup], [table, axis0]


def _head(dense: Any) -> tuple[list, list]:
    """hidden [batch, units] -> probs [batch, vocab]."""
    kernel, bias = dense.get_weights()
    inits = [
        numpy_helper.from_array(kernel.astype(np.float32), "dense_W"),
        numpy_helper.from_array(bias.astype(np.float32), "dense_b"),
    ]
    nodes = [
        helper.make_node("Gemm", ["hidden", "dense_W", "dense_b"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1, name="softmax"),
    ]
    return nodes, inits


def native_graph(model: Any, seq_length: int, vocab_size: int) -> onnx.ModelProto:
    """The window model's inference graph, or NotNativeError if it cannot be built natively."""
    cells, dense = _split_layers(model)
    nodes, inits = _front(vocab_size)
    if len(cells) > 1:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    x = "x0"
    for i, layer in enumerate(cells):
        last = i == len(cells) - 1
        cell_nodes, cell_inits, out, _ = _cell_node(layer, x, i, want_sequence=not last)
        nodes += cell_nodes
        inits += cell_inits
        # Y is [L, 1, batch, U] (one direction), Y_h is [1, batch, U]: drop the direction axis.
        x = f"l{i}_x" if not last else "hidden"
        nodes.append(helper.make_node("Squeeze", [out, "axis1" if not last else "axis0"], [x]))
    head_nodes, head_inits = _head(dense)
    graph = helper.make_graph(
        nodes + head_nodes,
        "rnn_textgen",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT32, ["batch", seq_length])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", vocab_size])],
        inits + head_inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def state_names(model: Any) -> list[tuple[str, str, int]]:
    """(input, output, units) of every state tensor of the step graph, in feed order."""
    import keras

    cells, _ = _split_layers(model)
    out = []
    for i, layer in enumerate(cells):
        units = int(layer.get_config()["units"])
        out.append((f"h{i}", f"h{i}_out", units))
        if isinstance(layer, keras.layers.LSTM):
            out.append((f"c{i}", f"c{i}_out", units))
    return out


def stateful_graph(model: Any, vocab_size: int) -> onnx.ModelProto:
    """The step graph of a sequence model: any number of characters in, state carried.

    Inputs: char_ids [batch, time] and every layer's state ([batch, units]: h, and c for an
    LSTM). Outputs: probs and next for the character after the last one fed, and the new
    states. time = 1 is one generation step; time = len(prompt) warms up in a single Run.
    """
    cells, dense = _split_layers(model)
    states = state_names(model)
    nodes, inits = _front(vocab_size)
    if len(cells) > 1:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    x = "x0"
    k = 0
    for i, layer in enumerate(cells):
        last = i == len(cells) - 1
        n_states = 2 if layer.__class__.__name__ == "LSTM" else 1
        initial = []
        for name, _, _ in states[k : k + n_states]:
            nodes.append(helper.make_node("Unsqueeze", [name, "axis0"], [f"{name}_1bu"]))
            initial.append(f"{name}_1bu")
        cell_nodes, cell_inits, out, finals = _cell_node(
            layer, x, i, want_sequence=not last, initial=initial
        )
        nodes += cell_nodes
        inits += cell_inits
        for (_, out_name, _), final in zip(states[k : k + n_states], finals, strict=True):
            nodes.append(helper.make_node("Squeeze", [final, "axis0"], [out_name]))
        if not last:
            x = f"l{i}_x"
            nodes.append(helper.make_node("Squeeze", [out, "axis1"], [x]))
        else:
            nodes.append(helper.make_node("Identity", [states[k][1]], ["hidden"]))
        k += n_states
    head_nodes, head_inits = _head(dense)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT32, ["batch", "time"])]
    inputs += [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", u]) for n, _, u in states
    ]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", vocab_size])]
    outputs += [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", u]) for _, o, u in states
    ]
    graph = helper.make_graph(
        nodes + head_nodes, "rnn_textgen_step", inputs, outputs, inits + head_inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def graph_builder(model: Any) -> str:
    """How the runtime should run this model's generation steps (runtime.step_graph's rule,
    by cell and the narrowest layer)."""
    cells, _ = _split_layers(model)
    kinds = {layer: cell for cell, layer in LAYERS.items()}
    choices = {
        preferred_builder(kinds[type(c)], int(c.get_config()["units"]))
        for c in cells
        if type(c) in kinds
    }
    return "decomposed" if choices == {"decomposed"} else "native"


def finish(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Add the greedy `next` output, name the batch axis, pin the IR version, and check."""
    # ArgMax over the probabilities (not the logits) is exactly the notebook's np.argmax.
    proto.graph.node.append(
        helper.make_node("ArgMax", [OUTPUT_NAME], [NEXT_NAME], axis=-1, keepdims=0, name="greedy")
    )
    proto.graph.output.append(
        helper.make_tensor_value_info(NEXT_NAME, TensorProto.INT64, ["batch"])
    )
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.ir_version = IR_VERSION
    proto.producer_name = "rnn-textgen"
    proto.doc_string = "rnn-textgen character model"
    onnx.checker.check_model(proto)
    return proto


def build(model: Any, seq_length: int, vocab_size: int, mode: str = "window") -> bytes:
    """The serialized inference graph (window or step), or NotNativeError."""
    if mode == "stateful":
        proto = stateful_graph(model, vocab_size)
    else:
        proto = native_graph(model, seq_length, vocab_size)
    return finish(proto).SerializeToString()


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 quantization of an exported graph's weights (onnxruntime.quantization).

    LSTM layers become DynamicQuantizeLSTM and the output layer MatMulInteger; SimpleRNN and
    GRU layers, which have no integer kernel in onnxruntime, and the one-hot table keep
    int8 weights that are dequantized once, at load (`_store_int8`). Weights are quantized
    per channel: measured on an LSTM 256 it agreed with fp32 slightly more often than
    per-tensor, at 1% more size.
    """
    import logging
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load_from_string(onnx_bytes)
    nodes = list(proto.graph.node)
    for i, node in enumerate(nodes):
        if node.op_type == "Gemm":  # the quantizer handles MatMul, not Gemm
            a, w, b = node.input
            nodes[i : i + 1] = [
                helper.make_node("MatMul", [a, w], ["dense_mm"], name="dense_matmul"),
                helper.make_node("Add", ["dense_mm", b], list(node.output), name="dense_bias"),
            ]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    root = logging.getLogger()
    level = root.level
    # The quantizer logs to the root logger, advising a pre-processing pass meant for
    # convolutional models; for these few nodes it changes nothing, so keep it quiet.
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(
                proto,
                out,
                op_types_to_quantize=["LSTM", "MatMul"],
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
            quantized = onnx.load(out)
    finally:
        root.setLevel(level)
    _store_int8(quantized)
    quantized.ir_version = IR_VERSION
    quantized.producer_name = "rnn-textgen"
    onnx.checker.check_model(quantized)
    return quantized.SerializeToString()


def _store_int8(proto: onnx.ModelProto) -> None:
    """Store what quantize_dynamic leaves float as int8 weights with a per-channel scale and
    a DequantizeLinear: the RNN and GRU weights (onnxruntime has no integer kernel for those
    cells) and the one-hot table (0 and 1: exact). onnxruntime folds each DequantizeLinear
    into a float constant when the session is built (with session.disable_quant_qdq, which
    the runtime sets), so the file is int8-sized and a step runs at fp32 speed."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    targets = [n.input[0] for n in graph.node if n.op_type == "Gather"]  # (table, ids)
    for node in graph.node:
        if node.op_type in ("RNN", "GRU"):
            targets += [node.input[1], node.input[2]]  # W [1, gates*H, in], R [1, gates*H, H]
    dequantize = []
    for name in dict.fromkeys(targets):
        weight = numpy_helper.to_array(inits[name]).astype(np.float32)
        axis = 1 if weight.ndim == 3 else 0  # one scale per output row
        q, scale = symmetric_int8(weight, axis)
        graph.initializer.remove(inits[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero"),
            ]
        )
        dequantize.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                [name],
                axis=axis,
                name=f"{name}_dequantize",
            )
        )
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(dequantize + nodes)
