"""The app API: contexts, next-character suggestions, scoring, word completion, and the
interactive example driven through a pseudo-terminal."""

from __future__ import annotations

import math
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from runtime import GenerationOptions, Generator
from runtime.errors import ContextError, GenerationSettingsError, PromptError

PROMPT = "the quick brown fox "


@pytest.fixture(scope="module")
def models(tiny_model: Path, stateful_lstm: Path) -> dict[str, Generator]:
    return {
        "window": Generator.load(tiny_model),
        "stateful": Generator.load(stateful_lstm),
        "stateful-int8": Generator.load(stateful_lstm, precision="int8"),
    }


@pytest.fixture(scope="module")
def stateful_lstm(stateful_models: dict) -> Path:
    """The session's shared stateful LSTM (with its int8 variant)."""
    return stateful_models["lstm"]


@pytest.mark.parametrize("kind", ["window", "stateful", "stateful-int8"])
def test_context_generate_is_generate(models, kind: str) -> None:
    gen = models[kind]
    for options in (None, GenerationOptions(temperature=0.8, seed=4, stop=("o",))):
        expected = gen.generate(PROMPT, 40, options)[len(PROMPT) :]
        ctx = gen.context(PROMPT)
        assert ctx.generate(40, options) == expected
        assert ctx.text == PROMPT + expected


@pytest.mark.parametrize("kind", ["window", "stateful"])
def test_top_one_is_the_greedy_choice_and_all_sum_to_one(models, kind: str) -> None:
    gen = models[kind]
    ctx = gen.context(PROMPT)
    for _ in range(30):
        (best, _), *_ = ctx.top(1)
        assert best == gen.generate(ctx.text, 1)[-1]
        assert math.isclose(sum(p for _, p in ctx.top(gen.spec.vocab_size)), 1.0, abs_tol=1e-4)
        ctx.append(best)


@pytest.mark.parametrize("kind", ["window", "stateful"])
def test_appending_piecewise_equals_appending_at_once(models, kind: str) -> None:
    gen = models[kind]
    whole = gen.context(PROMPT)
    pieces = gen.context()
    for ch in PROMPT:
        pieces.append(ch)
        if len(pieces) >= gen.spec.min_prompt:
            pieces.top(1)  # reading suggestions between keystrokes changes nothing
    assert np.allclose([p for _, p in whole.top(5)], [p for _, p in pieces.top(5)], atol=1e-5)
    assert whole.generate(20) == pieces.generate(20)


@pytest.mark.parametrize("kind", ["window", "stateful"])
def test_fork_and_save_restore(models, kind: str) -> None:
    gen = models[kind]
    ctx = gen.context(PROMPT)
    before = ctx.top(3)
    twin = ctx.fork()
    twin.append("zzz lazy")
    assert ctx.top(3) == before and ctx.text == PROMPT  # the parent is untouched
    restored = gen.restore(ctx.save())
    assert restored.text == ctx.text and len(restored) == len(ctx)
    assert restored.generate(30) == ctx.fork().generate(30)


def test_restore_refuses_other_models_and_garbage(models) -> None:
    saved = models["window"].context(PROMPT).save()
    with pytest.raises(ContextError, match="another model"):
        models["stateful"].restore(saved)
    for junk in (b"", b"nonsense", saved[:25], saved[:-1] + b"x" * 3):
        with pytest.raises(ContextError):
            models["window"].restore(junk)


def test_bad_inputs_are_one_line_errors(models) -> None:
    gen = models["window"]
    with pytest.raises(PromptError, match="outside the model's vocabulary: '#'"):
        gen.context("#")
    with pytest.raises(PromptError, match="windows of 5 characters and the context has only 3"):
        gen.context("the").top(1)
    with pytest.raises(PromptError, match="context is empty"):
        models["stateful"].context().top(1)
    for k in (0, gen.spec.vocab_size + 1, True, 2.0):
        with pytest.raises(GenerationSettingsError, match="k must be"):
            gen.context(PROMPT).top(k)
    with pytest.raises(GenerationSettingsError, match="k must be"):
        gen.complete(PROMPT, k=0)
    with pytest.raises(PromptError, match="too short to score"):
        gen.score("the")
    with pytest.raises(PromptError, match="must be a string"):
        gen.score([1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize("kind", ["window", "stateful"])
def test_score_is_the_cross_entropy_of_each_character(models, kind: str) -> None:
    gen = models[kind]
    text = "the lazy dog sleeps while the quick fox runs."
    result = gen.score(text, per_char=True)
    assert result.chars == len(result.log_probs)
    assert math.isclose(
        result.bits_per_char, -np.mean(result.log_probs) / math.log(2), rel_tol=1e-9
    )
    # The same probabilities a context gives, character by character.
    ctx = gen.context(text[: gen.spec.min_prompt])
    for ch, lp in zip(text[gen.spec.min_prompt :], result.log_probs, strict=False):
        probs = dict(ctx.top(gen.spec.vocab_size))
        assert math.isclose(math.log(probs[ch]), lp, rel_tol=1e-4, abs_tol=1e-5)
        ctx.append(ch)
    # Pieces (a long text read in bounded memory) score as the whole.
    pieces = gen.score([text[:7], text[7:30], text[30:]])
    assert math.isclose(pieces.bits_per_char, result.bits_per_char, rel_tol=1e-6)


def test_int8_scores_within_a_twentieth_of_a_bit(models) -> None:
    text = ("The quick brown fox jumps over the lazy dog. " * 4).strip()
    fp32 = models["stateful"].score(text).bits_per_char
    int8 = models["stateful-int8"].score(text).bits_per_char
    assert abs(fp32 - int8) <= 0.05


def test_stateful_score_agrees_with_the_trainers_validation(
    stateful_lstm: Path, corpus_file: Path
) -> None:
    """The trainer scores held-out chunks of seq_length from zero state; scoring the same
    chunks one by one gives its figure (whole-text scoring instead carries the state across
    chunk boundaries, which the README quantifies)."""
    from runtime.artifact import ModelSpec
    from trainer.corpus import Corpus
    from trainer.train import split_corpus

    spec = ModelSpec.read(stateful_lstm)
    gen = Generator.load(stateful_lstm)
    length = spec.seq_length
    _, val_ids = split_corpus(Corpus.read(corpus_file), spec.training["val_fraction"], length)
    text = "".join(spec.chars[i] for i in val_ids)
    chunks = [text[s : s + length + 1] for s in range(0, len(text) - length, length)]
    mean = np.mean([gen.score(c).bits_per_char for c in chunks])
    assert abs(mean - spec.training["val_bits_per_char"]) < 1e-3


def test_complete_returns_words_up_to_a_boundary(models) -> None:
    gen = models["window"]
    results = gen.complete("the quick br", k=3)
    assert 1 <= len(results) <= 3
    probs = [p for _, p in results]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    for word, _ in results:
        assert all(c.isalnum() for c in word)
    # Each probability is the word's characters' and then its boundary's (or, cut at the
    # length limit, the characters' alone), as contexts give them.
    for word, p in results:
        ctx = gen.context("the quick br")
        chars_p = 1.0
        for ch in word:
            chars_p *= dict(ctx.top(gen.spec.vocab_size))[ch]
            ctx.append(ch)
        boundaries = [q for c, q in ctx.top(gen.spec.vocab_size) if not c.isalnum()]
        assert any(math.isclose(p, chars_p * q, rel_tol=1e-4) for q in boundaries) or (
            len(word) == 24 and math.isclose(p, chars_p, rel_tol=1e-4)
        )


def test_score_and_complete_commands(tiny_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from runtime.cli import main

    text = tmp_path / "t.txt"
    text.write_text("the lazy dog sleeps while the quick fox runs.\n")
    result = CliRunner().invoke(main, ["score", str(text), "--model", str(tiny_model), "--json"])
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads(result.output)
    expected = Generator.load(tiny_model).score(text.read_text())  # "\n" is in its vocabulary
    assert math.isclose(doc["bits_per_char"], expected.bits_per_char, rel_tol=1e-5)
    result = CliRunner().invoke(main, ["complete", "the quick br", "--model", str(tiny_model)])
    assert result.exit_code == 0 and 1 <= len(result.output.splitlines()) <= 3
    result = CliRunner().invoke(main, ["complete", "#", "--model", str(tiny_model)])
    assert result.exit_code == 1 and result.output.startswith("Error: ")


@pytest.mark.parametrize("piece", [1, 3, 7, 1 << 20])
def test_score_command_reads_its_text_in_pieces(
    tiny_model: Path, tmp_path: Path, monkeypatch, piece: int
) -> None:
    # Read, decoded and scored SCORE_PIECE bytes at a time (a 20 MB text peaked at 600 MB
    # when read whole): the same characters, the same score, at any piece size.
    import json

    from click.testing import CliRunner

    import runtime.cli as cli

    monkeypatch.setattr(cli, "SCORE_PIECE", piece)
    text = tmp_path / "t.txt"
    text.write_text("the lazy dog sleeps while the quick fox runs.\n" * 5)
    args = ["score", str(text), "--model", str(tiny_model), "--json"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    expected = Generator.load(tiny_model).score(text.read_text())  # "\n" is in its vocabulary
    assert doc["chars"] == expected.chars
    assert math.isclose(doc["bits_per_char"], expected.bits_per_char, abs_tol=1e-6)  # rounded


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 64])
def test_score_pieces_decode_utf8_across_their_edges(monkeypatch, piece: int) -> None:
    import io

    import click

    import runtime.cli as cli

    monkeypatch.setattr(cli, "SCORE_PIECE", piece)
    data = "\ufeffhéllo wörld 🙂 ok\r\n".encode()  # a byte-order mark, 2- and 4-byte characters

    def read(raw: bytes, keep_end: bool) -> str:
        return "".join(cli._pieces(io.BytesIO(raw), "t.txt", keep_end=keep_end))

    assert read(data, keep_end=False) == "héllo wörld 🙂 ok"
    assert read(data, keep_end=True) == "héllo wörld 🙂 ok\r\n"
    assert read(b"a\n\nb\r", keep_end=False) == "a\n\nb"  # only the last ending goes
    with pytest.raises(click.ClickException, match=r"bad byte at offset 6\)"):
        read("héllo".encode() + b"\xff!", keep_end=False)


def test_autocomplete_example_through_a_pseudo_terminal(tiny_model: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the example app on the pseudo-terminal
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(
            sys.executable,
            [sys.executable, str(REPO / "examples" / "autocomplete.py"), str(tiny_model)],
        )
    output = b""
    try:
        time.sleep(0.5)
        for ch in "the quick":
            os.write(fd, ch.encode())
            time.sleep(0.05)
        deadline = time.time() + 30
        while b"quick  [next:" not in output and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                output += os.read(fd, 4096)
        os.write(fd, b"\r")
        time.sleep(0.3)
    finally:
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "quick  [next:" in text, text
    gen = Generator.load(tiny_model)
    best, _ = gen.context("the quick").top(1)[0]
    last = [line for line in text.splitlines() if "quick  [next:" in line][-1]
    assert f"next: {best!r}" in last
    assert os.waitstatus_to_exitcode(status) == 0
    assert subprocess.run(["true"]).returncode == 0
