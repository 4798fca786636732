"""Real-size models against LiteRT: stateful LSTM (64 to 512 units) and GRU 256, fp32 and
int8, and window LSTM 256 models, on the same weights, in one run.

Usage: python benchmarks/bench_litert.py [--steps 300] [--quick] [--output FILE]

Each model is trained briefly on the King James Bible (timing does not depend on how well;
the greedy text must be identical, so the probabilities must not be flat) and exported by
the real exporter. Its LiteRT twin is built from the same Keras weights: for a stateful
model a Keras step model `ids[1,1], h(, c) -> probs, h(, c)` with `unroll=True`, exported
as a SavedModel and converted with `TFLiteConverter.from_saved_model` (a concrete function
converts with resource variables LiteRT cannot read); int8 is LiteRT's default
dynamic-range quantization. Both are driven by the same kind of Python loop, on one thread,
after checking that their greedy text is identical. Peak RSS per model is measured in a
fresh process loading it. Writes the "litert" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import kjv  # noqa: E402
from report import interleaved_times, machine, publish  # noqa: E402

import trainer  # noqa: E402,F401  (quiets TensorFlow's C++ logging before it loads)
from runtime import Generator  # noqa: E402
from trainer.train import TrainConfig, train  # noqa: E402

PROMPT = "In the beginning God created the heaven and the earth."


def litert_stateful(keras_path: Path, tmp: Path, int8: bool):
    """A LiteRT step function over the same weights: (char id, states) -> (next id, states)."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    trained = keras.models.load_model(keras_path, compile=False)
    cells = [layer for layer in trained.layers if isinstance(layer, keras.layers.RNN)]
    dense = trained.layers[-1]
    vocab = dense.get_config()["units"]
    ids = keras.Input(batch_shape=(1, 1), dtype="int32", name="ids")
    states_in, states_out = [], []
    x = keras.ops.one_hot(ids, vocab)
    for i, layer in enumerate(cells):
        cfg = {**layer.get_config(), "return_sequences": True, "return_state": True}
        cfg["unroll"] = True
        clone = type(layer).from_config(cfg)
        n = 2 if isinstance(layer, keras.layers.LSTM) else 1
        units = cfg["units"]
        initial = [keras.Input(batch_shape=(1, units), name=f"s{i}_{j}") for j in range(n)]
        states_in += initial
        x, *final = clone(x, initial_state=initial if n > 1 else initial[0])
        clone.set_weights(layer.get_weights())
        states_out += final
    head = keras.layers.Dense(vocab, activation="softmax")
    probs = head(x[:, -1])
    head.set_weights(dense.get_weights())
    step_model = keras.Model([ids, *states_in], [probs, *states_out])
    saved = tmp / f"saved-{int8}"
    step_model.export(str(saved), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    interp = Interpreter(model_content=converter.convert(), num_threads=1)
    interp.allocate_tensors()
    # The signature names the tensors as the Keras model does: inputs by their Input
    # names, outputs output_0 (probs), output_1... (the states, in the inputs' order).
    signature = interp.get_signature_runner()
    ins, outs = signature.get_input_details(), signature.get_output_details()
    id_in = ins["ids"]["index"]
    names = [t.name.split(":")[0] for t in states_in]
    state_ins = [ins[name] for name in names]
    state_outs = [outs[f"output_{k + 1}"]["index"] for k in range(len(names))]
    prob_out = outs["output_0"]["index"]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def step(char: int, states: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
        set_tensor(id_in, np.array([[char]], np.int32))
        for d, s in zip(state_ins, states, strict=True):
            set_tensor(d["index"], s)
        invoke()
        nxt = int(get_tensor(prob_out)[0].argmax())
        return nxt, [get_tensor(i) for i in state_outs]

    zero = [np.zeros(d["shape"], np.float32) for d in state_ins]
    return step, zero


def litert_text(step, zero, gen: Generator, prompt: str, n: int) -> str:
    ids = [gen.spec.char_to_index[c] for c in prompt]
    states = zero
    for i in ids[:-1]:
        _, states = step(i, states)
    char, out = ids[-1], []
    for _ in range(n):
        char, states = step(char, states)
        out.append(gen.spec.chars[char])
    return prompt + "".join(out)


def per_char(fns: list[Callable[[], object]], n: int, repeats: int) -> list[float]:
    """Median µs per character of each fn (which generates `n`), the repeats interleaved."""
    medians = interleaved_times(dict(enumerate(fns)), repeats)
    return [medians[k] / n * 1e6 for k in range(len(fns))]


def peak_rss_mb(model_dir: Path, precision: str) -> float:
    code = (
        "import sys\nfrom runtime import Generator\n"
        "g = Generator.load(sys.argv[1], precision=sys.argv[2], warmup_threads=1)\n"
        "g.generate(g.spec.sample_prompt, 100)\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), precision],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def window_row(tmp: Path, corpus: Path, seq: int, steps: int, n: int, repeats: int) -> tuple:
    """A window LSTM 256 reading `seq` characters, against LiteRT's default conversion of
    the same Keras model (fixed batch of 1), driven by bench_generate's shared loop."""
    from bench_generate import litert_step, python_loop

    from trainer.model import load_keras

    out = tmp / f"window{seq}"
    train_briefly(out, corpus, "lstm", 256, steps, seq_length=seq, quantize=None)
    gen = Generator.load(out)
    step = litert_step(
        load_keras(out / "model.keras", compile=False), seq, gen.spec.vocab_size, False
    )
    prompt = " ".join([PROMPT] * -(-(seq + 1) // len(PROMPT)))  # at least one window
    same = python_loop(step, gen, prompt, 200) == gen.generate(prompt, 200)
    ours, theirs = per_char(
        [partial(gen.generate, prompt, n), partial(python_loop, step, gen, prompt, n)],
        n,
        repeats,
    )
    rss = peak_rss_mb(out, "fp32")
    return (f"lstm window {seq}", 256, "fp32", "native", ours, None, None, theirs, same, rss, 1)


def train_briefly(
    out: Path,
    corpus: Path,
    cell: str,
    units: int,
    steps: int,
    *,
    seq_length: int = 100,
    mode: str = "window",
    quantize: str | None = "int8",
) -> None:
    """A model trained `steps` steps of batch 64 (the cell's default activation), with its
    int8 variant unless `quantize` is None: the models the benchmarks time, whose speed
    does not depend on how well they learned."""
    train(
        TrainConfig(
            out_dir=out,
            corpus=corpus,
            cell=cell,
            units=units,
            seq_length=seq_length,
            batch_size=64,
            epochs=1,
            steps_per_epoch=steps,
            mode=mode,
            quantize=quantize,
            max_val_windows=256,
            seed=1,
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per model")
    ap.add_argument("--quick", action="store_true", help="two sizes, fewer repeats")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    repeats, n = (3, 300) if args.quick else (7, 1000)
    corpus = kjv()
    configs = [("lstm", 64), ("lstm", 128), ("lstm", 256), ("lstm", 512), ("gru", 256)]
    windows = [40, 100]
    if args.quick:
        configs, windows = [("lstm", 64), ("gru", 64)], [8]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seq in windows:
            rows.append(window_row(tmp, corpus, seq, args.steps, n, repeats))
            print(rows[-1], flush=True)
        for cell, units in configs:
            out = tmp / f"{cell}{units}"
            train_briefly(out, corpus, cell, units, args.steps, mode="stateful")
            for precision in ("fp32", "int8"):
                gen = Generator.load(out, precision=precision, warmup_threads=1)
                native = Generator.load(
                    out, precision=precision, warmup_threads=1, graph_builder="native"
                )
                step, zero = litert_stateful(out / "model.keras", tmp, precision == "int8")
                ours_text = gen.generate(PROMPT, 200)
                twin_text = litert_text(step, zero, gen, PROMPT, 200)
                same = ours_text == twin_text
                contenders = [
                    partial(gen.generate, PROMPT, n),
                    partial(native.generate, PROMPT, n),
                    partial(litert_text, step, zero, gen, PROMPT, n),
                ]
                if gen.greedy_session is not None:
                    # The same step graph, one character per Run (no greedy graph).
                    single = replace(gen, greedy_session=None)
                    contenders.append(partial(single.generate, PROMPT, n))
                ours, before, theirs, *rest = per_char(contenders, n, repeats)
                one = rest[0] if rest else None
                size = gen.spec.variants["int8"]["size_vs_fp32"] if precision == "int8" else 1
                rss = peak_rss_mb(out, precision)
                rows.append(
                    (cell, units, precision, gen.graph_builder, ours, one, before, theirs, same)
                    + (rss, size)
                )
                print(rows[-1], flush=True)
    lines = [
        "## Real-size models against LiteRT (`benchmarks/bench_litert.py`)",
        "",
        f"Models trained {args.steps} steps on the KJV, each with its LiteRT twin built from "
        "the same Keras weights: stateful models (chunks of 100) as a step model "
        "(`unroll=True`, SavedModel conversion; int8: LiteRT's dynamic-range quantization "
        "against ours); window models as LiteRT's default conversion of the Keras model. "
        f"Greedy generation of {n:,} characters after a {len(PROMPT)}-character prompt "
        "(repeated to cover a window for window models), one thread, the same kind of Python "
        "loop for both, the contenders' repeats interleaved. Builder: how our generation "
        "steps ran (vocab.json's `graph_builder`); greedy generation of a decomposed model "
        "up to 256 units runs 8 characters per Run (the greedy graph), the LiteRT twin one per "
        "invoke; the next two columns are the same model with one "
        "character per Run on the step graph (where it has a greedy graph), and forced to run "
        "model.onnx every step.",
        "",
        "| model | precision | builder | rnn-textgen µs/char | (one char per Run) "
        "| (native builder) | LiteRT µs/char | ratio | goal ≤ 1.0× | greedy text identical "
        "| peak RSS | int8 size |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for cell, units, precision, builder, ours, one, before, theirs, same, rss, size in rows:
        ratio = ours / theirs
        goal = "yes" if ratio <= 1.0 else f"**missed by {(ratio - 1) * 100:.0f}%**"
        name = (
            f"LSTM 256, window {cell.split()[-1]}"
            if "window" in cell
            else f"{cell.upper()} {units}"
        )
        lines.append(
            f"| {name} | {precision} | {builder} | {ours:.1f} "
            f"| {'' if one is None else f'{one:.1f}'} "
            f"| {'' if before is None else f'{before:.1f}'} | {theirs:.1f} | {ratio:.2f}× "
            f"| {goal} | {'yes' if same else '**no**'} | {rss:.0f} MB | "
            f"{'' if precision == 'fp32' else f'{size:.0%} of fp32'} |"
        )
    lines += ["", f"Medians of {repeats} runs. Machine: {machine()}."]
    publish("litert", lines, args.output)


if __name__ == "__main__":
    main()
