"""`textgen` through click's CliRunner: output, streaming, and one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import edit_vocab, reseal

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE
from runtime.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if ln.startswith("Error")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output


def test_generate_prints_prompt_and_continuation() -> None:
    result = run("generate", "This is Z", "--length", "40")
    assert result.exit_code == 0, result.output
    assert result.output == Generator.load().generate("This is Z", 40) + "\n"


def test_generate_without_prompt_uses_the_models_sample_prompt() -> None:
    result = run("generate", "-n", "10")
    assert result.exit_code == 0
    assert result.output == Generator.load().generate("This is Z", 10) + "\n"


def test_generate_with_model_option(tiny_model) -> None:
    result = run("generate", "The quick", "--model", str(tiny_model), "-n", "25")
    assert result.exit_code == 0, result.output
    assert result.output == Generator.load(tiny_model).generate("The quick", 25) + "\n"


def test_info_prints_the_model_card() -> None:
    result = run("info")
    assert result.exit_code == 0
    spec = Generator.load().spec
    for expected in (
        "simple",
        "50 units",
        "relu",
        "reads the last 3",
        "20 characters",
        "model.onnx:",
        "vocab.json:",
        spec.model_sha256,
        "seed",
        "loss",
        "textgen-train train --seed 0",
    ):
        assert expected in result.output, expected


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["generate", "This is Q!"], ["outside the model's vocabulary", "'!'", "'Q'"]),
        (["generate", "Th"], ["windows of 3"]),
        (["generate", ""], ["empty"]),
        (["generate", "This is Z", "--length", "0"], ["--length"]),
        (["generate", "This is Z", "--length", "-5"], ["--length"]),
        (["generate", "This is Z", "--length", "100001"], ["--length"]),
        (["generate", "This is Z", "--length", "many"], ["--length"]),
        (["generate", "--model", "/nonexistent/model"], ["not found"]),
        (["info", "--model", "/nonexistent/model"], ["not found"]),
    ],
)
def test_bad_input_is_one_line(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run(*args), *fragments)


def _truncate(d):
    data = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(data[:100])


def _garbage_resealed(d):
    (d / MODEL_FILE).write_bytes(b"\x08\x01garbage" * 64)
    reseal(d)


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda d: (d / MODEL_FILE).unlink(), ["model.onnx not found"]),
        (lambda d: (d / VOCAB_FILE).unlink(), ["vocab.json not found"]),
        (_truncate, ["sha256"]),
        (_garbage_resealed, ["not a graph textgen-train writes"]),
        (lambda d: (d / VOCAB_FILE).write_text("{oops"), ["not valid JSON"]),
        (lambda d: edit_vocab(d, lambda v: v.__setitem__("version", 7)), ["version 7"]),
        (lambda d: edit_vocab(d, lambda v: v["chars"].pop()), ["19 characters"]),
        (lambda d: edit_vocab(d, lambda v: v.__setitem__("seq_length", 5)), ["seq_length 5"]),
    ],
)
def test_damaged_model_is_one_line(model_copy, damage, fragments: list[str]) -> None:
    damage(model_copy)
    for command in ("generate", "info"):
        assert_one_line_error(run(command, "--model", str(model_copy)), *fragments)


def test_prompts_file_runs_a_batch(tmp_path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("This is Z\nsoftware\nThe a\n", encoding="utf-8")
    result = run("generate", "--prompts-file", str(f), "-n", "20")
    assert result.exit_code == 0, result.output
    expected = Generator.load().generate_batch(["This is Z", "software", "The a"], 20)
    assert result.output.splitlines() == expected


def test_prompts_from_stdin() -> None:
    result = CliRunner().invoke(
        main, ["generate", "--prompts-file", "-", "-n", "5"], input="This is Z\n"
    )
    assert (
        result.exit_code == 0 and result.output == Generator.load().generate("This is Z", 5) + "\n"
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "no prompts"),
        (b"This is Z\n\xff\n", "not UTF-8"),
        (b"This is Z\nok!\n", "prompt 2 of 2"),
        (b"This is Z\n" * 70_000, "holds 70,000 prompts, over the 65,536 one batch takes"),
    ],
)
def test_bad_prompts_file(tmp_path, content: bytes, fragment: str) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(content)
    assert_one_line_error(run("generate", "--prompts-file", str(f)), fragment)


def test_prompt_and_prompts_file_together(tmp_path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("This is Z\n")
    result = run("generate", "This is Z", "--prompts-file", str(f))
    assert result.exit_code == 2 and "not both" in result.output


def test_missing_prompts_file() -> None:
    assert_one_line_error(run("generate", "--prompts-file", "/no/such/file"), "/no/such/file")


def test_threads_option() -> None:
    result = run("generate", "This is Z", "-n", "30", "--threads", "2")
    assert (
        result.exit_code == 0 and result.output == Generator.load().generate("This is Z", 30) + "\n"
    )
    assert_one_line_error(run("generate", "This is Z", "--threads", "0"), "--threads")


def test_bench_prints_every_figure() -> None:
    result = run("bench", "--batch", "8")
    assert result.exit_code == 0, result.output
    for label in ("p50", "p99", "characters/s", "batch of 8", "cold start", "peak RSS"):
        assert label in result.output
    # The default model's long greedy texts run on the window graph: 8 characters a Run,
    # which is why most gaps between characters are near zero.
    assert "(characters come 8 per Run)" in result.output
    rss = float(result.output.split("peak RSS:")[1].split("MB")[0])
    assert 10 < rss < 2000  # a real measurement of a real process, in MB


def test_precision_without_variant_is_one_line() -> None:
    assert_one_line_error(run("generate", "This is Z", "--precision", "int8"), "no int8 variant")
    assert_one_line_error(run("generate", "This is Z", "--precision", "int4"), "--precision")
