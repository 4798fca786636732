"""The default model in a real browser: the page's own per-character time against the Python
runtime's, in the same run.

Usage: python benchmarks/bench_web.py [--length 2000] [--repeats 3] [--output FILE]

Serves a `textgen web` site from 127.0.0.1 and opens it in headless Chromium with
`autorun=1`; the page measures its own generation (performance.now) and reports it in its
title, read through Chromium's DevTools HTTP endpoint (real time: no virtual clock).
Needs `make web-tools`. Writes the "web" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import chromium  # noqa: E402
from report import machine, publish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ORT_DIST = REPO / ".cache" / "ort-web" / "node_modules" / "onnxruntime-web" / "dist"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_us_per_char(url: str, profile: Path) -> float:
    """Open `url` in headless Chromium and wait for the page's 'done N us/char' title."""
    port = free_port()
    proc = subprocess.Popen(
        chromium(profile, f"--remote-debugging-port={port}", url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = json.load(r)
            except OSError:
                continue
            for page in pages:
                title = page.get("title", "")
                if title.startswith("done "):
                    return float(title.split()[1])
                if title.startswith("error"):
                    raise SystemExit(f"the page failed: {title}")
        raise SystemExit("the page did not finish in 300 s")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    from runtime import Generator
    from runtime.web import write_site

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    gen = Generator.load()
    prompt = "This is Z"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_site(None, root / "site", ORT_DIST)
        handler = functools.partial(_Quiet, directory=str(root))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        query = urlencode({"prompt": prompt, "length": args.length, "autorun": 1})
        url = f"http://127.0.0.1:{httpd.server_address[1]}/site/index.html?{query}"
        browser = [page_us_per_char(url, root / f"profile-{i}") for i in range(args.repeats)]
        httpd.shutdown()
    python = []
    for _ in range(args.repeats * 3):
        start = time.perf_counter()
        gen.generate(prompt, args.length)
        python.append((time.perf_counter() - start) / args.length * 1e6)
    b, p = statistics.median(browser), statistics.median(python)
    version = (ORT_DIST.parent / "package.json").read_text()
    ort_web = json.loads(version)["version"]
    lines = [
        "## In the browser (`benchmarks/bench_web.py`)",
        "",
        f"The default model, greedy, {args.length:,} characters after {prompt!r}: the "
        "`textgen web` page in headless Chromium (onnxruntime-web "
        f"{ort_web}, WASM, one thread, its own `performance.now` measurement), and the Python "
        "runtime in the same run.",
        "",
        "| runtime | µs per character | ratio |",
        "|---|---:|---:|",
        f"| Python runtime (`Generator.generate`) | {p:.2f} | 1.00× |",
        f"| browser page (`textgen.js`, `await session.run` per character) | {b:.2f} "
        f"| {b / p:.1f}× |",
        "",
        f"Medians of {args.repeats} page loads and {args.repeats * 3} Python runs. "
        f"Machine: {machine()}.",
    ]
    publish("web", lines, args.output)


if __name__ == "__main__":
    main()
