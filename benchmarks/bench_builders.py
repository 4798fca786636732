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
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import kjv  # noqa: E402
from report import machine, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import Generator  # noqa: E402
from runtime.step_graph import INT8_PRODUCT_UNITS, preferred_builder  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402

PROMPT = "In the beginning God created the heaven and the earth."
BUILDERS = ("native", "decomposed")


def interleaved(gens: dict[str, Generator], n: int, repeats: int) -> dict[str, float]:
    """Median µs per generated character of each generator, runs interleaved."""
    times: dict[str, list[float]] = {k: [] for k in gens}
    for g in gens.values():
        g.generate(PROMPT, n)
    for _ in range(repeats):
        for k, g in gens.items():
            start = time.perf_counter()
            g.generate(PROMPT, n)
            times[k].append((time.perf_counter() - start) / n * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


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
                train(
                    TrainConfig(
                        out_dir=out,
                        corpus=corpus,
                        cell=cell,
                        units=units,
                        activation="relu" if cell == "simple" else "tanh",
                        seq_length=100,
                        batch_size=64,
                        epochs=1,
                        steps_per_epoch=args.steps,
                        mode="stateful",
                        quantize="int8",
                        max_val_windows=256,
                        seed=1,
                    )
                )
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
        "interleaved. int8: the int8 variant; decomposed layers of "
        f"{INT8_PRODUCT_UNITS} units or more multiply in int8 (DynamicQuantizeMatMul), "
        "narrower ones in float over the dequantized weights.",
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
    lines += ["", f"Medians of {repeats} runs. Machine: {machine()}."]
    publish("builders", lines, args.output)


if __name__ == "__main__":
    main()
