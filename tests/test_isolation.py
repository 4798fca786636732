"""The runtime runs without TensorFlow: proven in fresh processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "tf2onnx")


def test_runtime_never_imports_training_frameworks() -> None:
    code = (
        "import sys\n"
        "from runtime import Generator\n"
        "from runtime.cli import main\n"
        "g = Generator.load()\n"
        "assert g.generate('This is Z', 20)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert proc.stdout.strip() == ""


def test_cli_in_a_fresh_process_streams_and_exits_zero(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "generate", "This is Z", "-n", "12"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("This is Z") and len(proc.stdout.rstrip("\n")) == 21


def test_cli_error_in_a_fresh_process_is_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "generate", "This is Q!"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
