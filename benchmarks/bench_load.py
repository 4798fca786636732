"""What the model checks cost at load: the strict parser + graph allowlist against the scanner
they replaced, for the default model and an LSTM 256 (window of 100 and stateful).

Usage: python benchmarks/bench_load.py [--repeats 30] [--output FILE]

"Before" is the previous release's `runtime/onnx_scan.py`, taken from git history (commit
BEFORE) and timed in this same run on the same bytes; "after" is `runtime.graph_rules
.vet_model`. Also: the whole `Generator.load` (read, sha256, checks, onnxruntime session,
probe) and the peak RSS of a fresh process that loads the model, with each of the two
checks. Writes the "load" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, median_time, publish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BEFORE = "b344dc9"  # the last commit with runtime/onnx_scan.py

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[3])
import runtime.loading
from runtime import Generator
if sys.argv[2] == "before":
    import onnx_scan_before as old
    def vet(data, spec, precision):
        old.scan(data)
    runtime.loading.vet_model = vet
gen = Generator.load(sys.argv[1])
gen.generate(gen.spec.chars[0] * 100, 5)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def old_scanner(tmp: Path):
    """The previous release's scanner module, from git, or None outside a git checkout."""
    proc = subprocess.run(
        ["git", "show", f"{BEFORE}:runtime/onnx_scan.py"], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return None
    # It imported the runtime's errors relatively; point that at the installed package.
    source = proc.stdout.replace("from .errors import", "from runtime.errors import")
    path = tmp / "onnx_scan_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("onnx_scan_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["onnx_scan_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def lstm_256(out: Path, mode: str) -> Path:
    """An LSTM 256 over 96 characters (untrained weights: load cost does not depend on them),
    exported by the real exporter."""
    from trainer.export import export
    from trainer.model import build_model

    chars = tuple(chr(c) for c in range(32, 128))
    model = build_model(len(chars), 100, units=256, cell="lstm", activation="tanh", mode=mode)
    windows = np.random.default_rng(0).integers(0, len(chars), (16, 100), dtype=np.int32)
    export(
        model,
        chars=chars,
        seq_length=100,
        out_dir=out,
        windows=windows,
        prompt="".join(chars[i] for i in windows[0]),
        architecture={"cell": "lstm", "layers": 1, "units": 256, "activation": "tanh"},
        training={},
        mode=mode,
    )
    return out


def peak_rss(model_dir: Path, which: str, tmp: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), which, str(tmp)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import trainer  # noqa: F401  (quiets TensorFlow's C++ logging before it loads)
    from runtime import Generator
    from runtime.artifact import MODEL_FILE, ModelSpec, default_model_dir
    from runtime.graph_rules import vet_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old = old_scanner(tmp)
        models = {
            "default (SimpleRNN 50, window 3)": default_model_dir(),
            "LSTM 256, window 100": lstm_256(tmp / "lstm_window", "window"),
            "LSTM 256, stateful": lstm_256(tmp / "lstm_stateful", "stateful"),
        }
        for name, model_dir in models.items():
            data = (model_dir / MODEL_FILE).read_bytes()
            spec = ModelSpec.read(model_dir)
            after = median_time(lambda d=data, s=spec: vet_model(d, s, "fp32"), args.repeats)
            before = median_time(lambda d=data: old.scan(d), args.repeats) if old else None
            load = median_time(lambda m=model_dir: Generator.load(m), max(5, args.repeats // 3))
            rss_after = peak_rss(model_dir, "after", tmp)
            rss_before = peak_rss(model_dir, "before", tmp) if old else None
            rows.append((name, len(data), before, after, load, rss_before, rss_after))
    lines = [
        "## Model checks at load (`benchmarks/bench_load.py`)",
        "",
        "Vetting a model file before onnxruntime sees it: the scanner of the previous "
        f"release (`onnx_scan.py` at {BEFORE}, which missed smuggled tags and function "
        "bodies) against the strict parser and graph allowlist (`graph_rules.vet_model`), "
        "on the same bytes in one run; then the whole `Generator.load` and the peak RSS of a "
        "fresh process that loads the model and generates 5 characters with each.",
        "",
        "| model | file | checks before | checks after | whole load (after) "
        "| peak RSS before | peak RSS after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, size, before, after, load, rss_before, rss_after in rows:
        b = f"{before * 1e3:.2f} ms" if before is not None else "n/a"
        rb = f"{rss_before / 2**20:.0f} MB" if rss_before else "n/a"
        lines.append(
            f"| {name} | {size / 1024:,.0f} KB | {b} | {after * 1e3:.2f} ms "
            f"| {load * 1e3:.1f} ms | {rb} | {rss_after / 2**20:.0f} MB |"
        )
    lines += ["", f"Medians of {args.repeats} runs. Machine: {machine()}."]
    publish("load", lines, args.output)


if __name__ == "__main__":
    main()
