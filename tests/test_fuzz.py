"""Fuzzing (hypothesis, bounded): vocab.json documents, prompts, model files, load refusals.

Every case either works or raises the runtime's documented error (ArtifactError for
artifacts, PromptError / GenerationSettingsError for inputs): never another exception,
never a dead process. benchmarks/fuzz_models.py runs the model-file cases by the thousand.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from helpers import edit_vocab, reseal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import Generator, PromptError
from runtime.artifact import MODEL_FILE, VOCAB_FILE, ModelSpec, default_model_dir
from runtime.errors import ArtifactError, TextgenError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fuzz_models import fuzz  # noqa: E402

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GOOD = json.loads((default_model_dir() / VOCAB_FILE).read_text())
GEN = Generator.load()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_as_vocab(data: bytes) -> None:
    with contextlib.suppress(ArtifactError):
        ModelSpec.from_json(data)


@FAST
@given(json_values)
def test_random_json_as_vocab(doc) -> None:
    with contextlib.suppress(ArtifactError):
        spec = ModelSpec.from_dict(doc)
        assert ModelSpec.from_json(spec.to_json()) == spec  # what validates, round-trips


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(GOOD))


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(PATHS), json_values, st.booleans()), min_size=1, max_size=4)
)
def test_mutated_vocab_documents(mutations) -> None:
    doc = json.loads(json.dumps(GOOD))
    for path, value, delete in mutations:
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if delete and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    with contextlib.suppress(ArtifactError):
        spec = ModelSpec.from_dict(doc)
        assert ModelSpec.from_json(spec.to_json()) == spec


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3))
def test_mutated_vocab_beside_a_real_model(tmp_path_factory, mutations) -> None:
    d = tmp_path_factory.mktemp("m")
    import shutil

    shutil.copytree(default_model_dir(), d, dirs_exist_ok=True)

    def mutate(doc):
        for path, value in mutations:
            parent = doc
            try:
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue

    edit_vocab(d, mutate)
    with contextlib.suppress(TextgenError):
        Generator.load(d).generate("This is Z", 3)


any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)


@FAST
@given(any_text)
def test_any_unicode_prompt(prompt: str) -> None:
    try:
        out = GEN.generate(prompt, 5)
    except PromptError:
        return
    assert out.startswith(prompt) and len(out) == len(prompt) + 5


@pytest.mark.parametrize(
    "prompt",
    [
        "This is Z" * 20_000,  # very long, all known
        "e\u0301\u0301\u0301",  # combining marks
        "\ud800abc",  # a lone surrogate
        "\x00\x07\x1b[31mThis",  # control characters
        "\u202eThis is Z",  # bidi override
    ],
)
def test_awkward_prompts(prompt: str) -> None:
    try:
        assert GEN.generate(prompt, 5).startswith(prompt)
    except PromptError as exc:
        assert "\n" not in str(exc)


# --- model files --------------------------------------------------------------------------


def test_fuzzed_model_files_never_crash() -> None:
    result = fuzz(default_model_dir(), cases=400, seed=1, chunk=200)
    assert result["failures"] == [], result["failures"][:3]
    assert result["cases"] == 400 and result["ArtifactError"] > 100


def test_fuzzed_int8_and_stateful_model_files_never_crash(tmp_path, corpus_file) -> None:
    from trainer.train import TrainConfig, train

    train(
        TrainConfig(
            out_dir=tmp_path / "m",
            corpus=corpus_file,
            mode="stateful",
            cell="lstm",
            units=8,
            seq_length=6,
            epochs=1,
            seed=1,
            quantize="int8",
        )
    )
    for precision in ("fp32", "int8"):  # model.int8.onnx: DynamicQuantizeLSTM, MatMulInteger
        result = fuzz(tmp_path / "m", cases=200, seed=2, chunk=200, precision=precision)
        assert result["failures"] == [], (precision, result["failures"][:3])


def test_fuzzed_wide_vocabulary_model_files_never_crash(wide_models) -> None:
    # An OneHot front (format version 3) is graph surface the default model lacks.
    result = fuzz(wide_models["stateful"], cases=200, seed=3, chunk=200)
    assert result["failures"] == [], result["failures"][:3]
    assert result["ArtifactError"] > 50


def test_model_with_external_data_is_refused(model_copy) -> None:
    import onnx

    proto = onnx.load(model_copy / MODEL_FILE)
    onnx.save(
        proto,
        model_copy / MODEL_FILE,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="external data"):
        Generator.load(model_copy)


def test_model_with_a_custom_domain_is_refused(model_copy) -> None:
    import onnx
    from onnx import helper

    proto = onnx.load(model_copy / MODEL_FILE)
    proto.opset_import.append(helper.make_opsetid("evil.custom", 1))
    proto.graph.node.append(
        helper.make_node("Backdoor", ["probs"], ["unused"], domain="evil.custom")
    )
    onnx.save(proto, model_copy / MODEL_FILE)
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="evil.custom"):
        Generator.load(model_copy)


def test_oversized_model_is_refused_before_reading(model_copy) -> None:
    with pytest.raises(ArtifactError, match="larger than 1,000 bytes"):
        Generator.load(model_copy, max_model_bytes=1000)


def test_not_protobuf_is_refused_by_the_scanner(model_copy) -> None:
    (model_copy / MODEL_FILE).write_bytes(b"\xff" * 64)
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="not a graph textgen-train writes"):
        Generator.load(model_copy)
