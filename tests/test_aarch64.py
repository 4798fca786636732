"""The runtime on aarch64 (Raspberry Pi 4/5 class): installed from its wheel into Debian
bookworm's arm64 Python 3.11, emulated by qemu-user-static, with onnxruntime 1.20.1's
aarch64 wheel (`make aarch64-tools` builds it all under .cache/aarch64). Greedy output must
equal this machine's, character for character."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from runtime import Generator
from runtime.artifact import default_model_dir

AARCH64 = REPO / ".cache" / "aarch64"
SYSROOT = AARCH64 / "sysroot"
PROBE = """
import json, platform, sys
import onnxruntime
from runtime import Generator
out = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__}
for path, precision in json.loads(sys.argv[1]):
    g = Generator.load(path, precision=precision)
    out[f"{path}:{precision}"] = g.generate(g.spec.sample_prompt, 200)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime's wheel, built from this checkout and installed for the emulated Python."""
    assert (SYSROOT / "usr" / "bin" / "python3.11").exists(), "run `make aarch64-tools` first"
    work = tmp_path_factory.mktemp("aarch64")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(REPO)],
        check=True,
    )
    (wheel,) = work.glob("rnn_textgen-*.whl")
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
    )  # fmt: skip
    return target


def test_greedy_output_is_identical_on_emulated_aarch64(
    installed: Path, tmp_path: Path, stateful_models: dict
) -> None:
    stateful = stateful_models["lstm"]
    cases = [(str(default_model_dir()), "fp32"), (str(stateful), "fp32"), (str(stateful), "int8")]
    proc = subprocess.run(
        [
            "qemu-aarch64-static",
            "-L",
            str(SYSROOT),
            str(SYSROOT / "usr" / "bin" / "python3.11"),
            "-c",
            PROBE,
            json.dumps(cases),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": f"{installed}:{AARCH64 / 'wheels'}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["machine"] == "aarch64" and out["onnxruntime"] == "1.20.1"
    for path, precision in cases:
        gen = Generator.load(path, precision=precision)
        assert out[f"{path}:{precision}"] == gen.generate(gen.spec.sample_prompt, 200)
