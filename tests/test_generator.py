"""The runtime's Generator: notebook loop semantics, and refusal of bad prompts and models."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from helpers import edit_vocab, reseal

from runtime import (
    MAX_LENGTH,
    ArtifactError,
    GenerationOptions,
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
        ("T", "windows of 3 characters and the prompt has only 1"),
        ("Th", "windows of 3 characters and the prompt has only 2"),
        ("This is Q!", r"'!', 'Q'"),
        ("héllo wörld", r"'é', 'ö'"),
    ],
)
def test_bad_prompts_are_refused(gen: Generator, prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        gen.generate(prompt, 5)


@pytest.mark.parametrize(
    ("vocab_char", "prompt", "form"),
    [("é", "The\u0301 ", "NFC"), ("\u0301", "Thé ", "NFD")],
)
def test_a_prompt_in_the_other_unicode_form_is_named(
    model_copy, vocab_char: str, prompt: str, form: str
) -> None:
    # Pasted text and macOS file names often decompose accents the corpus had composed (or
    # the reverse): the error names the mark by code point and says which form would read.
    def z_becomes(doc: dict) -> None:  # the model's 'Z' (and its sample prompt's) become it
        doc["chars"][3] = vocab_char
        doc["training"]["sample_prompt"] = doc["training"]["sample_prompt"].replace("Z", vocab_char)

    edit_vocab(model_copy, z_becomes)
    gen = Generator.load(model_copy)
    with pytest.raises(PromptError) as caught:
        gen.generate(prompt, 5)
    message = str(caught.value)
    assert f"its Unicode {form} form" in message and f"normalize it to {form}" in message
    if form == "NFC":
        assert "U+0301 (COMBINING ACUTE ACCENT)" in message
    assert gen.generate(unicodedata.normalize(form, prompt), 5).startswith(
        unicodedata.normalize(form, prompt)
    )
    with pytest.raises(PromptError) as caught:
        gen.generate("Q" + prompt, 5)  # Q reads in neither form: no hint
    assert "form" not in str(caught.value)


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


def test_corrupt_model_with_matching_sha256_is_refused(model_copy) -> None:
    (model_copy / MODEL_FILE).write_bytes(b"this is not a protobuf" * 50)
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="not a graph textgen-train writes"):
        Generator.load(model_copy)


def test_operator_we_never_write_is_refused_before_onnxruntime(model_copy) -> None:
    import onnx
    from onnx import helper

    proto = onnx.load(model_copy / MODEL_FILE)
    proto.graph.node.append(helper.make_node("NoSuchOperator", ["probs"], ["nothing"]))
    (model_copy / MODEL_FILE).write_bytes(proto.SerializeToString())
    reseal(model_copy)
    with pytest.raises(ArtifactError, match="'NoSuchOperator' is not one rnn-textgen writes"):
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


# --- batches, threads, settings -----------------------------------------------------------


def test_batch_matches_one_by_one(gen: Generator) -> None:
    prompts = ["This is Z", "Thi", "software ", "ZZZZZZ", "a school", "This is Z"]
    assert gen.generate_batch(prompts, 40) == [gen.generate(p, 40) for p in prompts]


def test_batch_of_one_and_long_batches(gen: Generator) -> None:
    assert gen.generate_batch(["This is Z"], 5) == [gen.generate("This is Z", 5)]
    many = ["This is Z", "software "] * 100
    out = gen.generate_batch(many, 8)
    assert len(out) == 200 and out[0] == gen.generate("This is Z", 8)


def test_runs_split_by_memory_give_the_same_text(
    gen: Generator, stateful_models: dict, monkeypatch
) -> None:
    # A window batch, a stateful warm-up, a stateful batch's steps and a score split into
    # Runs of a few rows each (a 4 KB budget) give exactly what one Run over every row gives.
    import runtime.loading as loading

    window_prompts = ["This is Z", "Thi", "software ", "ZZZZZZ", "a school"] * 7
    stateful = Generator.load(stateful_models["lstm"], graph_builder="native")
    stateful_prompts = ["The quick brown fox", "The lazy", "A lazy dog", "The quick brown"] * 5
    sampled = GenerationOptions(temperature=0.9, seed=2)
    text = "The quick brown fox jumps over the lazy dog. " * 20

    def everything() -> list:
        return [
            gen.generate_batch(window_prompts, 12),
            gen.generate_batch(window_prompts, 12, sampled),
            stateful.generate_batch(stateful_prompts, 12),
            stateful.generate_batch(stateful_prompts, 12, sampled),
            stateful.score(text).bits_per_char,
            gen.score("This is Zindua School a software training institute" * 9).bits_per_char,
        ]

    whole = everything()
    monkeypatch.setattr(loading, "RUN_BYTES", 4096)
    assert loading.rows_per_run(gen.position_floats, gen.spec.seq_length) < len(window_prompts)
    assert loading.rows_per_run(stateful.position_floats, 18) < 5
    assert loading.rows_per_run(stateful.position_floats, 1) < len(stateful_prompts)
    split = everything()
    assert split[:4] == whole[:4]
    # Scores add per-Run sums: a different grouping rounds in the last bits.
    assert split[4:] == pytest.approx(whole[4:], rel=1e-12)


def test_a_big_batch_of_long_windows_runs_in_bounded_memory(tmp_path, corpus_file) -> None:
    # onnxruntime materializes every position of every row in a Run: a window LSTM 256 at
    # window 100 took 930 MB for 2,048 windows in one Run (65,536, the most a batch may
    # hold, would need about 30 GB). Split into Runs of RUN_BYTES, it stays near its size.
    import subprocess
    import sys

    from trainer.train import TrainConfig, train

    out = tmp_path / "wide_window"
    train(TrainConfig(out_dir=out, corpus=corpus_file, cell="lstm", units=256, seq_length=100,
                      epochs=1, val_fraction=0.0, seed=1))  # fmt: skip
    code = (
        "import resource, sys; from runtime import Generator\n"
        "g = Generator.load(sys.argv[1]); p = g.spec.sample_prompt\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "g.generate_batch([p] * 2048, 2)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"
    )
    grown_kb = int(subprocess.check_output([sys.executable, "-c", code, str(out)], text=True))
    assert grown_kb < 200_000, f"the batch grew the process by {grown_kb / 1000:.0f} MB"


@pytest.mark.parametrize("prompts", [[], "This is Z"])
def test_batch_needs_a_list_of_prompts(gen: Generator, prompts) -> None:
    with pytest.raises(GenerationSettingsError, match="prompts must be a list"):
        gen.generate_batch(prompts, 5)


def test_batch_names_the_bad_prompt(gen: Generator) -> None:
    with pytest.raises(PromptError, match="prompt 2 of 3: .*'!'"):
        gen.generate_batch(["This is Z", "Hi!", "This is Z"], 5)


@pytest.mark.parametrize("threads", [2, 4])
def test_thread_count_does_not_change_output(threads: int) -> None:
    assert Generator.load(threads=threads).generate("This is Z", 80) == Generator.load().generate(
        "This is Z", 80
    )


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, 257, 10**6])
def test_bad_thread_count(threads) -> None:
    # A million threads killed the process with no message; 100,000 never finished starting.
    with pytest.raises(GenerationSettingsError, match="threads must be a whole number from 1 to"):
        Generator.load(threads=threads)


def test_memory_arena_choice_does_not_change_output() -> None:
    on = Generator.load(memory_arena=True)
    assert on.generate("This is Z", 50) == Generator.load().generate("This is Z", 50)


def test_session_is_configured_for_small_devices(gen: Generator) -> None:
    from runtime.generator import session_options

    opts = session_options()
    assert opts.intra_op_num_threads == 1 and opts.enable_cpu_mem_arena is False
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_graph_is_shaped_for_inference(gen: Generator) -> None:
    import onnx

    ops = [n.op_type for n in onnx.load(gen.model_dir / "model.onnx").graph.node]
    assert "Loop" not in ops and "RNN" in ops and ops[-1] == "ArgMax"


def test_unknown_precision() -> None:
    with pytest.raises(GenerationSettingsError, match="precision must be one of"):
        Generator.load(precision="int4")


def test_tampered_int8_variant_fails_its_own_sha256(tmp_path) -> None:
    import shutil

    from helpers import edit_vocab

    d = tmp_path / "m"
    shutil.copytree(Generator.load().model_dir, d)
    (d / "model.int8.onnx").write_bytes((d / "model.onnx").read_bytes() + b"x")
    edit_vocab(d, lambda v: v.__setitem__("variants", {"int8": {"sha256": "0" * 64}}))
    with pytest.raises(ArtifactError, match="model.int8.onnx does not match the sha256"):
        Generator.load(d, precision="int8")
    Generator.load(d)  # fp32 is unaffected


def test_bound_run_public_fallback_gives_the_same_outputs() -> None:
    """The C-level fast path and onnxruntime's public run_with_iobinding agree."""
    import numpy as np

    from runtime.binding import BoundRun

    gen = Generator.load()
    window = gen.encode("This is Z")[None, -gen.spec.seq_length :].astype(np.int32)
    results = []
    for fast in (True, False):
        probs = np.zeros((1, gen.spec.vocab_size), np.float32)
        bound = BoundRun(gen.session, {"char_ids": window.copy()}, {"probs": probs}, fast=fast)
        bound.run()
        results.append(probs)
    assert not bound.fast
    assert np.array_equal(results[0], results[1]) and results[0].sum() > 0.99
