"""Per-character greedy generation: the runtime against every other way to run the same weights.

Usage: python benchmarks/bench_generate.py [--model artifacts/default] [--quick] [--output FILE]

Baselines, all measured in this one run on the weights in MODEL/model.keras, all checked to
produce the runtime's text character for character:
- the seed notebook's loop (`model.predict` per character) and a direct Keras call;
- tf2onnx's default export (an ONNX Loop) in onnxruntime, driven by `session.run`;
- the LiteRT interpreter (`ai-edge-litert`) on TFLite conversions of the same model, default
  and unrolled, driven by set_tensor + invoke + get_tensor in the same Python loop;
- an empty onnxruntime graph (Identity) per step: the floor of any Python-driven loop.

Writes the "generate" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import interleaved_times, machine, median_time, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import GenerationOptions, Generator  # noqa: E402
from runtime.artifact import default_model_dir  # noqa: E402
from runtime.generator import session_options  # noqa: E402
from trainer.model import load_keras  # noqa: E402

Step = Callable[[np.ndarray], int]  # window [1, L] int32 -> next index
SAMPLED_TEMPERATURE = 0.8  # the sampled row's setting (information: no baseline samples)


def python_loop(step: Step, gen: Generator, prompt: str, length: int) -> str:
    """The loop every baseline shares: step, append, shift the window in place."""
    window = gen.encode(prompt)[None, -gen.spec.seq_length :].astype(np.int32)
    row, chars, out = window[0], gen.spec.chars, []
    for _ in range(length):
        c = step(window)
        out.append(chars[c])
        row[:-1] = row[1:]
        row[-1] = c
    return prompt + "".join(out)


def notebook_loop(model, gen: Generator, prompt: str, length: int) -> str:
    """The seed notebook's generation cell, verbatim but for our index-input model."""
    index = gen.spec.char_to_index
    text = prompt
    for _ in range(length):
        x = np.array([[index[c] for c in text[-gen.spec.seq_length :]]])
        prediction = model.predict(x, verbose=0)
        text += gen.spec.chars[int(np.argmax(prediction))]
    return text


def keras_step(model) -> Step:
    return lambda w: int(np.asarray(model(w))[0].argmax())


def onnx_run_step(session, input_name: str, output_name: str) -> Step:
    run = session.run
    outputs = [output_name]
    return lambda w: int(run(outputs, {input_name: w})[0][0].argmax())


def tf2onnx_session(model, seq_length: int):
    """tf2onnx's export of the same model: the general converter a user would reach for
    (the runtime itself refuses such graphs; only our native ones pass its checks)."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from trainer.model import INPUT_NAME, OUTPUT_NAME
    from trainer.onnx_graph import OPSET

    spec = (tf.TensorSpec([None, seq_length], tf.int32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(char_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(char_ids, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    return ort.InferenceSession(
        proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )


def litert_step(model, seq_length: int, vocab_size: int, unroll: bool) -> Step:
    """TFLite conversion of the same weights (fixed batch of 1), run by LiteRT on 1 thread."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    ids = keras.Input(batch_shape=(1, seq_length), dtype="int32")
    x = keras.ops.one_hot(ids, vocab_size)
    for layer in model.layers[1:]:
        cfg = layer.get_config()
        if "unroll" in cfg:
            cfg["unroll"] = unroll
        clone = type(layer).from_config(cfg)
        x = clone(x)
        clone.set_weights(layer.get_weights())
    fixed = keras.Model(ids, x)
    interp = Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(fixed).convert(), num_threads=1
    )
    interp.allocate_tensors()
    in_idx = interp.get_input_details()[0]["index"]
    out_idx = interp.get_output_details()[0]["index"]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def step(w: np.ndarray) -> int:
        set_tensor(in_idx, w)
        invoke()
        return int(get_tensor(out_idx)[0].argmax())

    return step


def empty_graph(seq_length: int):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.INT32, [1, seq_length])
    out = helper.make_tensor_value_info("y", TensorProto.INT32, [1, seq_length])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [value], [out])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return ort.InferenceSession(
        proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )


def empty_iobinding_step(session, seq_length: int):
    """The empty graph driven exactly as the runtime drives its graph: a runtime.binding
    BoundRun, called as `bound.run()` in the loop."""
    from runtime.binding import BoundRun

    return BoundRun(
        session,
        {"x": np.zeros((1, seq_length), np.int32)},
        {"y": np.zeros((1, seq_length), np.int32)},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    ap.add_argument("--output", type=Path, default=None, help="write here, not BENCHMARKS.md")
    args = ap.parse_args()

    from importlib.metadata import version

    import keras
    import onnxruntime as ort
    import tensorflow as tf

    litert_version = version("ai-edge-litert")

    gen = Generator.load(args.model)
    spec = gen.spec
    model = load_keras(args.model / "model.keras", compile=False)
    prompt = spec.sample_prompt
    slow_n, fast_n, batch_n = (5, 300, 50) if args.quick else (20, 3000, 500)
    repeats = 3 if args.quick else 9
    batch = 64

    tf2onnx_sess = tf2onnx_session(model, spec.seq_length)
    steps: dict[str, Step] = {
        "Keras direct call": keras_step(model),
        "tf2onnx default export (ONNX `Loop`), `session.run`": onnx_run_step(
            tf2onnx_sess, "char_ids", "probs"
        ),
        "LiteRT, default TFLite conversion": litert_step(
            model, spec.seq_length, spec.vocab_size, unroll=False
        ),
        "LiteRT, TFLite conversion with `unroll=True`": litert_step(
            model, spec.seq_length, spec.vocab_size, unroll=True
        ),
    }
    # Same weights must give the same text on every path, or the timings compare nothing.
    reference = gen.generate(prompt, slow_n)
    checks = {"notebook loop": notebook_loop(model, gen, prompt, slow_n)}
    checks |= {name: python_loop(step, gen, prompt, slow_n) for name, step in steps.items()}
    checks["stream"] = prompt + "".join(gen.stream(prompt, slow_n))
    checks["batch"] = gen.generate_batch([prompt] * 3, slow_n)[2]
    for name, text in checks.items():
        if text != reference:
            raise SystemExit(f"{name} disagrees with the runtime; the timings would be void")

    empty = empty_graph(spec.seq_length)
    empty_feed = {"x": np.zeros((1, spec.seq_length), np.int32)}
    empty_io = empty_iobinding_step(empty, spec.seq_length)

    def per_char(fn: Callable[[], object], n: int) -> float:
        return median_time(fn, repeats) / n

    us = {
        "notebook": per_char(lambda: notebook_loop(model, gen, prompt, slow_n), slow_n),
        "keras": per_char(
            lambda: python_loop(steps["Keras direct call"], gen, prompt, slow_n), slow_n
        ),
    }
    names = list(steps)
    us["tf2onnx"] = per_char(lambda: python_loop(steps[names[1]], gen, prompt, fast_n), fast_n)
    # The closest contenders, their repeats interleaved: the runtime as it loads (a short
    # SimpleRNN window generates on the window greedy graph), model.onnx every step, LiteRT.
    native = Generator.load(args.model, graph_builder="native")
    if native.generate(prompt, slow_n) != reference:
        raise SystemExit("model.onnx disagrees with the runtime; the timings would be void")
    close = interleaved_times(
        {
            "ours": lambda: gen.generate(prompt, fast_n),
            "ours_native": lambda: native.generate(prompt, fast_n),
            "litert": lambda: python_loop(steps[names[2]], gen, prompt, fast_n),
            "litert_unrolled": lambda: python_loop(steps[names[3]], gen, prompt, fast_n),
        },
        repeats,
    )
    us |= {k: v / fast_n for k, v in close.items()}

    def empty_loop() -> None:
        run = empty.run
        for _ in range(fast_n):
            run(["y"], empty_feed)

    def empty_io_loop() -> None:
        for _ in range(fast_n):
            empty_io.run()

    us["empty_run"] = per_char(empty_loop, fast_n)
    us["empty_io"] = per_char(empty_io_loop, fast_n)
    us["ours_stream"] = per_char(lambda: list(gen.stream(prompt, fast_n)), fast_n)
    sampled = GenerationOptions(temperature=SAMPLED_TEMPERATURE, seed=1)
    us["ours_sampled"] = per_char(lambda: gen.generate(prompt, fast_n, options=sampled), fast_n)
    us["ours_batch"] = per_char(
        lambda: gen.generate_batch([prompt] * batch, batch_n), batch_n * batch
    )
    us = {k: v * 1e6 for k, v in us.items()}

    rows = [
        ("notebook loop (`model.predict` per character)", "notebook"),
        ("Keras direct call per character", "keras"),
        (names[1], "tf2onnx"),
        (names[2] + ", set_tensor + invoke + get_tensor", "litert"),
        (names[3] + ", same loop", "litert_unrolled"),
        ("empty onnxruntime graph, `session.run` per step (floor of a Python loop)", "empty_run"),
        ("empty onnxruntime graph, IO binding per step (the runtime's own harness)", "empty_io"),
        (f"**rnn-textgen `Generator.generate`** (1 thread, {gen.graph_builder})", "ours"),
        ('rnn-textgen `Generator.generate`, `graph_builder="native"` (model.onnx)', "ours_native"),
        ("rnn-textgen `Generator.stream`", "ours_stream"),
        (
            f"rnn-textgen `Generator.generate`, sampled (temperature {SAMPLED_TEMPERATURE}, "
            "seed 1: model.onnx each character, then the sampler)",
            "ours_sampled",
        ),
        (f"rnn-textgen `Generator.generate_batch`, {batch} prompts (aggregate)", "ours_batch"),
    ]
    ours = us["ours"]
    targets = [
        ("≤ 1.0× LiteRT (default conversion) per character", ours / us["litert"], 1.0, "le"),
        ("≤ 2.0× an empty-graph `session.run`", ours / us["empty_run"], 2.0, "le"),
        ("stretch: ≤ 1.0× LiteRT with `unroll=True`", ours / us["litert_unrolled"], 1.0, "le"),
        ("≥ 4,000× faster than the notebook loop", us["notebook"] / ours, 4000, "ge"),
        (f"batch of {batch}: ≤ 1 µs per character (aggregate)", us["ours_batch"], 1.0, "le"),
    ]
    lines = [
        "## Greedy generation per character (`benchmarks/bench_generate.py`)",
        "",
        f"Model: `{args.model.name}` ({spec.architecture.get('cell')} "
        f"{spec.architecture.get('units')} units, window {spec.seq_length}, "
        f"{spec.vocab_size} characters), one thread everywhere. Every path below was checked "
        "to produce the runtime's greedy text character for character before it was timed.",
        "",
        "| path | median µs per character | time ÷ rnn-textgen's (> 1: slower) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {us[key]:,.2f} | {us[key] / ours:,.2f}× |" for label, key in rows]
    lines += ["", "| target | measured | met |", "|---|---:|:-:|"]
    for label, value, bound, how in targets:
        met = value <= bound if how == "le" else value >= bound
        shown = f"{value:,.2f}" + ("× " if "×" in label else " µs")
        lines.append(f"| {label} | {shown} | {'yes' if met else '**no**'} |")
    lines += [
        "",
        f"Against the empty graph driven the runtime's own way (IO binding): "
        f"{ours / us['empty_io']:.2f}×. The runtime, model.onnx every step and both LiteRT "
        "conversions were timed with their repeats interleaved.",
        "",
        f"Repeats: {repeats} (notebook and Keras: {slow_n} characters each; other paths: "
        f"{fast_n}; batch: {batch_n} steps). Versions: TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, onnxruntime {ort.__version__}, ai-edge-litert {litert_version}, "
        f"NumPy {np.__version__}. Machine: {machine()}.",
    ]
    publish("generate", lines, args.output)


if __name__ == "__main__":
    main()
