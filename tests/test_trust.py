"""The trust boundary: hostile model directories, built here with the `onnx` package.

Each attack is one a crafted model directory (re-sealed with its own sha256) made work
against earlier versions: reading local files through external data (smuggled with
non-canonical protobuf tags or inside model-local functions), hangs (huge Loop trip
counts), memory bombs (ConstantOfShape, broadcasting, nested subgraphs), out-of-range
outputs and hostile vocab.json files. Each must end with one `Error:` line and exit 1,
quickly and in bounded memory, in a fresh process (as a user would meet it), and no file
outside the model directory may be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO, edit_vocab
from onnx import TensorProto, helper, numpy_helper

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE, ModelSpec
from runtime.errors import ArtifactError
from runtime.graph_rules import GraphRuleError, vet_model

MAX_SECONDS = 10
MAX_RSS_BYTES = 1 << 30


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes, *, tag: bytes | None = None) -> bytes:
    """A length-delimited field; `tag` replaces the canonical tag bytes."""
    return (tag if tag is not None else _varint(number << 3 | 2)) + _varint(len(payload)) + payload


def _smuggled_tag(number: int, wire: int) -> bytes:
    """The tag as a 5-byte varint with bit 32 set: protobuf keeps the low 32 bits."""
    return _varint((number << 3 | wire) | (1 << 32))


def _write(model_dir: Path, data: bytes, file: str = MODEL_FILE) -> None:
    (model_dir / file).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    if file == MODEL_FILE:
        edit_vocab(model_dir, lambda d: d.__setitem__("model_sha256", digest))
    else:
        edit_vocab(model_dir, lambda d: d.__setitem__("variants", {"int8": {"sha256": digest}}))


def _run_cli(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, int]:
    """`textgen ARGS` in a fresh process: result, seconds and the process' peak RSS in bytes."""
    # The child reports its own peak (VmHWM): ru_maxrss would carry over the parent's peak
    # through fork and exec.
    code = (
        "import atexit, sys\n"
        "def peak(path=sys.argv[1]):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            open(path, 'w').write(line.split()[1])\n"
        "atexit.register(peak)\n"
        "from runtime.cli import main\n"
        "sys.argv = ['textgen', *sys.argv[2:]]\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    peak_file = cwd / ".peak"
    out, err = cwd / ".stdout", cwd / ".stderr"
    start = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(peak_file), *args],
            cwd=cwd,
            env=env,
            stdout=fo,
            stderr=fe,
        )
        deadline = start + 60
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"textgen {args} hung")
            time.sleep(0.02)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = subprocess.CompletedProcess(
        proc.args, proc.returncode, out.read_text(), err.read_text()
    )
    return result, seconds, int(peak_file.read_text()) * 1024


def _assert_refused(model_dir: Path, tmp_path: Path, *extra: str, needle: str = "") -> str:
    """`textgen generate` and `textgen info` both end with one Error: line, exit 1, in
    bounded time and memory; returns the message."""
    args = ["--model", str(model_dir), *extra]
    for command in (["generate", *args], ["info", "--model", str(model_dir)]):
        if command[0] == "info" and extra:
            continue
        proc, seconds, rss = _run_cli(command, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert needle in lines[0]
        assert seconds < MAX_SECONDS
    assert rss < MAX_RSS_BYTES
    return lines[0]


def _default_proto(model_copy: Path) -> onnx.ModelProto:
    return onnx.load_from_string((model_copy / MODEL_FILE).read_bytes())


def _serialize_with_graph(proto: onnx.ModelProto, graph_bytes: bytes) -> bytes:
    """ModelProto bytes with a hand-made GraphProto (field 7)."""
    rest = onnx.ModelProto()
    rest.CopyFrom(proto)
    rest.ClearField("graph")
    return rest.SerializeToString() + _field(7, graph_bytes)


def _graph_with_initializer(graph: onnx.GraphProto, name: str, tensor_bytes: bytes) -> bytes:
    """GraphProto bytes whose initializer `name` is replaced by hand-made TensorProto bytes."""
    rest = onnx.GraphProto()
    rest.CopyFrom(graph)
    kept = [t for t in rest.initializer if t.name != name]
    del rest.initializer[:]
    rest.initializer.extend(kept)
    return rest.SerializeToString() + _field(5, tensor_bytes)


def _external_tensor(name: str, dims: list[int], smuggle: bool) -> bytes:
    """A float TensorProto whose data lives in secret.bin, tags smuggled or plain."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    base = t.SerializeToString()
    entry = _field(1, b"location") + _field(2, b"secret.bin")
    if smuggle:
        tags = _smuggled_tag(13, 2), _smuggled_tag(14, 0)
        return base + _field(13, entry, tag=tags[0]) + tags[1] + _varint(1)
    return base + _field(13, entry) + _varint(14 << 3 | 0) + _varint(1)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the model directory that no model may make the runtime read."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(20, dtype=np.float32).tobytes())
    return path


@pytest.mark.parametrize("smuggle", [True, False])
def test_external_data_is_refused(model_copy: Path, tmp_path: Path, secret: Path, smuggle) -> None:
    proto = _default_proto(model_copy)
    graph = _graph_with_initializer(
        proto.graph, "dense_b", _external_tensor("dense_b", [20], smuggle)
    )
    data = _serialize_with_graph(proto, graph)
    # onnxruntime itself honours the field (even through the smuggled tag): the file is
    # read, so the refusal below is what protects the device.
    secret.rename(tmp_path / "moved.bin")
    with pytest.raises(Exception, match="secret.bin"):
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (tmp_path / "moved.bin").rename(secret)
    _write(model_copy, data)
    # Refused by the runtime's own parser, before onnxruntime is handed the bytes.
    _assert_refused(model_copy, tmp_path, needle="not a graph textgen-train writes")
    with pytest.raises(ArtifactError, match="outside the file|never writes|over 32 bits"):
        Generator.load(model_copy)


def test_model_local_function_is_refused(model_copy: Path, tmp_path: Path) -> None:
    proto = _default_proto(model_copy)
    body = helper.make_node("Identity", ["x"], ["y"])
    fn = helper.make_function(
        "com.microsoft",
        "Evil",
        ["x"],
        ["y"],
        [body],
        [helper.make_opsetid("", 17)],
    )
    proto.functions.append(fn)
    _write(model_copy, proto.SerializeToString())
    _assert_refused(model_copy, tmp_path, needle="field 25")


def _add_nodes(proto: onnx.ModelProto, nodes: list, inits: list, into: str) -> bytes:
    """Insert `nodes` whose last output replaces the input `into` of the Softmax."""
    graph = proto.graph
    for node in graph.node:
        if node.op_type == "Softmax":
            node.input[0] = into
    head = [n for n in graph.node]
    del graph.node[:]
    softmax = next(i for i, n in enumerate(head) if n.op_type == "Softmax")
    graph.node.extend(head[:softmax] + nodes + head[softmax:])
    graph.initializer.extend(inits)
    return proto.SerializeToString()


def test_loop_with_huge_trip_count_is_refused(model_copy: Path, tmp_path: Path) -> None:
    proto = _default_proto(model_copy)
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
    nodes = [
        helper.make_node("Loop", ["trips", "yes"], [], body=body),
        helper.make_node("Identity", ["logits"], ["logits2"]),
    ]
    _write(model_copy, _add_nodes(proto, nodes, inits, "logits2"))
    _assert_refused(model_copy, tmp_path, needle="not a graph textgen-train writes")


def test_constant_of_shape_bomb_is_refused(model_copy: Path, tmp_path: Path) -> None:
    proto = _default_proto(model_copy)
    inits = [numpy_helper.from_array(np.array([1 << 28], np.int64), "bomb_shape")]
    nodes = [
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"]),
        helper.make_node("Identity", ["logits"], ["logits2"]),
    ]
    _write(model_copy, _add_nodes(proto, nodes, inits, "logits2"))
    _assert_refused(model_copy, tmp_path, needle="ConstantOfShape")


def test_broadcast_bomb_with_allowed_operators_is_refused(model_copy: Path, tmp_path: Path) -> None:
    """Mul is allowed in int8 graphs; [n, 1] x [1, n] weights would make n² floats."""
    proto = _default_proto(model_copy)
    n = 1 << 15
    inits = [
        numpy_helper.from_array(np.ones((n, 1), np.float32), "a"),
        numpy_helper.from_array(np.ones((1, n), np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["square"]),
        helper.make_node("Identity", ["logits"], ["logits2"]),
    ]
    _write(model_copy, _add_nodes(proto, nodes, inits, "logits2"), file="model.int8.onnx")
    _assert_refused(model_copy, tmp_path, "--precision", "int8", needle="Mul")


def test_input_dependent_allocation_is_refused(model_copy: Path, tmp_path: Path) -> None:
    """A size computed from the input passes a probe on zeros: refused by its operators."""
    proto = _default_proto(model_copy)
    nodes = [
        helper.make_node("Cast", ["char_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["ids64"], ["biggest"], keepdims=1),
        helper.make_node("Reshape", ["biggest", "shape1"], ["biggest1"]),
        helper.make_node("Mul", ["biggest1", "million"], ["size"]),
        helper.make_node("ConstantOfShape", ["size"], ["bomb"]),
        helper.make_node("Identity", ["logits"], ["logits2"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([1 << 26], np.int64), "million"),
    ]
    _write(model_copy, _add_nodes(proto, nodes, inits, "logits2"))
    _assert_refused(model_copy, tmp_path, "This is Z", needle="not one rnn-textgen writes")


def test_nested_subgraphs_are_refused_fast(model_copy: Path, tmp_path: Path) -> None:
    """60 nested If subgraphs around a 40 MB weight (deeper than the onnx package nests, so
    built by hand): refused without copying each level."""
    payload = numpy_helper.from_array(np.zeros(10 << 20, np.float32), "payload")
    graph = _field(5, payload.SerializeToString())  # GraphProto.initializer
    for _ in range(60):
        attribute = (
            _field(1, b"then_branch") + _varint(20 << 3) + _varint(5) + _field(6, graph)
        )  # name, type GRAPH, g
        node = _field(1, b"yes") + _field(2, b"o") + _field(4, b"If") + _field(5, attribute)
        graph = _field(1, node)  # GraphProto.node
    proto = _default_proto(model_copy)
    data = _serialize_with_graph(proto, proto.graph.SerializeToString() + graph)
    assert len(data) > 40_000_000
    _write(model_copy, data)
    _assert_refused(model_copy, tmp_path, needle="never writes")


@pytest.mark.parametrize(
    "tag",
    [
        bytes([0x08 | 0x80, 0x80, 0x80, 0x80, 0x00]),  # ir_version's tag, over-long
        _smuggled_tag(1, 0),  # ir_version's tag with bit 32 set
    ],
)
def test_non_canonical_tags_are_refused(model_copy: Path, tag: bytes) -> None:
    data = (model_copy / MODEL_FILE).read_bytes()
    assert data[0] == 0x08  # ir_version comes first, as onnx writes it
    _write(model_copy, tag + data[1:])
    with pytest.raises(ArtifactError, match="not a graph textgen-train writes"):
        Generator.load(model_copy)


def test_next_out_of_range_is_an_artifact_error(model_copy: Path) -> None:
    """A session whose `next` is outside the vocabulary (here: argmax + 20, or -1) never
    indexes the character table: the runtime's own check refuses it."""
    spec = ModelSpec.read(model_copy)
    for shift in (20, -100, -1):
        # A file like this is refused before onnxruntime sees it ...
        proto = _default_proto(model_copy)
        for node in proto.graph.node:
            if node.op_type == "ArgMax":
                node.output[0] = "raw_next"
        proto.graph.node.append(helper.make_node("Add", ["raw_next", "shift"], ["next"]))
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shift, np.int64), "shift"))
        with pytest.raises(GraphRuleError, match="Add"):
            vet_model(proto.SerializeToString(), spec, "int8")
    # ... and a session built around the checks (as the export check does) is still caught
    # at the first character out of range (-1 would be a silently wrong, in-range choice).
    for shift in (20, -100):
        proto = _default_proto(model_copy)
        for node in proto.graph.node:
            if node.op_type == "ArgMax":
                node.output[0] = "raw_next"
        proto.graph.node.append(helper.make_node("Add", ["raw_next", "shift"], ["next"]))
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shift, np.int64), "shift"))
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        gen = Generator(spec=spec, session=session, model_dir=model_copy)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen.generate("This is Z", 5)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen.generate_batch(["This is Z", "is Z"], 5)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen._probe()


# --- vocab.json ----------------------------------------------------------------------


def test_deeply_nested_vocab_is_one_error(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / VOCAB_FILE).write_text("[" * 100_000 + "]" * 100_000)
    _assert_refused(model_copy, tmp_path, needle="nests too deeply")


def test_deeply_nested_training_facts_are_refused(model_copy: Path, tmp_path: Path) -> None:
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    edit_vocab(model_copy, lambda d: d["training"].__setitem__("x", deep))
    _assert_refused(model_copy, tmp_path, needle="training holds a value")


@pytest.mark.parametrize(
    ("key", "value"),
    [("bytes", "many"), ("greedy_agreement", "high"), ("greedy_agreement", 7), ("bytes", -1)],
)
def test_bad_variant_facts_are_refused(model_copy: Path, tmp_path: Path, key, value) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    edit_vocab(model_copy, lambda d: d.__setitem__("variants", {"int8": {"sha256": digest}}))
    edit_vocab(model_copy, lambda d: d["variants"]["int8"].__setitem__(key, value))
    _assert_refused(model_copy, tmp_path, needle=f"variants.int8.{key}")


def test_control_characters_in_vocab_are_escaped(model_copy: Path, tmp_path: Path) -> None:
    forged = "x\nsha256:      0000\x1b]0;owned\x07\u202e"
    edit_vocab(model_copy, lambda d: d["training"].__setitem__("corpus", forged))
    edit_vocab(model_copy, lambda d: d["architecture"].__setitem__("cell", "\x1b[2J"))
    proc, _, _ = _run_cli(["info", "--model", str(model_copy)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\u202e" not in proc.stdout
    assert "\\x1b]0;owned\\x07" in proc.stdout and "\\u202e" in proc.stdout
    assert sum(line.startswith("sha256:") for line in proc.stdout.splitlines()) == 1


def test_lone_surrogate_in_chars_is_refused(model_copy: Path, tmp_path: Path) -> None:
    text = (model_copy / VOCAB_FILE).read_text()
    doc = json.loads(text)
    doc["chars"][0] = "\ud800"
    (model_copy / VOCAB_FILE).write_text(json.dumps(doc))
    _assert_refused(model_copy, tmp_path, needle="single Unicode character")


def test_every_shipped_and_tiny_model_passes(tiny_model: Path) -> None:
    """The checks accept what the exporters write (every cell, mode and precision is
    trained and loaded in test_trainer / test_stateful; here the two fixtures)."""
    from runtime.artifact import default_model_dir

    for model_dir in (default_model_dir(), tiny_model):
        gen = Generator.load(model_dir)
        assert len(gen.generate(gen.spec.chars[0] * gen.spec.seq_length, 10)) > 0
