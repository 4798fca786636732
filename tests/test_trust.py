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
import onnxruntime as ort
import pytest
from helpers import REPO, edit_vocab
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import hostile_models as hostile  # noqa: E402

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE, ModelSpec
from runtime.errors import ArtifactError
from runtime.graph_rules import GraphRuleError, vet_model

MAX_SECONDS = 10
MAX_RSS_BYTES = 1 << 30


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


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the model directory that no model may make the runtime read."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(20, dtype=np.float32).tobytes())
    return path


@pytest.mark.parametrize("smuggle", [True, False])
def test_external_data_is_refused(model_copy: Path, tmp_path: Path, secret: Path, smuggle) -> None:
    data = hostile.external_data(model_copy, smuggle)
    # onnxruntime itself honours the field (even through the smuggled tag): the file is
    # read, so the refusal below is what protects the device.
    secret.rename(tmp_path / "moved.bin")
    with pytest.raises(Exception, match="secret.bin"):
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (tmp_path / "moved.bin").rename(secret)
    # Refused by the runtime's own parser, before onnxruntime is handed the bytes.
    _assert_refused(model_copy, tmp_path, needle="not a graph textgen-train writes")
    with pytest.raises(ArtifactError, match="external data|over 32 bits"):
        Generator.load(model_copy)


@pytest.mark.parametrize("name", list(hostile.HOSTILE))
def test_hostile_model_is_refused_fast_in_bounded_memory(
    model_copy: Path, tmp_path: Path, name: str
) -> None:
    build, precision, fragment = hostile.HOSTILE[name]
    build(model_copy)
    extra = ("This is Z", "--precision", precision) if precision != "fp32" else ("This is Z",)
    line = _assert_refused(model_copy, tmp_path, *extra, needle=fragment)
    assert "not a graph textgen-train writes" in line


@pytest.mark.parametrize(
    "tag",
    [
        bytes([0x08 | 0x80, 0x80, 0x80, 0x80, 0x00]),  # ir_version's tag, over-long
        hostile.smuggled_tag(1, 0),  # ir_version's tag with bit 32 set
    ],
)
def test_non_canonical_tags_are_refused(model_copy: Path, tag: bytes) -> None:
    data = (model_copy / MODEL_FILE).read_bytes()
    assert data[0] == 0x08  # ir_version comes first, as onnx writes it
    hostile.write(model_copy, tag + data[1:])
    with pytest.raises(ArtifactError, match="not a graph textgen-train writes"):
        Generator.load(model_copy)


def test_next_out_of_range_is_an_artifact_error(model_copy: Path) -> None:
    """A session whose `next` is outside the vocabulary (here: argmax + 20, or -1) never
    indexes the character table: the runtime's own check refuses it."""
    spec = ModelSpec.read(model_copy)

    def shifted(shift: int) -> bytes:
        proto = hostile.default_proto(model_copy)
        for node in proto.graph.node:
            if node.op_type == "ArgMax":
                node.output[0] = "raw_next"
        proto.graph.node.append(helper.make_node("Add", ["raw_next", "shift"], ["next"]))
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shift, np.int64), "shift"))
        return proto.SerializeToString()

    for shift in (20, -100, -1):  # a file like this is refused before onnxruntime sees it ...
        with pytest.raises(GraphRuleError, match="Add"):
            vet_model(shifted(shift), spec, "int8")
    # ... and a session built around the checks (as the export check does) is still caught
    # at the first character out of range (-1 would be a silently wrong, in-range choice).
    for shift in (20, -100):
        session = ort.InferenceSession(shifted(shift), providers=["CPUExecutionProvider"])
        gen = Generator.from_session(spec, session, model_copy)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen.generate("This is Z", 5)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen.generate_batch(["This is Z", "is Z"], 5)
        with pytest.raises(ArtifactError, match="outside its vocabulary"):
            gen._probe()


def test_axes_of_the_wrong_rank_are_refused_and_failures_inside_onnxruntime_are_caught(
    stateful_models: dict,
) -> None:
    """Fuzzing found a file whose Unsqueeze axes were [1, 1] (a repeated `dims`): the
    values passed, onnxruntime failed only when it ran the node, and `session.run` (a
    stateful prompt's warm-up) raises onnxruntime's own `Fail`, which is not a
    RuntimeError, so it escaped as a traceback."""
    import onnx

    model_dir = stateful_models["gru"]
    spec = ModelSpec.read(model_dir)
    proto = onnx.load(model_dir / MODEL_FILE)
    axes = next(t for t in proto.graph.initializer if t.name == "axis0")
    axes.CopyFrom(numpy_helper.from_array(np.array([[0]], np.int64), "axis0"))
    with pytest.raises(GraphRuleError, match="1-D int64 axes"):
        vet_model(proto.SerializeToString(), spec, "fp32")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    gen = Generator.from_session(spec, session, model_dir)
    for run in (
        lambda: gen.generate("The quick brown fox", 5),
        lambda: gen.generate_batch(["The quick", "brown fox"], 5),
        lambda: gen.context("The quick brown fox").top(3),
    ):
        with pytest.raises(ArtifactError, match="failed while generating"):
            run()


# --- what a model directory's names are ----------------------------------------------


@pytest.mark.parametrize("name", [VOCAB_FILE, MODEL_FILE])
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_file_that_is_not_a_regular_file_is_refused(
    model_copy: Path, tmp_path: Path, name: str, kind: str
) -> None:
    # A FIFO (which a tar archive can carry) blocked the open forever; /dev/zero was read
    # up to the size cap.
    path = model_copy / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    what = "a directory" if kind == "directory" else "a FIFO, device or socket"
    _assert_refused(model_copy, tmp_path, needle=f"{name} is {what}, not a regular file")


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
