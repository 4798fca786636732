"""Measurements behind `textgen bench`: latency, throughput, cold start and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .generator import Generator
from .step_graph import GREEDY_STEPS


@dataclass(frozen=True)
class BenchResult:
    """Figures for one model on this machine (times in microseconds unless named)."""

    p50_us: float
    p99_us: float
    chars_per_s: float
    batch: int
    batch_chars_per_s: float
    cold_start_s: float
    import_onnxruntime_s: float
    peak_rss_mb: float
    # Characters one greedy Run hands over (GREEDY_STEPS on a greedy graph, else 1): they
    # arrive together, so most gaps between characters are near zero.
    chars_per_run: int = 1

    def lines(self) -> list[str]:
        burst = f" (characters come {self.chars_per_run} per Run)" if self.chars_per_run > 1 else ""
        return [
            f"per character (1 stream):  p50 {self.p50_us:.2f} µs, p99 {self.p99_us:.2f} µs"
            + burst,
            f"single stream:             {self.chars_per_s:,.0f} characters/s",
            f"batch of {self.batch:<4}             {self.batch_chars_per_s:,.0f} characters/s "
            f"({1e6 / self.batch_chars_per_s:.3f} µs per character)",
            f"cold start:                {self.cold_start_s * 1000:.0f} ms to 50 characters "
            f"(python -c 'import onnxruntime': {self.import_onnxruntime_s * 1000:.0f} ms)",
            f"peak RSS:                  {self.peak_rss_mb:.1f} MB (textgen generate)",
        ]


# Linux carries a process' pre-exec memory high-water mark over exec into its ru_maxrss, and a
# child started with vfork (as subprocess does) shares its parent's memory until exec: a
# child started from this process would report at least this process' peak (measured: 339 MB
# for `python -c pass` started from a 300 MB parent). So a small launcher starts the command,
# and times it and reads its rusage there.
_LAUNCHER = """\
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
report = f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {elapsed!r}"
os.write(int(sys.argv[1]), report.encode())
"""


def measure_child(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, the kernel's rusage of that child, as `/usr/bin/time -v`
    reports it) and combined output of one child process; RuntimeError if it fails."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(write), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            pass_fds=(write,),
        )
        os.close(write)
        write = -1
        output = proc.stdout.read().decode(errors="replace")  # to EOF first: no pipe deadlock
        proc.stdout.close()
        proc.wait()
        with os.fdopen(read, "rb") as f:
            read = -1
            report = f.read().decode().split()
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
    if proc.returncode != 0 or len(report) != 3 or report[0] != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed: {output[-300:]}")
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak_mb = int(report[1]) / (2**20 if sys.platform == "darwin" else 1024)
    return float(report[2]), peak_mb, output


def run(
    model_dir: Path | None = None,
    *,
    precision: str = "fp32",
    chars: int = 2000,
    batch: int = 64,
    repeats: int = 5,
    threads: int = 1,
) -> BenchResult:
    """Measure `model_dir` (None = the default model); medians over `repeats` runs."""
    gen = Generator.load(model_dir, precision=precision, threads=threads)
    prompt = gen.spec.sample_prompt
    gen.generate(prompt, 100)  # warm-up: first Runs allocate

    per_char = []
    for _ in range(repeats):
        stream = gen.stream(prompt, chars)
        clock = time.perf_counter_ns
        last = clock()
        for _ in stream:
            now = clock()
            per_char.append(now - last)
            last = now
    single = []
    for _ in range(repeats):
        start = time.perf_counter()
        gen.generate(prompt, chars)
        single.append(time.perf_counter() - start)
    prompts = [prompt] * batch
    batched = []
    n = max(1, chars // 4)
    for _ in range(repeats):
        start = time.perf_counter()
        gen.generate_batch(prompts, n)
        batched.append(time.perf_counter() - start)

    model_arg = ["--model", str(gen.model_dir), "--precision", precision]
    # "--" ends the options: a prompt may start with "-".
    cmd = [sys.executable, "-m", "runtime.cli", "generate", "-n", "50", *model_arg, "--", prompt]
    cold = [measure_child(cmd)[:2] for _ in range(repeats)]
    bare = [measure_child([sys.executable, "-c", "import onnxruntime"])[0] for _ in range(repeats)]
    return BenchResult(
        p50_us=float(np.percentile(per_char, 50)) / 1e3,
        p99_us=float(np.percentile(per_char, 99)) / 1e3,
        chars_per_s=chars / float(np.median(single)),
        batch=batch,
        batch_chars_per_s=batch * n / float(np.median(batched)),
        cold_start_s=float(np.median([c[0] for c in cold])),
        import_onnxruntime_s=float(np.median(bare)),
        peak_rss_mb=max(c[1] for c in cold),
        chars_per_run=GREEDY_STEPS if gen.greedy_session is not None else 1,
    )
