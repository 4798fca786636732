"""Native operator or decomposed graph: which runs a model's greedy generation faster, per
cell and size, fp32 and int8, measured on the same weights in one run.

Usage: python benchmarks/bench_builders.py [--steps 40] [--quick] [--output FILE]

Each model (LSTM, GRU and SimpleRNN at 32 to 512 units, one layer) is trained briefly on
the King James Bible with an int8 variant and loaded twice per precision: with
`graph_builder="native"` (model.onnx runs every step) and `"decomposed"` (the step graph
`runtime.step_graph` builds at load). Greedy generation of 1,000 characters, one thread,
native and decomposed interleaved; the greedy text must be identical. The table says which
builder the export records (`runtime.step_graph.preferred_builder`) and whether that was the
faster one here. Window models too (the default model, and SimpleRNN, LSTM and GRU windows
around the rule's edges): native against the window greedy graph, and what the runtime
chooses at load (`runtime.step_graph.window_builder`). Writes the "builders" section of
BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_litert import train_briefly  # noqa: E402
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


# Window models: (cell, units, seq_length), each trained like the stateful ones; the
# default model is measured too. Around the rule's edges (step_graph.window_builder).
WINDOWS = [
    ("simple", 50, 10),
    ("simple", 256, 20),
    ("simple", 50, 24),
    ("simple", 50, 40),
    ("lstm", 64, 3),
    ("gru", 64, 3),
]


def window_rows(tmp: Path, corpus: Path, steps: int, n: int, repeats: int) -> list[tuple]:
    """Window models, native (model.onnx every step) against the window greedy graph."""
    from runtime.artifact import default_model_dir
    from runtime.loading import read_model
    from runtime.step_graph import window_builder

    models = [("default", default_model_dir(), ("fp32",))]
    for cell, units, seq in [] if steps <= 0 else WINDOWS:
        out = tmp / f"window-{cell}{units}-{seq}"
        train_briefly(out, corpus, cell, units, steps, seq_length=seq)
        models.append((f"{cell} {units}", out, ("fp32", "int8")))
    rows = []
    for name, path, precisions in models:
        for precision in precisions:
            gens = {b: Generator.load(path, precision=precision, graph_builder=b) for b in BUILDERS}
            spec = gens["native"].spec
            prompt = spec.sample_prompt if name == "default" else PROMPT
            texts = {b: g.generate(prompt, 200) for b, g in gens.items()}
            us = interleaved(gens, n, repeats, prompt)
            chosen = window_builder(read_model(path, precision)[3], spec)
            same = texts["native"] == texts["decomposed"]
            rows.append((name, spec.seq_length, precision, us, chosen, same))
            print(rows[-1], flush=True)
    return rows


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
                train_briefly(out, corpus, cell, units, args.steps, mode="stateful")
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
        "## Graph builders (`benchmarks/bench_builders.py`)",
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
    with tempfile.TemporaryDirectory() as tmp_name:
        windows = window_rows(Path(tmp_name), corpus, 0 if args.quick else args.steps, n, repeats)
    lines += [
        "",
        "Window models (`graph_builder` forced each way; the runtime decides at load, "
        "`runtime.step_graph.window_builder`): model.onnx every step (native) against the "
        "window greedy graph (decomposed: 8 windows chained per Run, each a SimpleRNN, LSTM "
        "or GRU decomposed over its positions from zero states, each character's table rows "
        "looked up once). The default model, and models trained as above "
        f"({args.steps} steps, relu SimpleRNN, tanh LSTM and GRU).",
        "",
        "| model | window | precision | native µs/char | decomposed µs/char | ratio "
        "| runtime chooses | faster here | greedy text identical |",
        "|---|---:|---|---:|---:|---:|---|---|---|",
    ]
    for name, seq, precision, us, chosen, same in windows:
        ratio = us["decomposed"] / us["native"]
        faster = "decomposed" if ratio < 1 else "native"
        verdict = "yes" if chosen == faster else f"**no** ({faster})"
        lines.append(
            f"| {name} | {seq} | {precision} | {us['native']:.2f} | {us['decomposed']:.2f} "
            f"| {ratio:.2f}× | {chosen} | {verdict} | {'yes' if same else '**no**'} |"
        )
    lines += ["", f"Medians of {repeats} runs. Machine: {machine()}."]
    publish("builders", lines, args.output)


if __name__ == "__main__":
    main()
