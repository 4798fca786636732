"""int8 against fp32 on a model big enough for it to matter: size, held-out agreement, speed.

Usage: python benchmarks/bench_int8.py [--chars 220000] [--units 256] [--seq-length 40]
                                        [--epochs 1] [--cell-steps 300] [--output FILE]

Trains a window LSTM on the start of the King James Bible (benchmarks/corpora.py), holding
out the last 10% of that text, exports fp32 + int8 with `textgen-train export --quantize int8
--held-out HELD_OUT`, and times both precisions per character in this one run. Then the same
for a stateful LSTM, GRU and SimpleRNN of --units each (--cell-steps training steps), whose
int8 generation runs the decomposed step graph (int8 products from 256 units). Writes the
"int8" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import kjv  # noqa: E402
from report import machine, median_time, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import Generator  # noqa: E402
from trainer.export import reexport  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=220_000)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--seq-length", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cell-steps", type=int, default=300)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    text = kjv().read_text(encoding="utf-8")[: args.chars]
    split = int(len(text) * 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "train.txt").write_text(text[:split], encoding="utf-8")
        (tmp / "held_out.txt").write_text(text[split:], encoding="utf-8")
        out = tmp / "model"
        train(
            TrainConfig(
                out_dir=out,
                corpus=tmp / "train.txt",
                cell="lstm",
                units=args.units,
                seq_length=args.seq_length,
                epochs=args.epochs,
                batch_size=128,
                seed=0,
            )
        )
        spec = reexport(out, quantize="int8", held_out=tmp / "held_out.txt")
        v = spec.variants["int8"]
        fp32_bytes = (out / "model.onnx").stat().st_size
        gens = {p: Generator.load(out, precision=p) for p in ("fp32", "int8")}
        prompt = spec.sample_prompt
        n = 300
        us = {
            p: median_time(lambda g=g: g.generate(prompt, n), 7) / n * 1e6 for p, g in gens.items()
        }
        batch_us = {
            p: median_time(lambda g=g: g.generate_batch([prompt] * 64, 50), 5) / (50 * 64) * 1e6
            for p, g in gens.items()
        }
        cells = [stateful_row(tmp, cell, args.units, args.cell_steps) for cell in CELLS]

    ratio = v["bytes"] / fp32_bytes
    agreement = v["greedy_agreement"]
    lines = [
        "## int8 vs fp32 (`benchmarks/bench_int8.py`)",
        "",
        f"LSTM {args.units} units, window {args.seq_length}, {spec.vocab_size} characters, "
        f"trained {args.epochs} epoch(s) on the first {split:,} characters of the King James "
        f"Bible (train loss {spec.training['loss']:.3f}); agreement measured on the "
        f"{v['agreement_windows']:,} windows of the next {len(text) - split:,} characters, "
        "which training never saw.",
        "",
        "| measure | fp32 | int8 | target |",
        "|---|---:|---:|---|",
        f"| model file | {fp32_bytes:,} B | {v['bytes']:,} B ({ratio:.1%}) | ≤ 40%: "
        f"{'yes' if ratio <= 0.40 else '**no**'} |",
        f"| greedy next-character agreement with fp32 (held out) | — | {agreement:.2%} | "
        f"≥ 95%: {'yes' if agreement >= 0.95 else '**no**'} |",
        f"| µs per character, 1 stream | {us['fp32']:,.1f} | {us['int8']:,.1f} | |",
        f"| µs per character, batch of 64 (aggregate) | {batch_us['fp32']:,.2f} | "
        f"{batch_us['int8']:,.2f} | |",
        "",
        f"Every cell, stateful, {args.units} units, tanh, trained {args.cell_steps} steps "
        "(batch 64, chunks of 100) on the same text, agreement on the same held-out text "
        "(every position of its non-overlapping 100-character windows, one character per "
        "step as generation runs them, on the graph builder the export recorded):",
        "",
        "| cell | builder | fp32 file | int8 file | agreement (held out) | fp32 µs/char "
        "| int8 µs/char | targets ≤ 40%, ≥ 99% |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for cell, builder, fp32_size, v, cell_us in cells:
        size = v["bytes"] / fp32_size
        ok = size <= 0.40 and v["greedy_agreement"] >= 0.99
        lines.append(
            f"| {cell} | {builder} | {fp32_size:,} B | {v['bytes']:,} B ({size:.1%}) "
            f"| {v['greedy_agreement']:.2%} of {v['agreement_windows']:,} "
            f"| {cell_us['fp32']:.1f} | {cell_us['int8']:.1f} | {'yes' if ok else '**no**'} |"
        )
    lines += ["", f"Machine: {machine()}."]
    publish("int8", lines, args.output)


CELLS = ("lstm", "gru", "simple")


def stateful_row(tmp: Path, cell: str, units: int, steps: int) -> tuple:
    """Train and export one stateful model with int8; its sizes, agreement and speeds."""
    out = tmp / f"stateful_{cell}"
    train(
        TrainConfig(
            out_dir=out,
            corpus=tmp / "train.txt",
            cell=cell,
            units=units,
            # tanh for the SimpleRNN too: a relu SimpleRNN 256 on chunks of 100 diverges
            # at the default learning rate.
            activation="tanh",
            seq_length=100,
            batch_size=64,
            epochs=1,
            steps_per_epoch=steps,
            mode="stateful",
            seed=0,
        )
    )
    spec = reexport(out, quantize="int8", held_out=tmp / "held_out.txt")
    gens = {p: Generator.load(out, precision=p, warmup_threads=1) for p in ("fp32", "int8")}
    prompt, n = spec.sample_prompt, 1000
    us = {p: median_time(lambda g=g: g.generate(prompt, n), 7) / n * 1e6 for p, g in gens.items()}
    size = (out / "model.onnx").stat().st_size
    return cell, spec.graph_builder, size, spec.variants["int8"], us


if __name__ == "__main__":
    main()
