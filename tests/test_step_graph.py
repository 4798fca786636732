"""Decomposed step graphs (runtime.step_graph): same numbers as the native operators, chosen
by vocab.json's graph_builder, and a safe fallback to model.onnx for anything else."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import edit_vocab, reseal
from onnx import numpy_helper

from runtime import Generator
from runtime.artifact import MODEL_FILE, StateSpec, TensorSpec
from runtime.decoding import GenerationOptions
from runtime.errors import ArtifactError, GenerationSettingsError
from runtime.loading import session_options
from runtime.onnx_proto import (
    encode_model,
    encode_node,
    encode_tensor,
    encode_value_info,
    parse_model,
)
from runtime.step_graph import (
    GREEDY_STEPS,
    INT8_KERNEL,
    WINDOW_MAX_POSITIONS,
    decompose,
    decompose_window,
    greedy_outputs,
    preferred_builder,
    wants_greedy_graph,
    window_builder,
)

VOCAB = 23


def _spec(names: list[tuple[str, str, int]]):
    from runtime.artifact import ModelSpec

    return ModelSpec(
        chars=tuple(chr(65 + i) for i in range(VOCAB)),
        seq_length=10,
        input=TensorSpec("char_ids", "int32", (None, None)),
        output=TensorSpec("probs", "float32", (None, VOCAB)),
        next=TensorSpec("next", "int64", (None,)),
        model_sha256="0" * 64,
        mode="stateful",
        states=tuple(StateSpec(i, o, (None, u)) for i, o, u in names),
        graph_builder="decomposed",
    )


def _graphs(cell: str, layers: int, units: int):
    """A stateful Keras model with random (not flat) weights, its native graph and spec."""
    import keras

    from trainer import onnx_graph
    from trainer.model import build_model

    keras.utils.set_random_seed(7)
    model = build_model(
        VOCAB,
        10,
        units=units,
        cell=cell,
        activation="relu" if cell == "simple" else "tanh",
        layers=layers,
        mode="stateful",
    )
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.4, w.shape).astype(np.float32))
    native = onnx_graph.build(model, 10, VOCAB, mode="stateful")
    return native, onnx_graph.quantize_int8(native), _spec(onnx_graph.state_names(model))


def _window_graphs(cell: str, layers: int, units: int, seq: int):
    """A window Keras model with random (not flat) weights, its native graph and spec."""
    import keras

    from runtime.artifact import ModelSpec
    from trainer import onnx_graph
    from trainer.model import build_model

    keras.utils.set_random_seed(7)
    activation = "relu" if cell == "simple" else "tanh"
    model = build_model(VOCAB, seq, units=units, cell=cell, activation=activation, layers=layers)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.4, w.shape).astype(np.float32))
    native = onnx_graph.build(model, seq, VOCAB)
    spec = ModelSpec(
        chars=tuple(chr(65 + i) for i in range(VOCAB)),
        seq_length=seq,
        input=TensorSpec("char_ids", "int32", (None, seq)),
        output=TensorSpec("probs", "float32", (None, VOCAB)),
        next=TensorSpec("next", "int64", (None,)),
        model_sha256="0" * 64,
    )
    return native, onnx_graph.quantize_int8(native), spec


def _steps(
    data: bytes, spec, ids: np.ndarray, start: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """probs [T, B, V], next [T, B] and each state [T, B, units], feeding ids [B, T] one
    character per Run from `start` (one array per state; zeros if None)."""
    session = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
    if start is None:
        start = [np.zeros((ids.shape[0], s.shape[1]), np.float32) for s in spec.states]
    state = {s.input: v for s, v in zip(spec.states, start, strict=True)}
    names = ["probs", "next", *(s.output for s in spec.states)]
    flat = len(session.get_inputs()[0].shape) == 1  # the step graph reads ids [batch]
    probs, picks, states = [], [], []
    for t in range(ids.shape[1]):
        feed = ids[:, t] if flat else ids[:, t : t + 1]
        p, n, *new = session.run(names, {"char_ids": feed, **state})
        state = {s.input: v for s, v in zip(spec.states, new, strict=True)}
        probs.append(p)
        picks.append(n)
        states.append(new)
    return np.stack(probs), np.stack(picks), [np.stack(v) for v in zip(*states, strict=True)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("layers", [1, 2])
def test_step_graph_computes_what_the_native_operators_do(cell: str, layers: int) -> None:
    native, int8, spec = _graphs(cell, layers, units=12)
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, 30)).astype(np.int32)
    for precision, data in (("fp32", native), ("int8", int8)):
        step = decompose(parse_model(data), spec, precision)
        assert step is not None, precision
        want_p, want_n, _ = _steps(data, spec, ids)
        got_p, got_n, _ = _steps(step, spec, ids)
        # Below 256 units int8 layers multiply the dequantized weights in float, where
        # DynamicQuantizeLSTM and the int8 output layer round activations to 8 bits.
        atol = 5e-3 if precision == "int8" else 1e-5
        assert np.abs(want_p - got_p).max() <= atol
        assert (want_n == got_n).mean() >= (0.97 if atol > 1e-5 else 1.0)


@pytest.mark.parametrize(
    ("cell", "units"), [("lstm", 12), ("gru", 12), ("simple", 12), ("lstm", 128), ("gru", 128)]
)
def test_greedy_graph_is_the_step_graph_fed_its_own_choices(cell: str, units: int) -> None:
    """One Run of the greedy graph of k steps chooses the k characters that k Runs of the
    one-step graph choose when each choice is fed back, and ends in the same states (from
    128 units an int8 LSTM or GRU multiplies in MatMulNBits, which adds the greedy step's
    table row as its bias)."""
    native, int8, spec = _graphs(cell, 2, units=units)
    rng = np.random.default_rng(2)
    k = 5
    for precision, data in (("fp32", native), ("int8", int8)):
        one = ort.InferenceSession(
            decompose(parse_model(data), spec, precision),
            session_options(1),
            providers=["CPUExecutionProvider"],
        )
        greedy_graph = decompose(parse_model(data), spec, precision, steps=k)
        ops = {n.op_type for n in onnx.load_from_string(greedy_graph).graph.node}
        assert "Softmax" not in ops  # the greedy graph's ArgMax reads the logits
        greedy = ort.InferenceSession(
            greedy_graph, session_options(1), providers=["CPUExecutionProvider"]
        )
        assert [o.name for o in greedy.get_outputs()][:k] == greedy_outputs(spec, k)

        def feed(char: np.ndarray, states: list[np.ndarray]) -> dict[str, np.ndarray]:
            return {
                "char_ids": char,
                **{s.input: v for s, v in zip(spec.states, states, strict=True)},
            }

        for _ in range(3):  # the greedy graph runs one stream
            start = [rng.normal(0, 0.5, (1, s.shape[1])).astype(np.float32) for s in spec.states]
            ids = rng.integers(0, VOCAB, 1)
            chosen, states, char = [], start, ids.astype(np.int32)
            for _ in range(k):
                outs = ["next", *(s.output for s in spec.states)]
                char, *states = one.run(outs, feed(char, states))
                chosen.append(char)
                char = char.astype(np.int32)
            got = greedy.run(None, feed(ids, start))
            assert np.array_equal(np.stack(got[:k]), np.stack(chosen)), precision
            for want, have in zip(states, got[k:], strict=True):
                # Equal but for rounding: MatMulNBits adds its bias inside its sums.
                assert np.abs(want - have).max() <= 1e-5, precision


@pytest.mark.parametrize(
    ("cell", "layers", "units", "precision"),
    [
        ("simple", 1, 12, "fp32"),
        ("simple", 2, 12, "int8"),
        ("simple", 1, 256, "int8"),  # the int8 output layer
        ("lstm", 2, 12, "fp32"),
        ("gru", 1, 12, "fp32"),
        ("gru", 1, 128, "int8"),  # MatMulNBits
    ],
)
def test_window_graph_chooses_what_model_onnx_chooses(
    cell: str, layers: int, units: int, precision: str
) -> None:
    """One Run of the window greedy graph of k windows chooses the k characters model.onnx
    chooses when each choice is appended to the window and the next window read."""
    native, int8, spec = _window_graphs(cell, layers, units, seq=4)
    data = native if precision == "fp32" else int8
    k = 6
    graph = decompose_window(parse_model(data), spec, precision, steps=k)
    assert graph is not None
    window = ort.InferenceSession(graph, session_options(1), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in window.get_outputs()] == greedy_outputs(spec, k)
    rng = np.random.default_rng(4)
    agree = []
    for _ in range(8):
        ids = list(rng.integers(0, VOCAB, 4))
        got = [int(x[0]) for x in window.run(None, {"char_ids": np.array(ids, np.int64)})]
        want = []
        for _ in range(k):  # model.onnx, one window per Run, each choice fed back
            seen = np.array([(ids + want)[-4:]], np.int32)
            want.append(int(reference.run(["next"], {"char_ids": seen})[0][0]))
        agree.append(got == want)
    # int8 from 128 units: MatMulNBits rounds the activations where model.onnx multiplies
    # the dequantized weights in float, and may part on a near tie.
    assert all(agree) if precision == "fp32" or units < 128 else sum(agree) >= 6, agree


def test_only_short_simple_rnn_windows_get_a_window_graph() -> None:
    """The rule WINDOW_CELLS, WINDOW_MAX_POSITIONS and WINDOW_MAX_UNITS state."""
    longest = WINDOW_MAX_POSITIONS
    for cell, layers, units, seq, wanted in [
        ("simple", 1, 50, 3, "decomposed"),  # the default model's shape
        ("simple", 2, 12, longest // 2, "decomposed"),
        ("simple", 2, 12, longest // 2 + 1, "native"),
        ("simple", 1, 512, 3, "native"),
        ("lstm", 1, 12, 3, "native"),
        ("gru", 1, 12, 3, "native"),
    ]:
        native, _, spec = _window_graphs(cell, layers, units, seq)
        assert window_builder(parse_model(native), spec) == wanted, (cell, layers, units, seq)


# The int8 kernels the installed onnxruntime runs (MatMulNBits' 8 bits need >= 1.22).
KERNELS = sorted({"DynamicQuantizeMatMul", INT8_KERNEL})


@pytest.mark.parametrize("kernel", KERNELS)
def test_wide_int8_lstm_multiplies_in_int8(kernel: str) -> None:
    """From 256 units an LSTM's recurrent product runs in int8: DynamicQuantizeMatMul rounds
    as DynamicQuantizeLSTM does; MatMulNBits quantizes the activations per block (finer)."""
    native, int8, spec = _graphs("lstm", 1, units=256)
    step = decompose(parse_model(int8), spec, "int8", int8_kernel=kernel)
    assert step is not None
    ops = [n.op_type for n in onnx.load_from_string(step).graph.node]
    assert kernel in ops and "LSTM" not in ops
    ids = np.random.default_rng(2).integers(0, VOCAB, (2, 20)).astype(np.int32)
    want_p, _, want = _steps(int8, spec, ids)
    # One step from model.onnx's states, against the same int8 weights multiplied in float
    # (what both kernels approximate): no further from it than model.onnx's own int8 step.
    exact = decompose(parse_model(int8), spec, "fp32")
    mine, theirs = [], []
    for t in range(1, ids.shape[1]):
        start = [v[t - 1] for v in want]
        h = {g: _steps(g, spec, ids[:, t : t + 1], start)[2][0][0] for g in (step, exact)}
        mine.append(np.abs(h[step] - h[exact]).max())
        theirs.append(np.abs(want[0][t] - h[exact]).max())
    assert np.mean(mine) <= 1.25 * np.mean(theirs) and max(mine) <= 0.05, (mine, theirs)
    if kernel == "DynamicQuantizeMatMul":  # the same rounding: the same trajectory
        got_p, _, got = _steps(step, spec, ids)
        assert np.abs(want[0] - got[0]).max() <= 1e-4
        # The output layer runs in float here, int8 in model.onnx.
        assert np.abs(want_p - got_p).max() <= 2e-2
    assert len(step) < 0.5 * len(native)  # the recurrent matrix stays int8 in memory too


def test_which_products_run_in_int8() -> None:
    """The rule INT8_KERNELS and INT8_HEAD_UNITS state, on the graph actually built."""

    def int8_products(cell: str, units: int) -> int:
        _, int8, spec = _graphs(cell, 1, units=units)
        step = decompose(parse_model(int8), spec, "int8")
        return sum(n.op_type == INT8_KERNEL for n in onnx.load_from_string(step).graph.node)

    head = INT8_KERNEL == "MatMulNBits"  # the output layer from INT8_HEAD_UNITS units
    assert int8_products("simple", 512) == int(head)  # a SimpleRNN's recurrence: float
    assert int8_products("gru", 512) == 1 + int(head)
    assert int8_products("lstm", 256) == 1 + int(head)
    assert int8_products("lstm", 128) == 1
    assert int8_products("lstm", 64) == 0


def test_only_narrow_models_get_a_greedy_graph() -> None:
    """The greedy graph is a second session over the weights: built up to 256 units in
    fp32 (onnxruntime packs float matrices again), 512 in int8."""
    lstm256 = _spec([("h0", "h0_out", 256), ("c0", "c0_out", 256)])
    two_layers = _spec([("h0", "h0_out", 64), ("h1", "h1_out", 512)])
    assert wants_greedy_graph(lstm256, "fp32") and wants_greedy_graph(lstm256, "int8")
    assert not wants_greedy_graph(two_layers, "fp32")
    assert wants_greedy_graph(two_layers, "int8")
    assert not wants_greedy_graph(_spec([("h0", "h0_out", 1024)]), "int8")


def test_the_builder_rule() -> None:
    assert preferred_builder("lstm", 32) == "decomposed"
    assert preferred_builder("simple", 50) == "decomposed"
    assert preferred_builder("gru", 32) == "decomposed"
    assert preferred_builder("gru", 256) == "decomposed"


def test_export_records_the_builder_and_load_uses_it(stateful_models, tmp_path) -> None:
    lstm, gru = stateful_models["lstm"], stateful_models["gru"]
    for path in (lstm, gru):
        assert json.loads((path / "vocab.json").read_text())["graph_builder"] == "decomposed"
    recorded = tmp_path / "native"  # an export that recorded "native"
    shutil.copytree(gru, recorded)
    edit_vocab(recorded, lambda d: d.__setitem__("graph_builder", "native"))
    assert Generator.load(recorded).graph_builder == "native"
    assert Generator.load(recorded, graph_builder="decomposed").graph_builder == "decomposed"
    fast = Generator.load(lstm)
    slow = Generator.load(lstm, graph_builder="native")
    assert (fast.graph_builder, slow.graph_builder) == ("decomposed", "native")
    assert fast.greedy_session is not None and slow.greedy_session is None
    # The greedy graph's few small tensors get buffers of their own; the one-step graph's
    # grow with the batch and share them.
    assert not fast.greedy_session.get_session_options().enable_mem_reuse
    assert (
        fast.step_session is not None and fast.step_session.get_session_options().enable_mem_reuse
    )
    prompt = fast.spec.sample_prompt[:5]
    # Lengths around the greedy graph's steps per Run: it runs past the end, never short.
    for n in (1, GREEDY_STEPS - 1, GREEDY_STEPS, GREEDY_STEPS + 1, 60):
        assert fast.generate(prompt, n) == slow.generate(prompt, n)
    text = slow.generate(prompt, 60)[len(prompt) :]
    assert "".join(fast.stream(prompt, 60)) == text
    # A stop string inside a Run's characters ends the text there, as it does natively.
    stop = GenerationOptions(stop=(text[9:11],))
    runs = [g.run(prompt, 60, stop) for g in (fast, slow)]
    assert [(r.text, r.stopped, r.stop) for r in runs] == [
        (text[: text.index(text[9:11]) + 2], "stop", text[9:11])
    ] * 2
    batch = [prompt, prompt[:1], prompt[:3]]
    assert fast.generate_batch(batch, 20) == slow.generate_batch(batch, 20)
    a, b = fast.context(prompt), slow.context(prompt)
    assert [c for c, _ in a.top(3)] == [c for c, _ in b.top(3)]
    scores = [g.score(prompt * 3).bits_per_char for g in (fast, slow)]
    assert abs(scores[0] - scores[1]) < 1e-4
    # int8: the step graph multiplies dequantized weights in float at this width, where
    # DynamicQuantizeLSTM rounds activations to 8 bits, so the two int8 paths may part on
    # a near tie; each must agree with itself, batched or not.
    int8 = Generator.load(lstm, precision="int8")
    assert int8.graph_builder == "decomposed"
    texts = int8.generate_batch(batch, 20)
    assert texts == [int8.generate(p, 20) for p in batch]
    assert Generator.load(gru).graph_builder == "decomposed"
    assert Generator.load(gru, graph_builder="native").graph_builder == "native"


def test_greedy_streams_are_reused_never_shared(stateful_models) -> None:
    """A greedy stream's bound buffers serve the next call once a call is done with them,
    and never two calls at once: interleaved, abandoned and threaded streams each get the
    text a lone call gets."""
    import threading

    from runtime.generator import IDLE_STREAMS

    gen = Generator.load(stateful_models["lstm"], warmup_threads=1)
    prompts = ["The ", "a", gen.spec.sample_prompt[:12], "of the"]
    want = {p: gen.generate(p, 40)[len(p) :] for p in prompts}
    assert len(gen._idle) == 1  # the one stream every call above took and gave back
    streams = [gen.stream(p, 40) for p in prompts]
    got = ["".join(chars) for chars in zip(*streams, strict=True)]  # in lockstep
    assert ["".join(c[i] for c in got) for i in range(len(prompts))] == list(want.values())
    assert len(gen._idle) == min(len(prompts), IDLE_STREAMS)
    abandoned = gen.stream(prompts[0], 40)
    next(abandoned)
    del abandoned  # its stream goes back unfinished
    assert gen.generate(prompts[2], 40) == prompts[2] + want[prompts[2]]
    results: dict[tuple[int, int], str] = {}

    def worker(k: int) -> None:
        for i in range(6):
            p = prompts[(k + i) % len(prompts)]
            results[k, i] = gen.generate(p, 40)[len(p) :]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k, i] == want[prompts[(k + i) % len(prompts)]] for k, i in results)
    assert len(results) == 36 and len(gen._idle) <= IDLE_STREAMS


def test_bad_graph_builder_settings_are_refused(stateful_models, model_copy) -> None:
    with pytest.raises(GenerationSettingsError, match="graph_builder must be one of"):
        Generator.load(stateful_models["lstm"], graph_builder="fast")
    assert Generator.load(model_copy, graph_builder="native").graph_builder == "native"
    edit_vocab(model_copy, lambda d: d.__setitem__("graph_builder", "decomposed"))
    with pytest.raises(ArtifactError, match="for stateful models only"):
        Generator.load(model_copy)
    edit_vocab(model_copy, lambda d: d.__setitem__("graph_builder", ["native"]))
    with pytest.raises(ArtifactError, match="graph_builder .* is not one of"):
        Generator.load(model_copy)


def test_the_default_model_generates_on_its_window_graph(model_copy) -> None:
    """A short SimpleRNN window model (the default) generates greedily on the window greedy
    graph, built once greedy calls have asked for WINDOW_GRAPH_AFTER characters, with
    model.onnx's text for any length and prompt, and model.onnx for the rest."""
    from runtime.generator import WINDOW_GRAPH_AFTER

    fast = Generator.load(model_copy)
    slow = Generator.load(model_copy, graph_builder="native")
    assert (fast.graph_builder, slow.graph_builder) == ("decomposed", "native")
    prompt = fast.spec.sample_prompt
    short = WINDOW_GRAPH_AFTER // 2
    assert fast.generate(prompt, short) == slow.generate(prompt, short)
    assert fast.greedy_session is None  # a short text costs no build
    assert fast.generate(prompt, short) == slow.generate(prompt, short)
    assert fast.greedy_session is not None and fast.step_session is None
    for n in (1, GREEDY_STEPS - 1, GREEDY_STEPS, GREEDY_STEPS + 1, 3 * GREEDY_STEPS + 2, 200):
        for p in (prompt, prompt[:3], prompt[-5:]):
            assert fast.generate(p, n) == slow.generate(p, n), (p, n)
    text = slow.generate(prompt, 60)[len(prompt) :]
    assert "".join(fast.stream(prompt, 60)) == text
    stop = GenerationOptions(stop=(text[9:11],))
    assert fast.run(prompt, 60, stop).text == slow.run(prompt, 60, stop).text
    batch = [prompt, prompt[:3]]
    assert fast.generate_batch(batch, 30) == [slow.generate(p, 30) for p in batch]
    sampled = GenerationOptions(temperature=0.8, seed=3)  # model.onnx's probabilities
    assert fast.generate(prompt, 40, sampled) == slow.generate(prompt, 40, sampled)


def test_a_graph_the_builder_does_not_recognize_runs_natively(
    stateful_models, tmp_path, caplog
) -> None:
    """A vetted graph whose one-hot table is not a one-hot table (it passes graph_rules,
    which checks shapes) cannot be folded: model.onnx runs every step, with a warning."""
    model_dir = tmp_path / "m"
    shutil.copytree(stateful_models["lstm"], model_dir)
    proto = onnx.load(model_dir / MODEL_FILE)
    table = next(t for t in proto.graph.initializer if t.name == "one_hot_table")
    mixed = numpy_helper.to_array(table).copy()
    mixed[0, 1] = 0.5
    table.CopyFrom(numpy_helper.from_array(mixed, "one_hot_table"))
    onnx.save(proto, model_dir / MODEL_FILE)
    reseal(model_dir)
    with caplog.at_level(logging.WARNING, logger="runtime.generator"):
        gen = Generator.load(model_dir)
    assert gen.graph_builder == "native"
    assert "generating with model.onnx itself" in caplog.text
    prompt = gen.spec.sample_prompt[:3]
    forced = Generator.load(model_dir, graph_builder="native")
    assert gen.generate(prompt, 20) == forced.generate(prompt, 20)


def test_written_protobuf_reads_back() -> None:
    """The writer's messages parse in our strict reader and in onnx."""
    arrays = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "q": np.array([[-127, 0, 127]], np.int8),
        "i": np.array([1, 2], np.int64),
    }
    inits = [encode_tensor(name, a) for name, a in arrays.items()]
    node = encode_node("MatMul", ["x", "f"], ["y"], name="mm")
    data = encode_model(
        [node],
        inits,
        [encode_value_info("x", 1, ["batch", 2])],
        [encode_value_info("y", 1, ["batch", 3])],
        ir_version=8,
        opsets={"": 17},
    )
    model = parse_model(data)
    assert model.graph is not None
    for t in model.graph.initializers:
        assert np.array_equal(t.array(), arrays[t.name])
    assert model.graph.inputs[0].shape == ["batch", 2]
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.ones((1, 2), np.float32)
    assert np.array_equal(session.run(None, {"x": x})[0], x @ arrays["f"])


def test_info_says_how_steps_run(stateful_models, tmp_path) -> None:
    from click.testing import CliRunner

    from runtime.cli import main

    recorded = tmp_path / "native"
    shutil.copytree(stateful_models["gru"], recorded)
    edit_vocab(recorded, lambda d: d.__setitem__("graph_builder", "native"))
    for path, builder in (
        (stateful_models["lstm"], "decomposed (step graphs"),
        (recorded, "native (model.onnx)"),
        (None, "decomposed (long greedy texts: a window graph"),  # the default model
    ):
        where = ["--model", str(path)] if path else []
        result = CliRunner().invoke(main, ["info", *where])
        assert result.exit_code == 0, result.output
        assert f"steps run:   {builder}" in result.output
