"""Shared helpers for benchmark scripts: timing medians, machine facts, BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts in `benchmarks/`; do not edit by hand. Each section is one run of\n"
    "one script: medians over repeats, and ratios against baselines measured in the same run\n"
    "on the same weights (absolute times on a shared machine move; side-by-side ratios hold).\n"
)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` calls (after one warm-up call)."""
    return interleaved_times({"": fn}, repeats)[""]


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall-clock seconds of each `fn()` over `repeats` rounds that call them in turn
    (after one warm-up call each): a noisy moment on a shared machine then slows one round
    of every contender instead of all the repeats of one."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    """One line describing where the numbers were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def write_section(name: str, body: str, path: Path | None = None) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md (or `path`), keeping the others."""
    path = path or BENCHMARKS_MD
    text = path.read_text() if path.exists() else HEADER
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n\n_Run {stamp}._\n<!-- /bench:{name} -->"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + block + "\n")
    )
    path.write_text(text if text.endswith("\n") else text + "\n")


def publish(name: str, lines: list[str], output: Path | None = None) -> str:
    """The tail every script shares: its lines become section `name` of BENCHMARKS.md (or
    of `output`) and are printed; returns the section's text."""
    body = "\n".join(lines)
    write_section(name, body, path=output)
    print(body)
    return body
