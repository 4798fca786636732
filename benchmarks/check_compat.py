"""Exported models across onnxruntime releases: load, run, and give identical greedy text.

Usage: python benchmarks/check_compat.py [--versions 1.16.3 1.22.0 1.32.0] [--output FILE]

For each onnxruntime version, makes a fresh venv with that release (and NumPy < 2 for
releases built against NumPy 1), installs this runtime into it without dependencies, and
generates greedily from: the shipped default model, SimpleRNN / LSTM / GRU models trained
here (each with its int8 variant), stateful LSTM 256 and GRU 256 models in fp32 and
int8 (threaded warm-up and decomposed step graphs included), and window and stateful models
of a 1,100-character vocabulary (OneHot, format version 3).
Every output must equal this venv's output, and every hostile model of
benchmarks/hostile_models.py must be refused with ArtifactError in every release.
Writes the "compat" section of BENCHMARKS.md (or --output); exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Past runtime.generator.WINDOW_GRAPH_AFTER: short SimpleRNN window models (the default
# among them) generate on their window graph, which each release must run too.
LENGTH = 2_100

PROBE = """
import json, sys
import onnxruntime
from runtime import Generator
out = {"onnxruntime": onnxruntime.__version__}
for path, precision in json.loads(sys.argv[1]):
    g = Generator.load(path or None, precision=precision)
    prompt = g.spec.sample_prompt
    out[f"{path or 'default'}:{precision}"] = g.generate(prompt, LENGTH)
from click.testing import CliRunner
from runtime.cli import main
import numpy, click
cli = CliRunner().invoke(main, ["generate", "This is Z", "-n", "30", "--temperature", "0.9",
                                "--seed", "3"])
out["cli"] = cli.output
out["numpy"], out["click"] = numpy.__version__, getattr(click, "__version__", "?")
for path, precision in json.loads(sys.argv[2]):
    try:
        Generator.load(path, precision=precision).generate("This is Z", 5)
        out[f"hostile:{path}"] = "loaded"
    except Exception as exc:
        out[f"hostile:{path}"] = "refused: " + type(exc).__name__
print(json.dumps(out))
""".replace("LENGTH", str(LENGTH))


def models(tmp: Path) -> list[tuple[str, str]]:
    """The default model and, each with its int8 variant: one window model per cell,
    stateful LSTM and GRU models, and a window and a stateful model whose vocabulary is
    wide enough to one-hot encode with OneHot."""
    from corpora import wide_text

    import trainer  # noqa: F401
    from trainer.train import TrainConfig, train

    corpus = tmp / "corpus.txt"
    corpus.write_text(
        (
            "It was the best of times, it was the worst of times; "
            "it was the age of wisdom, it was the age of foolishness.\n"
        )
        * 8
    )
    wide = tmp / "wide.txt"
    wide.write_text(wide_text(30), encoding="utf-8")
    # Every cell: LSTM natively, GRU and SimpleRNN as stored int8 weights.
    settings: dict[str, dict] = {
        cell: {"corpus": corpus, "cell": cell, "units": 32, "epochs": 3}
        for cell in ("simple", "lstm", "gru")
    }
    # Step graphs big enough that the warm-up session splits each step over threads and
    # that int8 generation steps multiply in int8 (the decomposed step graph's
    # DynamicQuantizeMatMul in onnxruntime < 1.22, MatMulNBits from 1.22).
    for cell in ("lstm", "gru"):
        settings[f"stateful-{cell}"] = {
            "corpus": corpus,
            "cell": cell,
            "units": 256,
            "epochs": 3,
            "mode": "stateful",
        }
    # A vocabulary of ONE_HOT_OP_CHARS or more: the graph one-hot encodes with OneHot
    # (format version 3), in a window model and a stateful one.
    for mode in ("window", "stateful"):
        settings[f"wide-{mode}"] = {
            "corpus": wide,
            "cell": "lstm",
            "units": 32,
            "epochs": 1,
            "steps_per_epoch": 20,
            "mode": mode,
        }
    cases = [("", "fp32")]
    for name, setting in settings.items():
        out = tmp / name
        train(TrainConfig(out_dir=out, seq_length=8, seed=1, quantize="int8", **setting))
        cases += [(str(out), "fp32"), (str(out), "int8")]
    return cases


def hostile_cases(tmp: Path) -> list[tuple[str, str]]:
    """One copy of the default model per attack in hostile_models.py."""
    import shutil

    from hostile_models import HOSTILE

    from runtime.artifact import default_model_dir

    cases = []
    for i, (build, precision, _) in enumerate(HOSTILE.values()):
        where = tmp / f"hostile-{i}"
        shutil.copytree(default_model_dir(), where)
        build(where)
        cases.append((str(where), precision))
    return cases


def probe(
    python: str, cases: list[tuple[str, str]], hostile: list[tuple[str, str]]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [python, "-c", PROBE, json.dumps(cases), json.dumps(hostile)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout)


def venv_with(version: str, where: Path) -> str:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = str(where / "bin" / "python")
    major, minor = (int(x) for x in version.split(".")[:2])
    # Releases before 1.19 were built against NumPy 1: they get the lowest versions this
    # project declares (numpy 1.26, click 8.1.7), so those lower bounds are tested too.
    old = (major, minor) < (1, 19)
    deps = ["numpy==1.26.4", "click==8.1.7"] if old else ["numpy", "click"]
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", f"onnxruntime=={version}", *deps], check=True
    )
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)], check=True)
    return py


def main() -> None:
    import onnxruntime

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--versions",
        nargs="+",
        # 1.15.0: the oldest release with wheels for Python 3.11; 1.16.3: another built
        # against NumPy 1; 1.22.0: the first whose MatMulNBits runs 8 bits (the int8 step
        # graphs' kernel from there on, with the greedy graph's bias input); this venv's.
        default=["1.15.0", "1.16.3", "1.22.0", onnxruntime.__version__],
    )
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = models(tmp)
        hostile = hostile_cases(tmp)
        reference = probe(sys.executable, cases, hostile)
        results = {v: probe(venv_with(v, tmp / f"venv-{v}"), cases, hostile) for v in args.versions}

    names = [f"{p or 'default'}:{prec}" for p, prec in cases]
    label = {n: n.replace(str(tmp) + "/", "").replace(":", " ") for n in names}
    lines = [
        "## onnxruntime compatibility (`benchmarks/check_compat.py`)",
        "",
        f"Greedy output of {len(names)} models ({LENGTH:,} characters each) in fresh venvs, "
        f"compared with this venv's onnxruntime {reference['onnxruntime']}.",
        "",
        "| onnxruntime | "
        + " | ".join(label[n] for n in names)
        + " | `textgen generate`, sampled | hostile models refused |",
        "|---|" + ":-:|" * (len(names) + 2),
    ]
    hostile_keys = [f"hostile:{p}" for p, _ in hostile]
    ok = True
    for version, res in results.items():
        if "error" in res:
            ok = False
            lines.append(f"| {version} | " + f"failed: {res['error']} |" * 1)
            continue
        cells = []
        for n in names:
            same = res.get(n) == reference[n]
            ok &= same
            cells.append("identical" if same else "**differs**")
        same_cli = res.get("cli") == reference["cli"]
        ok &= same_cli
        cells.append("identical" if same_cli else "**differs**")
        refused = sum(res.get(k) == "refused: ArtifactError" for k in hostile_keys)
        ok &= refused == len(hostile_keys)
        cells.append(f"{refused} of {len(hostile_keys)}")
        lines.append(
            f"| {res['onnxruntime']} (NumPy {res['numpy']}, click {res['click']}) | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", f"Machine: {machine()}."]
    publish("compat", lines, args.output)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
