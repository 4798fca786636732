"""Per-character greedy generation: the runtime vs the notebook's loop, same weights, one run.

Usage: python benchmarks/bench_generate.py [--model artifacts/default] [--quick]
Writes the "generate" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, median_time, write_section  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import Generator  # noqa: E402
from runtime.artifact import default_model_dir  # noqa: E402


def notebook_loop(model, gen: Generator, prompt: str, length: int) -> str:
    """The seed notebook's generation cell, verbatim but for our index-input model."""
    index = gen.spec.char_to_index
    text = prompt
    for _ in range(length):
        x = np.array([[index[c] for c in text[-gen.spec.seq_length :]]])
        prediction = model.predict(x, verbose=0)
        text += gen.spec.chars[int(np.argmax(prediction))]
    return text


def keras_direct(model, gen: Generator, prompt: str, length: int) -> str:
    """The same loop calling the model directly (no predict() overhead)."""
    index = gen.spec.char_to_index
    text = prompt
    for _ in range(length):
        x = np.array([[index[c] for c in text[-gen.spec.seq_length :]]], dtype=np.int32)
        text += gen.spec.chars[int(np.asarray(model(x))[0].argmax())]
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    args = ap.parse_args()

    import keras
    import onnxruntime as ort
    import tensorflow as tf

    gen = Generator.load(args.model)
    model = keras.models.load_model(args.model / "model.keras")
    prompt = gen.spec.training.get("sample_prompt", "")
    slow_n, fast_n = (5, 200) if args.quick else (20, 2000)
    repeats = 3 if args.quick else 7

    # Same weights must give the same text on every path, or the timings compare nothing.
    reference = gen.generate(prompt, slow_n)
    for path in (notebook_loop, keras_direct):
        if path(model, gen, prompt, slow_n) != reference:
            raise SystemExit(f"{path.__name__} disagrees with the runtime; timings would be void")

    rows = [
        (
            "notebook loop (`model.predict` per character)",
            median_time(lambda: notebook_loop(model, gen, prompt, slow_n), repeats) / slow_n,
        ),
        (
            "Keras direct call per character",
            median_time(lambda: keras_direct(model, gen, prompt, slow_n), repeats) / slow_n,
        ),
        (
            "rnn-textgen runtime (`Generator.generate`, 1 thread)",
            median_time(lambda: gen.generate(prompt, fast_n), repeats) / fast_n,
        ),
    ]
    base = rows[0][1]
    lines = [
        "## Greedy generation per character (`benchmarks/bench_generate.py`)",
        "",
        f"Model: `{args.model.name}` ({gen.spec.architecture.get('cell')} "
        f"{gen.spec.architecture.get('units')} units, window {gen.spec.seq_length}, "
        f"{gen.spec.vocab_size} characters); all paths produce identical text.",
        "",
        "| path | median µs per character | speed-up vs notebook |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {t * 1e6:,.1f} | {base / t:,.0f}× |" for name, t in rows]
    lines += [
        "",
        f"Repeats: {repeats} (notebook and Keras: {slow_n} characters each; runtime: "
        f"{fast_n}). Versions: TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"onnxruntime {ort.__version__}, NumPy {np.__version__}. Machine: {machine()}.",
    ]
    body = "\n".join(lines)
    write_section("generate", body)
    print(body)


if __name__ == "__main__":
    main()
