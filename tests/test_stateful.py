"""Stateful models: many-to-many training, the exported step graph, and the runtime on it."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from runtime import Generator
from runtime.artifact import VOCAB_FILE, ModelSpec
from runtime.errors import ArtifactError
from trainer.export import keras_greedy_stateful
from trainer.model import load_keras
from trainer.train import TrainConfig, train

PROMPTS = ["The quick", "A", "lazy dog sleeps while the quick fox runs. The", "fox"]


@pytest.fixture(
    scope="module",
    params=[("simple", 1), ("lstm", 2), ("gru", 1)],
    ids=["simple", "lstm-2-layers", "gru"],
)
def stateful_model(request, tmp_path_factory, corpus_file):
    cell, layers = request.param
    out = tmp_path_factory.mktemp(f"stateful-{cell}") / "m"
    spec = train(
        TrainConfig(
            out_dir=out,
            corpus=corpus_file,
            mode="stateful",
            cell=cell,
            layers=layers,
            units=16,
            seq_length=12,
            epochs=2,
            batch_size=8,
            seed=5,
            quantize="int8" if cell == "lstm" else None,
        )
    )
    return out, spec


def test_export_records_mode_states_and_parity(stateful_model) -> None:
    out, spec = stateful_model
    doc = json.loads((out / VOCAB_FILE).read_text())
    assert doc["version"] == 2 and doc["mode"] == "stateful"
    per_layer = 2 if spec.architecture["cell"] == "lstm" else 1
    assert len(doc["graph"]["states"]) == per_layer * spec.architecture["layers"]
    assert all(s["shape"] == [None, 16] for s in doc["graph"]["states"])
    assert doc["graph"]["input"]["shape"] == [None, None]
    assert spec.training["parity_max_abs_diff"] <= 1e-5
    assert spec.training["train_chunks"] > 0 and "train_windows" not in spec.training
    # Every cell's steps run decomposed (runtime.step_graph.preferred_builder).
    assert doc["graph_builder"] == "decomposed" == Generator.load(out).graph_builder


def test_runtime_matches_the_keras_sequence_model(stateful_model) -> None:
    out, spec = stateful_model
    gen = Generator.load(out)
    model = load_keras(out / "model.keras", compile=False)
    for prompt in PROMPTS:
        expected = keras_greedy_stateful(model, gen.encode(prompt), 25)
        assert gen.generate(prompt, 25) == prompt + "".join(spec.chars[i] for i in expected)


def test_stream_batch_and_single_agree(stateful_model) -> None:
    out, _ = stateful_model
    gen = Generator.load(out)
    singles = [gen.generate(p, 30) for p in PROMPTS]
    assert gen.generate_batch(PROMPTS, 30) == singles  # prompts of different lengths
    assert [p + "".join(gen.stream(p, 30)) for p in PROMPTS] == singles


def test_long_prompts_warm_up_in_slices(stateful_model, monkeypatch) -> None:
    import runtime.generator as g

    out, _ = stateful_model
    gen = Generator.load(out)
    prompt = ("the quick brown fox jumps over the lazy dog. " * 60).strip()
    whole = gen.generate(prompt, 20)
    monkeypatch.setattr(g, "WARM_UP_SLICE", 7)
    assert gen.generate(prompt, 20) == whole


def test_bound_buffers_survive_garbage_collection(stateful_model) -> None:
    out, _ = stateful_model
    # Objects from before (TensorFlow's, chiefly) go where collections skip them, so that
    # each one below scans only the generator's (0.2 s a collection otherwise).
    gc.freeze()
    try:
        gen = Generator.load(out)
        # 24 characters: three Runs of the greedy graph, both state bindings and back.
        expected = gen.generate("The quick", 24)
        pieces = []
        for ch in gen.stream("The quick", 24):
            gc.collect()  # would free buffers onnxruntime writes into, if nothing held them
            pieces.append(ch)
    finally:
        gc.unfreeze()
    assert "The quick" + "".join(pieces) == expected


def test_int8_step_graph(stateful_model) -> None:
    out, spec = stateful_model
    if spec.architecture["cell"] != "lstm":  # only the LSTM case asked for --quantize int8
        assert spec.variants == {} and not (out / "model.int8.onnx").exists()
        return
    gen = Generator.load(out, precision="int8")
    assert len(gen.generate("The quick", 40)) == len("The quick") + 40
    assert 0 <= spec.variants["int8"]["greedy_agreement"] <= 1


def test_a_version_1_file_cannot_claim_stateful(stateful_model, tmp_path) -> None:
    import shutil

    out, _ = stateful_model
    copy = tmp_path / "m"
    shutil.copytree(out, copy)
    doc = json.loads((copy / VOCAB_FILE).read_text())
    doc["version"] = 1
    (copy / VOCAB_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="needs format version 2"):
        Generator.load(copy)


def test_one_character_prompt_and_cost_is_flat(stateful_model) -> None:
    out, _ = stateful_model
    gen = Generator.load(out)
    assert ModelSpec.read(out).min_prompt == 1
    text = gen.generate("T", 50)
    assert text.startswith("T") and len(text) == 51
    assert np.all(
        np.isfinite(
            gen.session.run(
                ["probs"],
                {
                    "char_ids": gen.encode("The")[None],
                    **{s.input: np.zeros((1, s.shape[1]), np.float32) for s in gen.spec.states},
                },
            )[0]
        )
    )


class CountingSession:
    """Counts Runs on the real session it wraps (which still does all the work)."""

    def __init__(self, session) -> None:
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


@pytest.fixture(scope="module")
def lstm_256(tmp_path_factory, long_corpus):
    """Big enough that onnxruntime splits each recurrent step across threads."""
    out = tmp_path_factory.mktemp("lstm256") / "m"
    config = TrainConfig(out_dir=out, corpus=long_corpus, mode="stateful", cell="lstm",
                         units=256, seq_length=20, epochs=1, steps_per_epoch=3, batch_size=16,
                         seed=2)  # fmt: skip
    train(config)
    return out


def test_long_prompts_warm_up_on_the_threaded_session(lstm_256) -> None:
    one = Generator.load(lstm_256, warmup_threads=1)
    two = Generator.load(lstm_256, warmup_threads=2)
    assert one.warmup_session is None
    assert two.warmup_session.get_session_options().intra_op_num_threads == 2
    assert two.session.get_session_options().intra_op_num_threads == 1  # steps stay serial
    counter = two.warmup_session = CountingSession(two.warmup_session)
    long = "river stone light garden quiet morning window paper letter silver north " * 6
    assert two.generate(long, 40) == one.generate(long, 40)
    assert counter.runs == 1
    # Below THREADED_WARM_UP characters (all prompts together) the pool is not worth waking.
    assert two.generate("river st", 40) == one.generate("river st", 40)
    assert counter.runs == 1
    prompts = ["river stone light", "quiet", long]
    assert two.generate_batch(prompts, 30) == one.generate_batch(prompts, 30)
    assert counter.runs == 3  # one per prompt length, except "quiet" (4 characters to feed)


def test_warmup_threads_is_checked(stateful_model) -> None:
    from runtime.errors import GenerationSettingsError

    out, _ = stateful_model
    for bad in (0, -1, 1.5, True, 257):
        with pytest.raises(GenerationSettingsError, match="warmup_threads must be a whole number"):
            Generator.load(out, warmup_threads=bad)
