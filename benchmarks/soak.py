"""Soak: 8 threads x 10,000 generations on one Generator, checked against sequential results.

Usage: python benchmarks/soak.py [--threads 8] [--per-thread 10000] [--model DIR] [--output FILE]

Jobs cycle through 48 (prompt, decoding) pairs, greedy and seeded sampling, single and
batched; every result must equal the one computed sequentially beforehand. RSS is read
after the first 1,000 generations and at the end: growth is the leak signal. Writes the
"soak" section of BENCHMARKS.md (or --output).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

from runtime import GenerationOptions, Generator  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def jobs_for(gen: Generator) -> list[tuple[str, GenerationOptions, bool]]:
    start = gen.spec.sample_prompt
    prompts = [start, start[::-1], start * 2, start[1:] + start[:1]]
    prompts = [p for p in prompts if len(p) >= gen.spec.min_prompt] or [start]
    jobs = []
    for i in range(48):
        options = (
            GenerationOptions()
            if i % 3 == 0
            else GenerationOptions(
                temperature=0.7 + 0.1 * (i % 5), top_k=None if i % 2 else 5, seed=i
            )
        )
        jobs.append((prompts[i % len(prompts)], options, i % 4 == 1))
    return jobs


def run_job(gen: Generator, job: tuple[str, GenerationOptions, bool], length: int) -> str:
    prompt, options, batched = job
    if batched:
        return gen.generate_batch([prompt, prompt], length, options)[1]
    return gen.generate(prompt, length, options)


def main() -> None:
    from runtime.artifact import default_model_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--per-thread", type=int, default=10_000)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--model", type=Path, default=default_model_dir())
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    gen = Generator.load(args.model)
    jobs = jobs_for(gen)
    expected = [run_job(gen, job, args.length) for job in jobs]
    done = [0]
    lock = threading.Lock()
    errors: list[str] = []
    mismatches = [0]
    early_rss: list[float] = []
    barrier = threading.Barrier(args.threads)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(args.per_thread):
            j = (k * 7 + i) % len(jobs)
            try:
                out = run_job(gen, jobs[j], args.length)
            except Exception as exc:  # the soak counts every failure, of any kind
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                done[0] += 1
                if out != expected[j]:
                    mismatches[0] += 1
                if done[0] == 1000:
                    early_rss.append(rss_mb())

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    end_rss = rss_mb()
    growth = (end_rss - early_rss[0]) / early_rss[0] if early_rss else float("nan")
    total = args.threads * args.per_thread
    lines = [
        "## Concurrent soak (`benchmarks/soak.py`)",
        "",
        f"One `Generator` ({args.model.name}), {args.threads} threads × {args.per_thread:,} "
        f"generations of {args.length} characters, cycling through {len(jobs)} jobs (greedy and "
        "seeded sampling, single and batched), each compared with its sequential result.",
        "",
        "| measure | value | goal |",
        "|---|---:|---|",
        f"| generations | {done[0]:,} of {total:,} | all |",
        f"| errors | {len(errors)} | 0 |",
        f"| results different from sequential | {mismatches[0]} | 0 |",
        f"| throughput | {done[0] / seconds:,.0f} generations/s "
        f"({done[0] * args.length / seconds:,.0f} characters/s) | |",
        f"| RSS after 1,000 generations → at the end | {early_rss[0] if early_rss else 0:.1f} → "
        f"{end_rss:.1f} MB ({growth:+.1%}) | ≤ +10% |",
        "",
        f"{seconds:.0f} s. Machine: {machine()}.",
    ]
    publish("soak", lines, args.output)
    sys.exit(0 if not errors and not mismatches[0] and growth <= 0.10 else 1)


if __name__ == "__main__":
    main()
