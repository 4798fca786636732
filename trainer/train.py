"""Fit the character model on a corpus and export it: the library behind `textgen-train train`."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.artifact import ModelSpec, bits_per_char

from .corpus import Corpus
from .export import export, prepare_out_dir
from .model import CELLS, build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the notebook's."""

    out_dir: Path
    corpus: Path | None = None
    seq_length: int = 3
    cell: str = "simple"
    units: int = 50
    activation: str | None = None  # None: relu for SimpleRNN (as the notebook), tanh otherwise
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.001
    seed: int | None = None
    force: bool = False
    quantize: str | None = None  # "int8" adds model.int8.onnx
    verbose: int = 0

    def resolved_activation(self) -> str:
        if self.activation is not None:
            return self.activation
        return "relu" if self.cell == "simple" else "tanh"


def seed_everything(seed: int) -> None:
    """Same seed, same weights on CPU: seed every RNG and ask TF for deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(config: TrainConfig) -> ModelSpec:
    """Read the corpus, fit, export into config.out_dir and return the published spec."""
    if config.cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}")
    corpus = Corpus.read(config.corpus)
    x, y = corpus.windows(config.seq_length)
    prepare_out_dir(config.out_dir, force=config.force)  # before spending time on training

    import keras
    import tensorflow as tf

    # Without --seed a seed is still drawn and recorded, so any run can be repeated.
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    seed_everything(seed)
    model = build_model(
        len(corpus.chars),
        config.seq_length,
        units=config.units,
        cell=config.cell,
        activation=config.resolved_activation(),
    )
    # Sparse labels: the notebook's categorical cross-entropy without one-hot label arrays.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log.info(
        "training %s x%d on %d windows of %d characters (%d distinct), seed %d",
        config.cell,
        config.units,
        len(y),
        config.seq_length,
        len(corpus.chars),
        seed,
    )
    started = time.perf_counter()
    history = model.fit(
        tf.constant(x),
        tf.constant(y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=config.verbose,
    ).history
    seconds = time.perf_counter() - started
    loss = float(history["loss"][-1])
    training: dict[str, Any] = {
        "corpus": corpus.name,
        "corpus_chars": len(corpus.text),
        "samples": int(len(y)),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": seed,
        "loss": round(loss, 6),
        "accuracy": round(float(history["accuracy"][-1]), 6),
        "bits_per_char": round(bits_per_char(loss), 6),
        "train_seconds": round(seconds, 2),
        "keras": keras.__version__,
        "command": command_line(config, seed),
    }
    architecture = {
        "cell": config.cell,
        "layers": 1,
        "units": config.units,
        "activation": config.resolved_activation(),
    }
    return export(
        model,
        chars=corpus.chars,
        seq_length=config.seq_length,
        out_dir=config.out_dir,
        windows=x,
        prompt=corpus.sample_prompt(config.seq_length),
        architecture=architecture,
        training=training,
        force=config.force,
        quantize=config.quantize,
        eval_windows=x[-max(1, len(x) // 10) :],
        eval_source="the last 10% of the training windows",
    )


def command_line(config: TrainConfig, seed: int) -> str:
    """The textgen-train command that repeats this run (recorded in vocab.json)."""
    defaults = TrainConfig(out_dir=config.out_dir)
    parts = ["textgen-train train"]
    if config.corpus is not None:
        parts.append(f"--corpus {config.corpus}")
    for key, value in asdict(config).items():
        if key in ("out_dir", "corpus", "seed", "force", "verbose", "quantize"):
            continue
        if value != getattr(defaults, key):
            parts.append(f"--{key.replace('_', '-')} {value}")
    parts += [f"--seed {seed}", f"--out {config.out_dir}"]
    return " ".join(parts)
