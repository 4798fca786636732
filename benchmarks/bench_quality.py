"""Quality on a real book: held-out bits per character after at most 15 minutes of training.

Usage: python benchmarks/bench_quality.py [--minutes 14] [--output FILE] [-- extra trainer args]

Trains on the King James Bible (public domain; benchmarks/corpora.py; by default its first
1.5 MB, Genesis to 2 Kings; `--chars 0` for all 4.2 MB) with the last
10% held out (the trainer's default for a corpus file), under `--time-limit`, and reports
the validation bits per character of the weights it keeps, with the exact command. Writes
the "quality" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import kjv  # noqa: E402
from report import machine, publish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".cache" / "quality-model"
SETTINGS = [
    "--mode",
    "stateful",
    "--cell",
    "lstm",
    "--units",
    "256",
    "--seq-length",
    "100",
    "--batch-size",
    "64",
    "--steps-per-epoch",
    "400",
    "--epochs",
    "1000",
    "--learning-rate",
    "0.002",
    "--dropout",
    "0.25",
    "--seed",
    "0",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--minutes",
        type=float,
        default=14.0,
        help="training time limit (the export's own checks come after it)",
    )
    ap.add_argument(
        "--chars",
        type=int,
        default=1_500_000,
        help="use the Bible's first CHARS characters (cut at a line end); 0 = all",
    )
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("extra", nargs="*", help="more textgen-train options (after --)")
    args = ap.parse_args()

    book = kjv()
    if args.chars:
        text = book.read_text(encoding="utf-8")
        excerpt = text[: text.rindex("\n", 0, args.chars) + 1]
        book = book.with_name(f"kjv-{len(excerpt)}.txt")
        book.write_text(excerpt, encoding="utf-8")
    settings = SETTINGS + args.extra
    cmd = [
        "textgen-train",
        "train",
        "--corpus",
        str(book.relative_to(REPO)),
        "--out",
        str(OUT.relative_to(REPO)),
        *settings,
        "--time-limit",
        f"{args.minutes:g}",
        "--force",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *cmd[1:]], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    t = json.loads((OUT / "vocab.json").read_text())["training"]
    history = json.loads((OUT / "history.json").read_text())["metrics"]
    train_minutes = sum(history["seconds"]) / 60
    bpc = t["val_bits_per_char"]
    excerpt_note = " (Genesis to 2 Kings, cut at a line end)" if args.chars else ""
    lines = [
        "## Quality on a real text (`benchmarks/bench_quality.py`)",
        "",
        f"King James Bible{excerpt_note}, {t['corpus_chars']:,} characters; the last "
        f"{t['val_fraction']:.0%} held out (never trained on), validated each epoch.",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| validation bits per character (kept weights, epoch {t['best_epoch']}) | "
        f"**{bpc:.3f}** | ≤ 1.8: {'yes' if bpc <= 1.8 else '**no**'} |",
        f"| training time (sum of epochs) | {train_minutes:.1f} min | ≤ 15 min: "
        f"{'yes' if train_minutes <= 15 else '**no**'} |",
        f"| whole command, including validation and the verified export | {wall / 60:.1f} min | |",
        f"| training bits per character | {t['bits_per_char']:.3f} | |",
        f"| validation accuracy | {t['val_accuracy']:.3f} | |",
        f"| epochs of 400 steps run | {t['epochs_run']} | |",
        "",
        f"Command: `{shlex.join(cmd)}`. Machine: {machine()}.",
    ]
    publish("quality", lines, args.output)


if __name__ == "__main__":
    main()
