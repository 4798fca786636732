"""The app API's costs and agreement: a keystroke (append + top) against a generated
character, scoring in fp32 and int8, and scoring against the trainer's validation figure.

Usage: python benchmarks/bench_context.py [--repeats 9] [--output FILE]

Trains a stateful LSTM (128 units, int8 variant) on this repository's README (the last
10% held out), in this run. Writes the "context" section of BENCHMARKS.md (or --output).
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
from report import machine, publish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def per_call_us(fn, n: int, repeats: int) -> float:
    """Median over `repeats` of the mean microseconds per call over `n` calls."""
    fn(n // 10)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    import trainer  # noqa: F401  (quiets TensorFlow's C++ logging before it loads)
    from runtime import Generator
    from runtime.artifact import ModelSpec
    from trainer.corpus import Corpus
    from trainer.train import TrainConfig, split_corpus, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "readme.txt"
        corpus.write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
        out = Path(tmp) / "lstm"
        config = TrainConfig(
            out_dir=out,
            corpus=corpus,
            cell="lstm",
            units=128,
            seq_length=64,
            batch_size=32,
            epochs=args.epochs,
            mode="stateful",
            quantize="int8",
            seed=1,
        )
        train(config)
        spec = ModelSpec.read(out)
        gen = Generator.load(out, warmup_threads=1)
        int8 = Generator.load(out, precision="int8", warmup_threads=1)
        _, val_ids = split_corpus(Corpus.read(corpus), 0.1, spec.seq_length)
        held_out = "".join(spec.chars[i] for i in val_ids)
        train_text = corpus.read_text(encoding="utf-8")[: len(corpus.read_text()) - len(held_out)]

        rows = []
        generated = per_call_us(lambda n: gen.generate("The ", n), 4000, args.repeats)
        for context in (10, 2000):
            ctx = gen.context(train_text[:context])
            keys = (train_text * 4)[context : context + 40_000]
            pos = [0]

            def keystrokes(n: int, ctx=ctx, keys=keys, pos=pos) -> None:
                for ch in keys[pos[0] : pos[0] + n]:
                    ctx.append(ch)
                    ctx.top(1)
                pos[0] += n

            key = per_call_us(keystrokes, 2000, args.repeats)
            rows.append((context, key, generated))

        length = spec.seq_length
        chunks = [held_out[s : s + length + 1] for s in range(0, len(held_out) - length, length)]
        chunked = float(np.mean([gen.score(c).bits_per_char for c in chunks]))
        whole = gen.score(held_out).bits_per_char
        whole_int8 = int8.score(held_out).bits_per_char
        trainer_val = spec.training["val_bits_per_char"]

    lines = [
        "## App API (`benchmarks/bench_context.py`)",
        "",
        f"Stateful LSTM {config.units} (chunks of {config.seq_length}, {args.epochs} epochs) "
        "trained in this run on README.md, last 10% held out. A keystroke is "
        "`ctx.append(ch)` then `ctx.top(1)`; a generated character is "
        "`Generator.generate`'s, on the same model and thread.",
        "",
        "| context before | keystroke µs | generated character µs | ratio | goal |",
        "|---:|---:|---:|---:|---|",
    ]
    for context, key, gen_us in rows:
        ratio = key / gen_us
        ok = "yes" if ratio <= 2 else f"**no** ({ratio - 2:.2f}× over)"
        lines.append(
            f"| {context:,} characters | {key:.2f} | {gen_us:.2f} | {ratio:.2f}× | ≤ 2×: {ok} |"
        )
    lines += [
        "",
        "| held-out bits per character | value |",
        "|---|---:|",
        f"| trainer's validation (chunks from zero state, Keras) | {trainer_val:.4f} |",
        f"| `score` of each held-out chunk, averaged (fp32) | {chunked:.4f} |",
        f"| `score` of the whole held-out text (fp32, state carried across chunks) | {whole:.4f} |",
        f"| `score` of the whole held-out text (int8) | {whole_int8:.4f} |",
        f"| int8 − fp32 | {whole_int8 - whole:+.4f} (goal: within ±0.05) |",
        "",
        f"Medians of {args.repeats} runs. Machine: {machine()}.",
    ]
    publish("context", lines, args.output)


if __name__ == "__main__":
    main()
