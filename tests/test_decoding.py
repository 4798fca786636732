"""Generation controls: sampling, seeds, stop strings, JSON, stdin, Ctrl-C, threads, examples."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import default_sigint

from runtime import GenerationOptions, GenerationSettingsError, Generator
from runtime.cli import main
from runtime.decoding import Sampler

REPO = Path(__file__).resolve().parent.parent
PROMPT = "This is Z"


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.load()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -3}, "seed"),
        ({"stop": ("",)}, "stop"),
        ({"stop": ("x",) * 17}, "stop"),
    ],
)
def test_invalid_options_are_refused(kwargs, fragment) -> None:
    with pytest.raises(GenerationSettingsError, match=fragment):
        GenerationOptions(**kwargs)


def test_default_options_are_greedy(gen) -> None:
    assert GenerationOptions().greedy
    assert gen.generate(PROMPT, 60, GenerationOptions()) == gen.generate(PROMPT, 60)


def test_degenerate_sampling_is_greedy(gen) -> None:
    greedy = gen.generate(PROMPT, 60)
    for options in (
        GenerationOptions(top_k=1, seed=1),
        GenerationOptions(top_p=1e-9, seed=2),
        GenerationOptions(temperature=1e-4, seed=3),
    ):
        assert gen.generate(PROMPT, 60, options) == greedy, options


def test_same_seed_same_text_single_and_batched(gen) -> None:
    options = GenerationOptions(temperature=1.3, seed=11)
    first = gen.generate(PROMPT, 80, options)
    assert first != gen.generate(PROMPT, 80)  # it really samples
    assert gen.generate(PROMPT, 80, options) == first
    assert PROMPT + "".join(gen.stream(PROMPT, 80, options)) == first
    batch = gen.generate_batch([PROMPT, "software"] * 3, 80, options)
    assert gen.generate_batch([PROMPT, "software"] * 3, 80, options) == batch
    # With a seed, each prompt of a batch gets exactly what it gets alone.
    assert batch == [gen.generate(p, 80, options) for p in [PROMPT, "software"] * 3]
    assert gen.generate(PROMPT, 80, GenerationOptions(temperature=1.3, seed=12)) != first


def test_greedy_runs_never_import_numpy_random() -> None:
    """A greedy cold start does not pay numpy.random's import (10 ms); sampling does, and
    draws the seed's numbers as before."""
    code = (
        "import sys\n"
        "from runtime import GenerationOptions, Generator\n"
        "g = Generator.load()\n"
        "print(g.generate('This is Z', 20))\n"
        "print('numpy.random' in sys.modules)\n"
        "print(g.generate('This is Z', 20, GenerationOptions(temperature=0.9, seed=4)))\n"
        "print('numpy.random' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    greedy, before, sampled, after = out.stdout.splitlines()
    assert (before, after) == ("False", "True")
    gen = Generator.load()
    assert greedy == gen.generate(PROMPT, 20)
    assert sampled == gen.generate(PROMPT, 20, GenerationOptions(temperature=0.9, seed=4))


def test_sampler_follows_the_distribution() -> None:
    probs = np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32)
    out = np.zeros(1, dtype=np.int64)

    def freq(**kw) -> np.ndarray:
        sampler = Sampler(GenerationOptions(seed=0, **kw))
        counts = np.zeros(4)
        for _ in range(20_000):
            sampler(probs, out)
            counts[out[0]] += 1
        return counts / counts.sum()

    assert np.allclose(freq(temperature=1.0), probs[0], atol=0.015)
    sharp = probs[0] ** 2 / (probs[0] ** 2).sum()
    assert np.allclose(freq(temperature=0.5), sharp, atol=0.015)
    top2 = np.array([0.5, 0.3, 0, 0]) / 0.8
    assert np.allclose(freq(top_k=2), top2, atol=0.015)
    assert np.allclose(freq(top_p=0.7), top2, atol=0.015)  # 0.5 < 0.7 <= 0.8
    assert freq(top_p=0.9)[3] == 0  # 0.95 needs the third, never the fourth


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"temperature": 0.7},
        {"temperature": 1e-300},
        {"top_k": 5},
        {"top_p": 0.9},
        {"temperature": 1.3, "top_k": 3, "top_p": 0.5},
    ],  # fmt: skip
)
def test_one_stream_draws_as_a_batch_row_does(settings) -> None:
    # One stream draws from a 1-D row (the faster path), a batch from 2-D rows; with a seed
    # every row of a batch draws the same number, so each must pick what the stream picks.
    rng = np.random.default_rng(5)
    alone = Sampler(GenerationOptions(seed=3, **{"temperature": 1.0, **settings}))
    batch = Sampler(GenerationOptions(seed=3, **{"temperature": 1.0, **settings}))
    one, three = np.zeros(1, np.int64), np.zeros(3, np.int64)
    for trial in range(2_000):
        row = rng.random(int(rng.integers(2, 150))).astype(np.float32) ** (1 + trial % 7)
        row[: trial % 4] = 0.0  # unreachable characters
        if trial % 3 == 0:
            row = np.round(row * 4) / 4  # ties
        row[-1] = max(row[-1], 0.25)  # some mass
        if trial % 97 == 0:
            row[trial % len(row)] = np.nan  # a broken model's row: both draw the same
        probs = (row / row.sum()).astype(np.float32)[None]
        alone(probs, one)
        batch(np.repeat(probs, 3, axis=0), three)
        assert (three == one[0]).all(), (trial, settings)


def test_stop_strings(gen) -> None:
    text = gen.generate(PROMPT, 200, GenerationOptions(stop=("training",)))
    assert text == "This is Zindua School a software training"
    both = gen.generate(PROMPT, 200, GenerationOptions(stop=("School", "training")))
    assert both.endswith("School")
    # The prompt itself ending with a stop string does not stop anything.
    assert len(gen.generate("training", 5, GenerationOptions(stop=("training",)))) == 13
    batch = gen.generate_batch([PROMPT, "software"], 200, GenerationOptions(stop=("institute",)))
    assert all(t.endswith("institute") for t in batch)
    assert batch[1].startswith("software")


def test_threads_share_one_generator(gen) -> None:
    jobs = [
        (p, GenerationOptions(temperature=0.9, seed=s) if s % 2 else None)
        for s, p in enumerate(["This is Z", "software", "a school", "training"] * 4)
    ]
    expected = [gen.generate(p, 120, o) for p, o in jobs]
    results: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, len(jobs), 8):
            results[i] = gen.generate(jobs[i][0], 120, jobs[i][1])
            results[i + 1000] = gen.generate_batch([jobs[i][0]] * 3, 120, jobs[i][1])[0]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(jobs))] == expected
    assert [results[i + 1000] for i in range(len(jobs))] == expected


# --- CLI ----------------------------------------------------------------------------------


def test_cli_sampling_flags_and_json(gen) -> None:
    result = CliRunner().invoke(
        main,
        [
            "generate",
            PROMPT,
            "--temperature",
            "0.9",
            "--top-k",
            "5",
            "--top-p",
            "0.9",
            "--seed",
            "4",
            "-n",
            "30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    options = GenerationOptions(temperature=0.9, top_k=5, top_p=0.9, seed=4)
    assert doc["output"] == gen.generate(PROMPT, 30, options)
    assert doc["prompt"] == PROMPT and doc["output"] == PROMPT + doc["text"]
    assert doc["settings"]["decoding"] == "sample" and doc["settings"]["seed"] == 4
    assert doc["model"]["sha256"] == gen.spec.model_sha256 and doc["stopped"] == "length"
    assert doc["timing"]["characters"] == 30 and doc["timing"]["seconds"] > 0


def test_cli_stop_and_json_lines(tmp_path) -> None:
    result = CliRunner().invoke(main, ["generate", PROMPT, "--stop", "training", "--json"])
    doc = json.loads(result.output)
    assert doc["stopped"] == "stop" and doc["output"].endswith("training")
    f = tmp_path / "p.txt"
    f.write_text("This is Z\nsoftware\n")
    result = CliRunner().invoke(main, ["generate", "--prompts-file", str(f), "--json", "-n", "9"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["prompt"] for r in rows] == ["This is Z", "software"]


def test_cli_prompt_from_stdin(gen) -> None:
    result = CliRunner().invoke(main, ["generate", "-", "-n", "12"], input="This is Z\n")
    assert result.exit_code == 0 and result.output == gen.generate(PROMPT, 12) + "\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--temperature", "0"],
        ["--temperature", "-2"],
        ["--top-k", "0"],
        ["--top-p", "0"],
        ["--top-p", "1.01"],
        ["--seed", "-1"],
        ["--stop", ""],
    ],
)
def test_cli_bad_settings_are_one_line(args) -> None:
    result = CliRunner().invoke(main, ["generate", PROMPT, *args])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("Error")]) == 1


def test_ctrl_c_ends_cleanly_with_what_was_produced() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "generate",
            PROMPT,
            "-n",
            "100000",
            "--temperature",
            "1.0",
            "--seed",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip() == "interrupted" and "Traceback" not in err
    assert out.startswith(PROMPT) and out.endswith("\n")


# --- examples -----------------------------------------------------------------------------


def test_embedding_example_runs() -> None:
    assert len((REPO / "examples" / "embed.py").read_text().splitlines()) <= 30
    proc = subprocess.run(
        [sys.executable, "examples/embed.py"], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "greedy:  " + Generator.load().generate(PROMPT, 40)
    assert lines[1].startswith("sampled: This is Z") and lines[2].startswith("refused:")


def test_filter_example_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "examples/filter.py", "--length", "15"],
        cwd=REPO,
        input="This is Z\nsoftware\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines() == Generator.load().generate_batch(
        ["This is Z", "software"], 15
    )
    bad = subprocess.run(
        [sys.executable, "examples/filter.py"],
        cwd=REPO,
        input="x!\n",
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("filter: ")
