"""Shared fixtures: copies of the shipped model to damage, and tiny models trained once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from runtime.artifact import default_model_dir

sys.path.insert(0, str(REPO / "benchmarks"))  # the corpora the benchmarks use

SMALL_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A lazy dog sleeps while the quick fox runs.\n"
) * 3


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of the default model that a test may corrupt."""
    dest = tmp_path / "model"
    shutil.copytree(default_model_dir(), dest)
    return dest


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "fox.txt"
    path.write_text(SMALL_CORPUS, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A small model trained once per session through the library (seconds)."""
    from trainer.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny") / "model"
    train(TrainConfig(out_dir=out, corpus=corpus_file, seq_length=5, units=16, epochs=3, seed=7))
    return out


@pytest.fixture(scope="session")
def long_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 12 KB of varied text, so epochs have several batches."""
    words = [
        "river",
        "stone",
        "light",
        "garden",
        "quiet",
        "morning",
        "window",
        "paper",
        "letter",
        "silver",
        "north",
        "lantern",
        "harbor",
        "meadow",
        "winter",
        "thunder",
    ]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=9)) + "." for _ in range(220)]
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def stateful_models(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> dict:
    """Stateful LSTM and GRU models with int8 variants, trained once per session (read
    only: a test that changes one copies it first)."""
    from trainer.train import TrainConfig, train

    out = {}
    for cell in ("lstm", "gru"):
        path = tmp_path_factory.mktemp("stateful") / cell
        train(
            TrainConfig(
                out_dir=path,
                corpus=corpus_file,
                cell=cell,
                units=32,
                seq_length=16,
                epochs=3,
                mode="stateful",
                quantize="int8",
                seed=9,
            )
        )
        out[cell] = path
    return out


@pytest.fixture(scope="session")
def wide_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A window LSTM and a stateful GRU of ONE_HOT_OP_CHARS + 76 characters (CJK), with int8
    variants, trained once per session, and a prompt they read (read only)."""
    from corpora import wide_text

    from trainer.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("wide")
    text = wide_text()
    corpus = tmp / "hanzi.txt"
    corpus.write_text(text, encoding="utf-8")
    models: dict = {"prompt": text[:8]}
    for mode, cell in (("window", "lstm"), ("stateful", "gru")):
        models[mode] = tmp / mode
        train(
            TrainConfig(
                out_dir=models[mode],
                corpus=corpus,
                mode=mode,
                cell=cell,
                units=32,
                seq_length=8,
                epochs=1,
                steps_per_epoch=10,
                seed=1,
                quantize="int8",
            )
        )
    return models
