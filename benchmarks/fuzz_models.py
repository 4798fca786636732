"""Fuzz model loading: truncated, bit-flipped, spliced and random model.onnx files.

Usage: python benchmarks/fuzz_models.py [--cases 10000] [--trained-cases 3000] [--seed 0]
                                        [--model DIR [--precision fp32|int8]] [--output FILE]

Without --model: the default model, then stateful models trained here (an LSTM in fp32 and
int8, a GRU 128 in int8, a GRU of a 1,100-character vocabulary).

Every case is a damaged copy of a real exported model whose vocab.json is re-sealed with
the damaged file's sha256 (an attacker controls both files), so the bytes get past the
hash check and reach the ONNX scanner and onnxruntime. Each case must either load and
generate or raise the runtime's documented ArtifactError; anything else (another
exception, or a dead process) is a failure. Cases run in worker processes that record
the case they are on, so a crash names its case. Writes the "fuzz" section of
BENCHMARKS.md (or --output); tests/test_fuzz.py runs a few hundred of the same cases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A chunk of 500 cases takes a few seconds; minutes mean a case hangs.
CHUNK_TIMEOUT = 600
# Characters each loaded case generates: past runtime.generator.WINDOW_GRAPH_AFTER, so a
# window model's window graph is built from the damaged weights and run too.
LENGTH = 2_100

WORKER = r"""
import hashlib, json, random, sys, traceback
from pathlib import Path
from runtime import Generator
from runtime.errors import ArtifactError
from runtime.artifact import MODEL_FILES

src, work, first, count, seed, progress, level, bench, precision = sys.argv[1:10]
sys.path.insert(0, bench)
from proto_mutate import mutate
src, work = Path(src), Path(work)
target = MODEL_FILES[precision]
original = (src / target).read_bytes()
vocab = json.loads((src / "vocab.json").read_text())
counts = {"ok": 0, "ArtifactError": 0}
for case in range(int(first), int(first) + int(count)):
    Path(progress).write_text(str(case))
    rng = random.Random(f"{seed}:{case}")
    data = bytearray(original)
    kinds = ["truncate", "flip", "flips", "splice", "random", "insert", "zero"]
    kind = "proto" if level == "proto" else rng.choice(kinds)
    if level == "both" and rng.random() < 0.5:
        kind = "proto"
    if kind == "proto":
        mutated, kind = mutate(original, rng)
        data = bytearray(mutated)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else rng.randint(2, 64)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "splice":
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        data = data[:a] + data[b:] + data[a:b]
    elif kind == "random":
        data = bytearray(rng.randbytes(rng.randrange(1, 4096)))
    elif kind == "insert":
        i = rng.randrange(len(data))
        data = data[:i] + rng.randbytes(rng.randint(1, 32)) + data[i:]
    else:
        i = rng.randrange(len(data))
        data[i : i + rng.randint(1, 256)] = bytes(min(256, len(data) - i))
    (work / target).write_bytes(bytes(data))
    digest = hashlib.sha256(bytes(data)).hexdigest()
    if precision == "fp32":
        vocab["model_sha256"] = digest
    else:
        vocab["variants"][precision]["sha256"] = digest
    (work / "vocab.json").write_text(json.dumps(vocab))
    try:
        g = Generator.load(work, precision=precision)
        g.generate(g.spec.sample_prompt, LENGTH)
        counts["ok"] += 1
    except ArtifactError:
        counts["ArtifactError"] += 1
    except Exception:
        print(json.dumps({"case": case, "kind": kind, "error": traceback.format_exc()}))
        sys.exit(3)
print(json.dumps(counts))
""".replace("LENGTH", str(LENGTH))


def fuzz(
    model_dir: Path,
    cases: int,
    seed: int = 0,
    chunk: int = 500,
    level: str = "both",
    precision: str = "fp32",
) -> dict[str, object]:
    """Run `cases` damaged copies of model_dir's graph for `precision` (model.onnx, or a
    variant such as model.int8.onnx); counts of outcomes and any failures.

    `level`: "bytes" (truncations, flips, splices...), "proto" (benchmarks/proto_mutate.py:
    tags, wire types, repeats, nesting, foreign fields, external data, functions) or "both".
    A chunk that outlives CHUNK_TIMEOUT is a failure (a hang) at the case it was on.
    """
    totals = {"cases": 0, "ok": 0, "ArtifactError": 0, "failures": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        work, progress = Path(tmp) / "m", Path(tmp) / "progress"
        shutil.copytree(model_dir, work)
        first = 0
        while first < cases:
            count = min(chunk, cases - first)
            try:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        WORKER,
                        str(model_dir),
                        str(work),
                        str(first),
                        str(count),
                        str(seed),
                        str(progress),
                        level,
                        str(Path(__file__).resolve().parent),
                        precision,
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                    timeout=CHUNK_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                case = int(progress.read_text())
                totals["failures"].append(
                    {"case": case, "returncode": "timeout", "detail": "hung (chunk timed out)"}
                )
                totals["cases"] += case - first + 1
                first = case + 1
                continue
            last = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
            if proc.returncode == 0:
                totals["ok"] += last["ok"]
                totals["ArtifactError"] += last["ArtifactError"]
                totals["cases"] += count
                first += count
                continue
            # A wrong exception (exit 3) or a dead process: record the case, go on after it.
            case = int(progress.read_text())
            totals["failures"].append(
                {
                    "case": case,
                    "returncode": proc.returncode,
                    "detail": last.get("error", proc.stderr[-500:]),
                }
            )
            totals["cases"] += case - first + 1
            first = case + 1
    return totals


def trained_models(tmp: Path) -> list[tuple[str, Path, str]]:
    """Models beyond the default window model, trained here in seconds: (label, directory,
    precision). Stateful graphs (states, Unsqueeze / Squeeze), int8 files (DynamicQuantizeLSTM,
    MatMulInteger, DequantizeLinear; the decomposed MatMulNBits steps from 128 units) and a
    1,100-character vocabulary (OneHot)."""
    from corpora import wide_text

    import trainer  # noqa: F401
    from trainer.train import TrainConfig, train

    text = tmp / "corpus.txt"
    text.write_text("It was the best of times, it was the worst of times; " * 40)
    wide, hanzi = tmp / "wide.txt", wide_text()
    wide.write_text(hanzi, encoding="utf-8")
    specs = [
        ("stateful LSTM 2 x 16", text, "lstm", 16, 2, ("fp32", "int8")),
        ("stateful GRU 128", text, "gru", 128, 1, ("int8",)),
        (f"stateful GRU 32, {len(set(hanzi)):,} characters", wide, "gru", 32, 1, ("fp32",)),
    ]
    out = []
    for i, (label, corpus, cell, units, layers, precisions) in enumerate(specs):
        where = tmp / f"model-{i}"
        config = TrainConfig(out_dir=where, corpus=corpus, mode="stateful", cell=cell,
                             units=units, layers=layers, seq_length=8, epochs=1,
                             steps_per_epoch=10, seed=1, quantize="int8")  # fmt: skip
        train(config)
        out += [(label, where, precision) for precision in precisions]
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import machine, publish

    from runtime.artifact import MODEL_FILES, default_model_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000, help="cases per level, default model")
    ap.add_argument("--trained-cases", type=int, default=3_000, help="per level, each trained")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="fuzz this model directory only")
    ap.add_argument("--precision", default="fp32", help="its graph to damage: fp32 or int8")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is not None:
            targets = [(args.model.name, args.model, args.precision, args.cases)]
        else:
            targets = [("default (window SimpleRNN 50)", default_model_dir(), "fp32", args.cases)]
            targets += [(*t, args.trained_cases) for t in trained_models(Path(tmp))]
        for label, model_dir, precision, cases in targets:
            for level, name in (("bytes", "byte level"), ("proto", "protobuf level")):
                start = time.perf_counter()
                r = fuzz(model_dir, cases, args.seed, level=level, precision=precision)
                rows.append(
                    f"| {label} | `{MODEL_FILES[precision]}` | {name} | {r['cases']:,} "
                    f"| {r['ok']:,} | {r['ArtifactError']:,} | {len(r['failures'])} "
                    f"| {time.perf_counter() - start:.0f} |"
                )
                failures += [(label, f) for f in r["failures"]]
    lines = [
        "## Fuzzed model files (`benchmarks/fuzz_models.py`)",
        "",
        "Damaged copies of each model's graph, each with vocab.json re-sealed to its sha256 "
        "so it reaches the model checks and onnxruntime. Byte level: truncations, bit flips, "
        "splices, insertions, zeroed runs, random bytes. Protobuf level "
        "(`benchmarks/proto_mutate.py`): over-long and high-bit tags, wrong wire types, "
        "repeated and deleted fields, foreign fields, deep nesting, extreme and over-long "
        "varints, swapped fields, smuggled external data, model-local functions. A case that "
        f"loads generates {LENGTH:,} greedy characters (a short SimpleRNN window model's "
        "window graph is then built from the damaged weights and run too). Goal: no other "
        "exception, hang or dead process; at least 10,000 cases per level on the default "
        "model.",
        "",
        "| model | graph | mutations | cases | loaded and generated | refused with "
        "ArtifactError | other exceptions, hangs or dead processes | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Seed {args.seed}. Machine: {machine()}.",
    ]
    lines += [
        f"- {label}, case {f['case']} (exit {f['returncode']}): {f['detail'][-300:]}"
        for label, f in failures
    ]
    publish("fuzz", lines, args.output)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
