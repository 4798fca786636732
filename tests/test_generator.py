"""The runtime's Generator: notebook loop semantics, and refusal of bad prompts and models."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import edit_vocab, reseal

from runtime import (
    MAX_LENGTH,
    ArtifactError,
    GenerationSettingsError,
    Generator,
    ModelNotFoundError,
    PromptError,
    UnsupportedVersionError,
)
from runtime.artifact import MODEL_FILE, VOCAB_FILE


@pytest.fixture(scope="module")
def gen() -> Generator:
    return Generator.load()


def notebook_loop(gen: Generator, prompt: str, length: int) -> str:
    """The seed notebook's loop, written out step by step against the same session."""
    text = prompt
    index = {c: i for i, c in enumerate(gen.spec.chars)}
    for _ in range(length):
        x = np.array([[index[c] for c in text[-gen.spec.seq_length :]]], dtype=np.int32)
        prediction = gen.session.run(None, {gen.spec.input.name: x})[0]
        text += gen.spec.chars[int(np.argmax(prediction))]
    return text


@pytest.mark.parametrize("prompt", ["This is Z", "Thi", "software ", "ZZZZZZ", "a school"])
def test_generate_matches_the_notebook_loop(gen: Generator, prompt: str) -> None:
    assert gen.generate(prompt, 60) == notebook_loop(gen, prompt, 60)


def test_stream_yields_the_same_characters_one_at_a_time(gen: Generator) -> None:
    pieces = list(gen.stream("This is Z", 30))
    assert all(len(p) == 1 for p in pieces)
    assert "This is Z" + "".join(pieces) == gen.generate("This is Z", 30)


def test_generate_returns_prompt_plus_length_characters(gen: Generator) -> None:
    out = gen.generate("This is Z", 17)
    assert out.startswith("This is Z") and len(out) == len("This is Z") + 17


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "empty"),
        ("Th", "2 characters but the model reads windows of 3"),
        ("This is Q!", r"'!', 'Q'"),
        ("héllo wörld", r"'é', 'ö'"),
    ],
)
def test_bad_prompts_are_refused(gen: Generator, prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        gen.generate(prompt, 5)


def test_stream_checks_the_prompt_before_the_first_character(gen: Generator) -> None:
    with pytest.raises(PromptError):
        gen.stream("!!!", 5)  # no next() needed: the error comes at the call


@pytest.mark.parametrize("length", [0, -1, MAX_LENGTH + 1, 2.5, True, "10"])
def test_bad_lengths_are_refused(gen: Generator, length) -> None:
    with pytest.raises(GenerationSettingsError, match="length must be"):
        gen.generate("This is Z", length)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        Generator.load(tmp_path / "nope")


@pytest.mark.parametrize("name", [MODEL_FILE, VOCAB_FILE])
def test_missing_file(model_copy, name: str) -> None:
    (model_copy / name).unlink()
    with pytest.raises(ModelNotFoundError, match=name):
        Generator.load(model_copy)


def test_truncated_model_fails_the_sha256_check(model_copy) -> None:
    data = (model_copy / MODEL_FILE).read_bytes()
    (model_copy / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Generator.load(model_copy)


def test_corrupt_model_with_matching_sha256_is_refused_by_onnxruntime(model_copy) -> None:
    (model_copy / MODEL_FILE).write_bytes(b"this is not a protobuf" * 50)
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        Generator.load(model_copy)


def test_malformed_vocab(model_copy) -> None:
    (model_copy / VOCAB_FILE).write_text('{"format": "rnn-textgen-vocab", "vers')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Generator.load(model_copy)


def test_unknown_version(model_copy) -> None:
    edit_vocab(model_copy, lambda d: d.__setitem__("version", 99))
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        Generator.load(model_copy)


def test_vocabulary_size_mismatch(model_copy) -> None:
    edit_vocab(model_copy, lambda d: d["chars"].append("!"))
    with pytest.raises(ArtifactError, match="vocab.json has 21 characters"):
        Generator.load(model_copy)


def test_seq_length_mismatch(model_copy) -> None:
    edit_vocab(model_copy, lambda d: d.__setitem__("seq_length", 4))
    with pytest.raises(ArtifactError, match="seq_length 4"):
        Generator.load(model_copy)


def test_input_name_mismatch(model_copy) -> None:
    edit_vocab(model_copy, lambda d: d["graph"]["input"].__setitem__("name", "ids"))
    with pytest.raises(ArtifactError, match="graph inputs are"):
        Generator.load(model_copy)


def test_model_from_another_export(model_copy, tiny_model) -> None:
    (model_copy / MODEL_FILE).write_bytes((tiny_model / MODEL_FILE).read_bytes())
    with pytest.raises(ArtifactError, match="sha256"):
        Generator.load(model_copy)
