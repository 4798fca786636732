"""The benchmark scripts still run and write their sections (quick mode, to a temp file).

These tests check that the scripts work and report every row; they assert no timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args, "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out.read_text()


def test_bench_generate_writes_every_row(tmp_path) -> None:
    text = run_script("bench_generate.py", "--quick", out=tmp_path / "B.md")
    for row in (
        "notebook loop",
        "Keras direct call",
        "tf2onnx default export",
        "LiteRT, default",
        "unroll=True",
        "empty onnxruntime graph",
        "Generator.generate",
        'graph_builder="native"',
        "generate_batch",
        "sampled (temperature 0.8",
        "≤ 1.0× LiteRT",
        "stretch: ≤ 1.0× LiteRT with `unroll=True`",
        "≥ 4,000×",
    ):
        assert row in text, row
    assert "<!-- bench:generate -->" in text and "<!-- /bench:generate -->" in text


def test_bench_litert_writes_every_row(tmp_path) -> None:
    """The LiteRT comparison (#13's table) runs end to end on briefly trained models: every
    model and precision gets a row with both times, their ratio and its verdict."""
    text = run_script("bench_litert.py", "--quick", "--steps", "5", out=tmp_path / "B.md")
    rows = [r for r in text.splitlines() if r.startswith("| ") and not r.startswith("| model ")]
    named = [r.split(" | ")[0:2] for r in rows]
    assert named == [
        ["| LSTM 256, window 8", "fp32"],
        ["| LSTM 64", "fp32"],
        ["| LSTM 64", "int8"],
        ["| GRU 64", "fp32"],
        ["| GRU 64", "int8"],
    ], rows
    for row in rows:
        cells = row.strip("| ").split(" | ")
        ours, theirs, ratio = float(cells[3]), float(cells[6]), float(cells[7].rstrip("×"))
        # The ratio is of the unrounded times; the table shows them to 0.1 us.
        assert ours > 0 and theirs > 0 and abs(ratio - ours / theirs) < 0.05, row
        assert cells[8] == "yes" or cells[8].startswith("**missed by"), row
    assert "<!-- bench:litert -->" in text and "<!-- /bench:litert -->" in text


def test_sections_are_replaced_not_duplicated(tmp_path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from report import write_section

    out = tmp_path / "B.md"
    write_section("a", "first", path=out)
    write_section("b", "other", path=out)
    write_section("a", "second", path=out)
    text = out.read_text()
    assert text.count("<!-- bench:a -->") == 1 and "second" in text and "first" not in text
    assert "other" in text and text.startswith("# Benchmarks")


def test_a_child_peak_is_its_own_not_its_parents() -> None:
    """measure_child reports the command's peak RSS, whatever this process holds (a child
    started straight from here inherits our high-water mark into its ru_maxrss)."""
    import numpy as np

    from runtime.bench import measure_child

    ballast = np.ones(300 * 2**20 // 8)  # this process: 300 MB more
    _, small, _ = measure_child([sys.executable, "-c", "pass"])
    grow = "import numpy as np; a = np.ones(200 * 2**20 // 8); print(a.size)"
    seconds, big, output = measure_child([sys.executable, "-c", grow])
    del ballast
    assert small < 100 and 200 < big < 300, (small, big)
    assert output.strip() == str(200 * 2**20 // 8) and seconds > 0
    with pytest.raises(RuntimeError, match="failed"):
        measure_child([sys.executable, "-c", "raise SystemExit(3)"])
