"""vocab.json: round trip and refusal of every malformed field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.artifact import FORMAT_NAME, NEWEST_VERSION, ModelSpec, TensorSpec, default_model_dir
from runtime.errors import ArtifactError, ModelNotFoundError, UnsupportedVersionError


def good() -> dict[str, Any]:
    return ModelSpec(
        chars=("a", "b", "c"),
        seq_length=2,
        input=TensorSpec("char_ids", "int32", (None, 2)),
        output=TensorSpec("probs", "float32", (None, 3)),
        next=TensorSpec("next", "int64", (None,)),
        model_sha256="0" * 64,
        architecture={"cell": "simple"},
        training={"seed": 1},
    ).to_dict()


def test_round_trip_keeps_every_field() -> None:
    spec = ModelSpec.from_dict(good())
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert spec.char_to_index == {"a": 0, "b": 1, "c": 2}


def test_format_and_version_come_first() -> None:
    doc = json.loads(ModelSpec.from_dict(good()).to_json())
    assert list(doc)[:2] == ["format", "version"]
    # A window model is written as version 1: the lowest version that can describe it.
    assert (doc["format"], doc["version"]) == (FORMAT_NAME, 1) and NEWEST_VERSION == 3


def test_shipped_default_model_validates() -> None:
    spec = ModelSpec.read(default_model_dir())
    assert spec.seq_length == 3 and spec.vocab_size == 20
    assert spec.architecture["cell"] == "simple" and spec.architecture["units"] == 50


def test_unknown_version_is_named() -> None:
    doc = good() | {"version": NEWEST_VERSION + 1}
    with pytest.raises(UnsupportedVersionError, match="version 4.*upgrade rnn-textgen"):
        ModelSpec.from_dict(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "format"),
        ({"version": "1"}, "version"),
        ({"version": True}, "version"),
        ({"mode": "teleport"}, "mode"),
        ({"chars": []}, "chars"),
        ({"chars": ["a", "a", "b"]}, "same character twice"),
        ({"chars": ["ab", "c", "d"]}, "single Unicode character"),
        ({"chars": "abc"}, "chars"),
        ({"seq_length": 0}, "seq_length"),
        ({"seq_length": 2.0}, "seq_length"),
        ({"seq_length": None}, "seq_length"),
        ({"graph": []}, "graph"),
        ({"model_sha256": "xyz"}, "model_sha256"),
        ({"model_sha256": "A" * 64}, "model_sha256"),
        ({"architecture": [1]}, "architecture"),
        ({"training": "yes"}, "training"),
        ({"mode": "stateful"}, "needs format version 2"),
        ({"mode": "stateful", "version": 2}, "graph.states must list"),
    ],
)
def test_malformed_field_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        ModelSpec.from_dict(good() | change)


@pytest.mark.parametrize(
    ("where", "change", "message"),
    [
        ("input", {"dtype": "float64"}, "graph.input.dtype"),
        ("output", {"dtype": "int32"}, "graph.output.dtype"),
        ("input", {"name": ""}, "graph.input.name"),
        ("input", {"shape": [None, -1]}, "graph.input.shape"),
        ("output", {"name": "char_ids"}, "same name"),
        ("next", {"name": "probs"}, "same name"),
        ("next", {"dtype": "float32"}, "graph.next.dtype"),
    ],
)
def test_malformed_tensor_is_refused(where: str, change: dict[str, Any], message: str) -> None:
    doc = good()
    doc["graph"][where].update(change)
    with pytest.raises(ArtifactError, match=message):
        ModelSpec.from_dict(doc)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", b"\xff\xfe"])
def test_not_a_vocab_document(text: str | bytes) -> None:
    with pytest.raises(ArtifactError):
        ModelSpec.from_json(text)


@pytest.mark.parametrize("where", ["top", "graph", "training"])
def test_a_key_given_twice_is_refused(where: str) -> None:
    # Readers disagree on which value a repeated key means (Python and JavaScript take the
    # last, others the first): a file that shows them different vocabularies is refused.
    good_json = json.dumps(good())
    text = good_json
    if where == "top":
        text = good_json[:-1] + ', "chars": ["x", "y"]}'
    elif where == "graph":
        text = good_json.replace('"graph": {', '"graph": {"next": {"name": "x"}, ', 1)
    else:
        text = good_json.replace('"training": {', '"training": {"a": 1, "a": 2, ', 1)
    assert text != good_json
    with pytest.raises(ArtifactError, match="malformed: key '.*' appears twice in one object"):
        ModelSpec.from_json(text)
    ModelSpec.from_json(good_json)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_vocab_json_is_utf8_as_written(encoding: str) -> None:
    # json.loads(bytes) would guess UTF-16 and UTF-32; a browser's response.json() would not.
    with pytest.raises(ArtifactError, match="not UTF-8|not valid JSON"):
        ModelSpec.from_json(json.dumps(good()).encode(encoding))


@pytest.mark.parametrize("prompt", ["a", "abz", ""])
def test_a_sample_prompt_the_model_cannot_read_is_refused(prompt: str) -> None:
    # The trainer records the start of the training text: a window or more of the model's
    # own characters (commands given no prompt use it; a crafted one made `textgen generate`
    # blame a prompt the user never gave).
    doc = good()
    doc["training"]["sample_prompt"] = prompt
    with pytest.raises(ArtifactError, match="sample_prompt must be at least a window"):
        ModelSpec.from_dict(doc)
    doc["training"]["sample_prompt"] = "abcab"
    assert ModelSpec.from_dict(doc).sample_prompt == "abcab"


def test_missing_and_oversized_files(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="vocab.json not found"):
        ModelSpec.read(tmp_path)
    (tmp_path / "vocab.json").write_bytes(b" " * (5 * 1024 * 1024))
    with pytest.raises(ArtifactError, match="larger than"):
        ModelSpec.read(tmp_path)
