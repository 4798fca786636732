"""The README's quickstart, as a new user runs it: a real install, no TensorFlow, any directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
GOLDEN = (REPO / "tests" / "golden" / "default_greedy.txt").read_text()


def quickstart_commands() -> list[str]:
    block = README.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_quickstart_is_two_commands_and_ci_runs_the_test_one() -> None:
    assert quickstart_commands() == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


@pytest.fixture(scope="module")
def demo_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run `make demo` exactly as the README says, into a fresh venv outside the checkout."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        ["make", "-C", str(REPO), "demo", f"VENV={venv}", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return venv, proc.stdout


def test_make_demo_generates_from_the_default_model(demo_venv) -> None:
    _, out = demo_venv
    assert GOLDEN[:59] in out


def test_installed_runtime_works_from_any_directory_without_tensorflow(demo_venv, tmp_path):
    venv, _ = demo_venv
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        [str(venv / "bin" / "textgen"), "generate", "This is Z", "-n", "50"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == GOLDEN[:59] + "\n"
    # A non-editable install: the runtime and its model come from site-packages, not the repo.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u, runtime, runtime.artifact as a;"
            "print(runtime.__file__); print(a.default_model_dir());"
            "print([m for m in ('tensorflow','keras','tf2onnx') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    ).stdout.splitlines()
    assert "site-packages" in probe[0] and "site-packages" in probe[1]
    assert probe[2] == "[]"
