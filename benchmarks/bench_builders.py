"""Native operator or decomposed step graph: which runs a stateful model's generation faster,
per cell and size, fp32 and int8, measured on the same weights in one run.

Usage: python benchmarks/bench_builders.py [--steps 40] [--quick] [--output FILE]

Each model (LSTM, GRU and SimpleRNN at 32 to 512 units, one layer) is trained briefly on
the King James Bible with an int8 variant and loaded twice per precision: with
`graph_builder="native"` (model.onnx runs every step) and `"decomposed"` (the step graph
`runtime.step_graph` builds at load). Greedy generation of 1,000 characters, one thread,
native and decomposed interleaved; the greedy text must be identical. The table says which
builder the export records (`runtime.step_graph.preferred_builder`) and whether that was the
faster one here. Writes the "builders" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnxruntime as ort  # noqa: E402
from bench_litert import train_stateful  # noqa: E402
from corpora import kjv  # noqa: E402
from report import interleaved_times, machine, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import Generator  # noqa: E402
from runtime.step_graph import (  # noqa: E402
    INT8_HEAD_UNITS,
    INT8_KERNEL,
    INT8_KERNELS,
    preferred_builder,
)

PROMPT = "In the beginning God created the heaven and the earth."
BUILDERS = ("native", "decomposed")


def interleaved(
    gens: dict[str, Generator], n: int, repeats: int, prompt: str = PROMPT
) -> dict[str, float]:
    """Median µs per generated character of each generator, runs interleaved."""
    fns = {k: partial(g.generate, prompt, n) for k, g in gens.items()}
    return {k: s / n * 1e6 for k, s in interleaved_times(fns, repeats).items()}


def unrolled_window_graph(model_dir: Path) -> bytes:
    """The default model's window graph decomposed and unrolled (the form a decomposed
    window builder would write): Gather of the folded table for all positions, Split, then
    per position MatMul + Add + activation, then the same head. Built here only to measure
    it against the native RNN operator."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    native = onnx.load(model_dir / "model.onnx")
    w = {t.name: numpy_helper.to_array(t) for t in native.graph.initializer}
    rnn = next(n for n in native.graph.node if n.op_type == "RNN")
    act = helper.get_attribute_value(rnn.attribute[0])[0].decode()
    kernel, recurrent, bias = w[rnn.input[1]][0], w[rnn.input[2]][0], w[rnn.input[3]][0]
    units, vocab = recurrent.shape[1], kernel.shape[1]
    length = native.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    table = kernel.T + bias[:units] + bias[units:]
    nodes = [
        helper.make_node("Gather", ["table", "char_ids"], ["x"]),
        helper.make_node("Split", ["x", "splits"], [f"x{i}" for i in range(length)], axis=1),
        helper.make_node(act, ["x0"], ["h0"]),
    ]
    for i in range(1, length):
        nodes += [
            helper.make_node("MatMul", [f"h{i - 1}", "recurrent"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"x{i}"], [f"z{i}"]),
            helper.make_node(act, [f"z{i}"], [f"h{i}"]),
        ]
    nodes += [
        helper.make_node("Squeeze", [f"h{length - 1}", "axis1"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "dense_W", "dense_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("ArgMax", ["probs"], ["next"], axis=-1, keepdims=0),
    ]
    arrays = {
        "table": table,
        "splits": np.ones(length, np.int64),
        "recurrent": recurrent.T,
        "axis1": np.array([1], np.int64),
        "dense_W": w["dense_W"],
        "dense_b": w["dense_b"],
    }
    graph = helper.make_graph(
        nodes,
        "unrolled",
        [helper.make_tensor_value_info("char_ids", TensorProto.INT32, ["batch", length])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", vocab]),
            helper.make_tensor_value_info("next", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(np.ascontiguousarray(a), k) for k, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def window_row(n: int, repeats: int) -> tuple[float, float, bool]:
    """µs per character of the default model: its native graph, and unrolled."""
    from runtime.artifact import default_model_dir
    from runtime.loading import session_options

    model_dir = default_model_dir()
    native = Generator.load(model_dir)
    session = ort.InferenceSession(
        unrolled_window_graph(model_dir), session_options(1), providers=["CPUExecutionProvider"]
    )
    unrolled = Generator.from_session(native.spec, session)
    prompt = native.spec.sample_prompt
    same = native.generate(prompt, 200) == unrolled.generate(prompt, 200)
    us = interleaved({"native": native, "unrolled": unrolled}, n, repeats, prompt)
    return us["native"], us["unrolled"], same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps per model")
    ap.add_argument("--quick", action="store_true", help="two sizes, fewer repeats")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    repeats, n = (3, 300) if args.quick else (9, 1000)
    sizes = [64, 256] if args.quick else [32, 64, 128, 256, 512]
    cells = ["lstm", "gru", "simple"]
    corpus = kjv()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for cell in cells:
            for units in sizes:
                out = Path(tmp_name) / f"{cell}{units}"
                train_stateful(out, corpus, cell, units, args.steps)
                for precision in ("fp32", "int8"):
                    gens = {
                        b: Generator.load(
                            out, precision=precision, warmup_threads=1, graph_builder=b
                        )
                        for b in BUILDERS
                    }
                    texts = {b: g.generate(PROMPT, 200) for b, g in gens.items()}
                    us = interleaved(gens, n, repeats)
                    same = texts["native"] == texts["decomposed"]
                    rows.append((cell, units, precision, us, same))
                    print(rows[-1], flush=True)
    lines = [
        "## Graph builders for stateful models (`benchmarks/bench_builders.py`)",
        "",
        "One-layer stateful models trained "
        f"{args.steps} steps on the KJV (SimpleRNN: relu; LSTM, GRU: tanh), each loaded with "
        "model.onnx running every step (native) and with the step graph the runtime builds "
        "from the same weights (decomposed). Greedy generation of "
        f"{n:,} characters after a {len(PROMPT)}-character prompt, one thread, the two "
        "interleaved. int8: the int8 variant; decomposed LSTM and GRU layers of "
        f"{INT8_KERNELS[INT8_KERNEL]['LSTM']} units or more multiply in int8 ({INT8_KERNEL}), "
        f"and with MatMulNBits the output layer after {INT8_HEAD_UNITS} units or more; SimpleRNN "
        "layers and the rest multiply in float over the dequantized weights (whose greedy "
        "text can then differ from model.onnx's int8: GRU and SimpleRNN run theirs in float, "
        "and its output layer runs in int8: one rounds where the other does not).",
        "",
        "| cell | units | precision | native µs/char | decomposed µs/char | ratio "
        "| export records | faster here | greedy text identical |",
        "|---|---:|---|---:|---:|---:|---|---|---|",
    ]
    for cell, units, precision, us, same in rows:
        ratio = us["decomposed"] / us["native"]
        chosen = preferred_builder(cell, units)
        faster = "decomposed" if ratio < 1 else "native"
        verdict = "yes" if chosen == faster else f"**no** ({faster})"
        lines.append(
            f"| {cell} | {units} | {precision} | {us['native']:.2f} | {us['decomposed']:.2f} "
            f"| {ratio:.2f}× | {chosen} | {verdict} | {'yes' if same else '**no**'} |"
        )
    native_w, unrolled_w, same_w = window_row(n * 3, repeats)
    lines += [
        "",
        "Window models stay native: the default model (SimpleRNN 50, window 3) with its "
        "window graph decomposed and unrolled (Gather of the folded table, Split, then "
        "MatMul + Add + activation per position; built by this script) runs at "
        f"{unrolled_w:.2f} µs per character against {native_w:.2f} for its native graph "
        f"({unrolled_w / native_w:.2f}×; greedy text identical: {'yes' if same_w else 'no'}): "
        "the extra per-position nodes cost more than the RNN operator, and longer windows "
        "add nodes in proportion.",
        "",
        f"Medians of {repeats} runs. Machine: {machine()}.",
    ]
    publish("builders", lines, args.output)


if __name__ == "__main__":
    main()
