"""Crash safety: SIGKILL the trainer at random moments of fit and export, many times.

Usage: python benchmarks/kill_trials.py [--trials 25] [--seed 0] [--output FILE]

The output directory starts with a complete model. Each trial retrains over it with
`--force` and is killed after a random delay spanning training, export and publishing.
After each kill the directory must hold a complete, loadable artifact set, either the one
before the trial or a new one (never a mix, never a partial file); if a checkpoint
survived, `--resume` must finish the run and publish a loadable model (killed before its
first checkpoint, `--resume` must refuse in one line and change nothing). Writes the
"crash safety" section of BENCHMARKS.md (or --output); tests/test_crash_safety.py runs a
few trials of the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SET = ("model.onnx", "vocab.json", "model.keras")
CORPUS = "".join(
    f"line {i}: the quick brown fox jumps over the lazy dog, {i % 7} times.\n" for i in range(120)
)
TRAIN = ["--seq-length", "8", "--units", "16", "--epochs", "4", "--batch-size", "64", "--quiet"]


@contextlib.contextmanager
def mounted_tmpfs(where: Path) -> Iterator[Path | None]:
    """A tmpfs mounted at `where` (None where mounting is not permitted: not root)."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "train", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def fingerprint(out: Path) -> tuple[str, ...] | None:
    """Hashes of the artifact set, or None if there is none at all."""
    if not any((out / name).exists() for name in SET):
        return None
    return tuple(
        hashlib.sha256((out / n).read_bytes()).hexdigest() if (out / n).exists() else "missing"
        for n in SET
    )


def consistent(out: Path) -> str | None:
    """None if out holds a complete, loadable set; else what is wrong."""
    code = (
        "import sys; from runtime import Generator; "
        "g = Generator.load(sys.argv[1]); g.generate(g.spec.sample_prompt, 3)"
    )
    if any(not (out / n).is_file() for n in SET):
        return "incomplete set: " + ", ".join(n for n in SET if not (out / n).is_file())
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True
    )
    return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def run_trials(
    trials: int, workdir: Path, seed: int = 0, out: Path | None = None
) -> dict[str, object]:
    """`trials` kills of a retraining over `out` (default: workdir/model; a symlink to a
    directory or a mount point work the same way)."""
    from trainer.state import latest_checkpoint

    rng = random.Random(seed)
    corpus = workdir / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = workdir / "model" if out is None else out
    base = ["--corpus", str(corpus), "--out", str(out), *TRAIN]
    start = time.perf_counter()
    first = _cli(*base, "--seed", "1")
    assert first.wait() == 0, first.stdout.read()
    full = time.perf_counter() - start  # one uninterrupted run: the span kills are drawn from
    results = {
        "trials": 0,
        "lost_or_mixed": 0,
        "old_set": 0,
        "new_set": 0,
        "resumed": 0,
        "nothing_to_resume": 0,
        "resume_failures": 0,
        "problems": [],
        "run_seconds": round(full, 1),
    }
    for trial in range(trials):
        before = fingerprint(out)
        proc = _cli(*base, "--seed", str(100 + trial), "--force")
        time.sleep(rng.uniform(0.3, full * 1.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        results["trials"] += 1
        problem = consistent(out)
        after = fingerprint(out)
        if problem is not None:
            results["lost_or_mixed"] += 1
            results["problems"].append(f"trial {trial}: {problem}")
        elif after == before:
            results["old_set"] += 1
        else:
            results["new_set"] += 1
        if (out / ".train-state").is_dir():
            # Killed before its first epoch ended, a run has no checkpoint: --resume must
            # then refuse in one line and leave the set alone; with one, it must finish.
            resumable = latest_checkpoint(out) is not None
            resumed = _cli("--out", str(out), "--resume", "--quiet")
            code, said = resumed.wait(), resumed.stdout.read()
            refused = not resumable and code != 0 and "nothing to resume" in said
            if consistent(out) is None and ((resumable and code == 0) or refused):
                results["resumed" if resumable else "nothing_to_resume"] += 1
            else:
                results["resume_failures"] += 1
                results["problems"].append(f"trial {trial}: resume failed: {said[-300:]}")
    return results


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import machine, publish

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["a directory"] = run_trials(args.trials, Path(tmp), args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "real").mkdir()
        (Path(tmp) / "link").symlink_to(Path(tmp) / "real")
        results["a symlink to a directory"] = run_trials(
            args.trials, Path(tmp), args.seed, out=Path(tmp) / "link"
        )
    with tempfile.TemporaryDirectory() as tmp, mounted_tmpfs(Path(tmp) / "volume") as volume:
        if volume is not None:
            results["a mount point (tmpfs)"] = run_trials(
                args.trials, Path(tmp), args.seed, out=volume
            )
    r = results["a directory"]
    lines = [
        "## Crash safety (`benchmarks/kill_trials.py`)",
        "",
        f"SIGKILL at a random moment of `textgen-train train --force` over a complete model "
        f"(kill times uniform over one whole run, {r['run_seconds']} s: import, fit, export, "
        "publish).",
        "",
        "| measure | value | goal |",
        "|---|---:|---|",
        f"| kill trials | {r['trials']} | ≥ 20 |",
        f"| artifact sets lost, partial or mixed | {r['lost_or_mixed']} | 0 |",
        f"| … left the previous complete set | {r['old_set']} | |",
        f"| … left the new complete set | {r['new_set']} | |",
        f"| interrupted runs finished with `--resume` | {r['resumed']} | |",
        f"| killed before the first checkpoint: `--resume` refused in one line "
        f"| {r['nothing_to_resume']} | |",
        f"| `--resume` failures | {r['resume_failures']} | 0 |",
        "",
        "The same trials with `--out` pointing elsewhere than a plain directory:",
        "",
        "| `--out` is | trials | lost, partial or mixed | old set | new set | resumed "
        "| resume failures |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {kind} | {x['trials']} | {x['lost_or_mixed']} | {x['old_set']} | {x['new_set']} "
        f"| {x['resumed']} | {x['resume_failures']} |"
        for kind, x in results.items()
    ]
    lines += ["", f"Machine: {machine()}."]
    problems = [p for x in results.values() for p in x["problems"]]
    if problems:
        lines += ["", "Problems:", *(f"- {p}" for p in problems)]
    publish("crash-safety", lines, args.output)
    bad = any(x["lost_or_mixed"] or x["resume_failures"] for x in results.values())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
