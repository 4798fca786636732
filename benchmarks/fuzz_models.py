"""Fuzz model loading: truncated, bit-flipped, spliced and random model.onnx files.

Usage: python benchmarks/fuzz_models.py [--cases 10000] [--seed 0] [--output FILE]

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

WORKER = r"""
import hashlib, json, random, sys, traceback
from pathlib import Path
from runtime import Generator
from runtime.errors import ArtifactError
from runtime.artifact import MODEL_FILES

src, work, first, count, seed, progress = sys.argv[1:7]
src, work = Path(src), Path(work)
original = (src / "model.onnx").read_bytes()
vocab = json.loads((src / "vocab.json").read_text())
counts = {"ok": 0, "ArtifactError": 0}
for case in range(int(first), int(first) + int(count)):
    Path(progress).write_text(str(case))
    rng = random.Random(f"{seed}:{case}")
    data = bytearray(original)
    kind = rng.choice(["truncate", "flip", "flips", "splice", "random", "insert", "zero"])
    if kind == "truncate":
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
    (work / "model.onnx").write_bytes(bytes(data))
    vocab["model_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (work / "vocab.json").write_text(json.dumps(vocab))
    try:
        g = Generator.load(work)
        g.generate(g.spec.training.get("sample_prompt") or g.spec.chars[0] * g.spec.seq_length, 3)
        counts["ok"] += 1
    except ArtifactError:
        counts["ArtifactError"] += 1
    except Exception:
        print(json.dumps({"case": case, "kind": kind, "error": traceback.format_exc()}))
        sys.exit(3)
print(json.dumps(counts))
"""


def fuzz(model_dir: Path, cases: int, seed: int = 0, chunk: int = 500) -> dict[str, object]:
    """Run `cases` damaged copies of model_dir; counts of outcomes and any failures."""
    totals = {"cases": 0, "ok": 0, "ArtifactError": 0, "failures": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        work, progress = Path(tmp) / "m", Path(tmp) / "progress"
        shutil.copytree(model_dir, work)
        first = 0
        while first < cases:
            count = min(chunk, cases - first)
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
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
            )
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


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import machine, write_section

    from runtime.artifact import default_model_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    start = time.perf_counter()
    r = fuzz(args.model, args.cases, args.seed)
    seconds = time.perf_counter() - start
    lines = [
        "## Fuzzed model files (`benchmarks/fuzz_models.py`)",
        "",
        f"Damaged copies of `{args.model.name}/model.onnx` (truncations, bit flips, splices, "
        "insertions, zeroed runs, random bytes), each with vocab.json re-sealed to its sha256 "
        "so it reaches the scanner and onnxruntime.",
        "",
        "| measure | value | goal |",
        "|---|---:|---|",
        f"| cases run | {r['cases']:,} | ≥ 10,000 |",
        f"| loaded and generated | {r['ok']:,} | |",
        f"| refused with ArtifactError | {r['ArtifactError']:,} | |",
        f"| other exceptions or dead processes | {len(r['failures'])} | 0 |",
        "",
        f"{seconds:.0f} s, seed {args.seed}. Machine: {machine()}.",
    ]
    lines += [
        f"- case {f['case']} (exit {f['returncode']}): {f['detail'][-300:]}" for f in r["failures"]
    ]
    body = "\n".join(lines)
    write_section("fuzz", body, path=args.output)
    print(body)
    sys.exit(1 if r["failures"] else 0)


if __name__ == "__main__":
    main()
