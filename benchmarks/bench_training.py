"""Training at scale: peak memory on a 4 MB book, and streamed vs notebook-style throughput.

Usage: python benchmarks/bench_training.py [--quick] [--output FILE]

1. Memory: `textgen-train train` on the King James Bible (4.2 MB, benchmarks/corpora.py) with
   seq_length 100 and an LSTM of 256 units, in a child process whose peak RSS the kernel
   reports (the number `/usr/bin/time -v` prints). The notebook's one-hot arrays for the same
   settings would need windows x 100 x 73 x 4 bytes: computed and shown beside it.
2. Throughput: the same LSTM trained on the first 60,000 characters of the same text, once
   with the streamed pipeline (tf.data windows, one-hot inside the model) and once
   notebook-style (every window one-hot encoded in memory up front, `model.fit` on arrays),
   in this one process, alternating epochs; training windows per second, median of epochs.

Writes the "training" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import kjv  # noqa: E402
from report import machine, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime.bench import measure_child  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, str]:
    """Peak RSS (MB) and wall seconds of a child process, and its last line of output."""
    seconds, peak, output = measure_child(cmd, cwd=REPO)
    return peak, seconds, output.strip().splitlines()[-1]


def throughput(text: str, seq_length: int, units: int, batch: int, epochs: int) -> dict:
    import keras
    import tensorflow as tf

    from trainer.corpus import Corpus
    from trainer.data import windows_dataset
    from trainer.model import build_model, compile_model

    corpus = Corpus.from_text(text)
    n = len(corpus.ids) - seq_length
    vocab = len(corpus.chars)
    keras.utils.set_random_seed(0)

    streamed = build_model(vocab, seq_length, units=units, cell="lstm", activation="tanh")
    compile_model(streamed, learning_rate=1e-3)

    # The notebook's pipeline: tf.one_hot of every window and label, held in memory.
    x, y = corpus.windows(seq_length)
    x_1h = tf.one_hot(np.ascontiguousarray(x), vocab).numpy()
    y_1h = tf.one_hot(y, vocab).numpy()
    inp = keras.Input((seq_length, vocab))
    out = keras.layers.Dense(vocab, activation="softmax")(keras.layers.LSTM(units)(inp))
    notebook = keras.Model(inp, out)
    notebook.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    times = {"streamed": [], "notebook": []}
    for epoch in range(epochs + 1):  # epoch 0 warms both up (tracing, allocation)
        ds = windows_dataset(
            corpus.ids, seq_length, batch, shuffle=True, seed=0, epochs=(epoch, epoch + 1)
        )
        start = time.perf_counter()
        streamed.fit(ds, epochs=1, verbose=0, shuffle=False)
        t_streamed = time.perf_counter() - start
        start = time.perf_counter()
        notebook.fit(x_1h, y_1h, batch_size=batch, epochs=1, verbose=0, shuffle=True)
        t_notebook = time.perf_counter() - start
        if epoch:
            times["streamed"].append(t_streamed)
            times["notebook"].append(t_notebook)
    return {
        "windows": n,
        "vocab": vocab,
        "onehot_mb": (x_1h.nbytes + y_1h.nbytes) / 1e6,
        "streamed": n / statistics.median(times["streamed"]),
        "notebook": n / statistics.median(times["notebook"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    book = kjv()
    text = book.read_text(encoding="utf-8")
    seq, units = 100, 256
    steps = "5" if args.quick else "30"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "trainer.cli",
            "train",
            "--corpus",
            str(book),
            "--out",
            str(Path(tmp) / "m"),
            "--seq-length",
            str(seq),
            "--cell",
            "lstm",
            "--units",
            str(units),
            "--epochs",
            "1",
            "--steps-per-epoch",
            steps,
            "--batch-size",
            "128",
            "--seed",
            "0",
            "--quiet",
        ]
        rss, wall, last = peak_rss_mb(cmd)
    n_windows = len(text) - seq
    vocab = len(set(text))
    onehot_gb = n_windows * seq * vocab * 4 / 1e9

    small = text[: 20_000 if args.quick else 60_000]
    tp = throughput(small, seq_length=40, units=128, batch=128, epochs=1 if args.quick else 3)
    ratio = tp["streamed"] / tp["notebook"]
    lines = [
        "## Training at scale (`benchmarks/bench_training.py`)",
        "",
        f"**Memory.** `textgen-train train --corpus kjv.txt --seq-length {seq} --cell lstm "
        f"--units {units} --batch-size 128 --steps-per-epoch {steps} --epochs 1` on the King "
        f"James Bible ({len(text):,} characters, {vocab} distinct, {n_windows:,} windows), "
        "including validation and the verified export:",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| peak RSS of the whole run (kernel rusage, as `/usr/bin/time -v`) | {rss:,.0f} MB | "
        f"< 2,048 MB: {'yes' if rss < 2048 else '**no**'} |",
        f"| the notebook's one-hot input array for the same windows | {onehot_gb:,.0f} GB | |",
        f"| wall time of that run | {wall:.0f} s | |",
        "",
        f"**Throughput.** LSTM 128, window 40, batch 128, on the first {len(small):,} "
        f"characters ({tp['windows']:,} windows; the notebook-style arrays take "
        f"{tp['onehot_mb']:,.0f} MB), same process, epochs alternating, median of "
        f"{1 if args.quick else 3} epochs after a warm-up epoch each:",
        "",
        "| pipeline | training windows per second |",
        "|---|---:|",
        f"| notebook-style (one-hot arrays in memory, `fit` on arrays) | {tp['notebook']:,.0f} |",
        f"| streamed (tf.data windows, one-hot inside the model) | {tp['streamed']:,.0f} |",
        f"| ratio streamed / notebook | {ratio:.2f}× (target ≥ 1: "
        f"{'yes' if ratio >= 1 else '**no**'}) |",
        "",
        f"Last line of the memory run: `{last}`. Machine: {machine()}.",
    ]
    publish("training", lines, args.output)


if __name__ == "__main__":
    main()
