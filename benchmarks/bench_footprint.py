"""Runtime footprint: install size, cold start and peak memory of a runtime-only install.

Usage: python benchmarks/bench_footprint.py [--repeats N] [--output FILE]

Creates a fresh venv, runs `pip install .` (the runtime only, as a device would), and
measures from there: disk used by the venv, `textgen generate` from process start to 50
characters printed against `python -c "import onnxruntime"` in the same venv, and the peak
RSS of both (from the kernel's rusage of each child). Writes the "footprint" section of
BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

from runtime.bench import measure_child  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def tree_mb(path: Path) -> float:
    """Disk usage in MB (blocks actually allocated, like du)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_blocks * 512
    return total / 1e6


def child(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    seconds, peak, _ = measure_child(cmd, cwd=cwd)
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(REPO)], check=True, env=env)
        size = tree_mb(venv)
        site = next((venv / "lib").glob("python*/site-packages"))
        pip_mb = sum(tree_mb(p) for p in site.glob("pip*"))
        versions = subprocess.run(
            [
                str(py),
                "-c",
                "import onnxruntime, numpy, click; "
                "print(onnxruntime.__version__, numpy.__version__, click.__version__)",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.split()
        has_tf = (
            subprocess.run(
                [str(py), "-c", "import tensorflow"], capture_output=True, env=env
            ).returncode
            == 0
        )

        textgen = [str(venv / "bin" / "textgen"), "generate", "This is Z", "-n", "50"]
        bare = [str(py), "-c", "import onnxruntime"]
        child(textgen, Path(tmp))  # warm the page cache for both, as any second launch is
        child(bare, Path(tmp))
        runs_cli, runs_bare = [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
            runs_cli.append(child(textgen, Path(tmp)))
            runs_bare.append(child(bare, Path(tmp)))

    cli_s = statistics.median(r[0] for r in runs_cli)
    bare_s = statistics.median(r[0] for r in runs_bare)
    cli_rss = max(r[1] for r in runs_cli)
    bare_rss = max(r[1] for r in runs_bare)
    rows = [
        (
            "runtime-only venv on disk (`pip install .`)",
            f"{size:,.0f} MB",
            f"≤ 200 MB: {'yes' if size <= 200 else '**no**'}",
        ),
        ("… of which pip itself", f"{pip_mb:,.0f} MB", ""),
        ("TensorFlow importable in that venv", "yes" if has_tf else "no", "must be no"),
        ("`textgen generate` to 50 characters (median)", f"{cli_s * 1000:.0f} ms", ""),
        ('`python -c "import onnxruntime"` (median)', f"{bare_s * 1000:.0f} ms", ""),
        (
            "cold start ratio",
            f"{cli_s / bare_s:.2f}×",
            f"≤ 1.5×: {'yes' if cli_s / bare_s <= 1.5 else '**no**'}",
        ),
        (
            "peak RSS, `textgen generate`",
            f"{cli_rss:.1f} MB",
            f"≤ 75 MB: {'yes' if cli_rss <= 75 else '**no**'}",
        ),
        ("peak RSS, `import onnxruntime` alone", f"{bare_rss:.1f} MB", ""),
    ]
    lines = [
        "## Runtime footprint (`benchmarks/bench_footprint.py`)",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        f"{args.repeats} interleaved launches each, default model. Versions in the venv: "
        f"onnxruntime {versions[0]}, NumPy {versions[1]}, click {versions[2]}. "
        f"Machine: {machine()}.",
    ]
    publish("footprint", lines, args.output)


if __name__ == "__main__":
    main()
