"""The Keras model: character indices in, next-character probabilities out."""

from __future__ import annotations

from pathlib import Path

import keras

from runtime.artifact import bits_per_char

from .config import CELLS

LAYERS = dict(
    zip(CELLS, (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU), strict=True)
)

INPUT_NAME = "char_ids"
OUTPUT_NAME = "probs"


@keras.saving.register_keras_serializable(package="rnn_textgen")
def bpc(y_true, y_pred):
    """Bits per character: the cross-entropy in base 2, the unit char-rnn papers report."""
    return bits_per_char(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))


def build_model(
    vocab_size: int,
    seq_length: int,
    *,
    units: int = 50,
    cell: str = "simple",
    activation: str = "relu",
    layers: int = 1,
    dropout: float = 0.0,
    mode: str = "window",
) -> keras.Model:
    """The notebook's model, as a functional model (tf2onnx cannot convert a Sequential).

    The one-hot encoding happens inside the model, the same math as the notebook's
    tf.one_hot but without a windows x seq_length x vocabulary array in memory. Stacked
    layers pass their whole sequence up; dropout sits between layers and before the
    output, as in char-rnn, and is a no-op at inference (and in the exported graph).

    mode "stateful" is the many-to-many model: any number of characters in, the next
    character's probabilities at every position out ([batch, time, vocab]).
    """
    sequence = mode == "stateful"
    ids = keras.Input((None if sequence else seq_length,), dtype="int32", name=INPUT_NAME)
    x = keras.ops.one_hot(ids, vocab_size)
    for i in range(layers):
        last = i == layers - 1 and not sequence
        name = f"{cell}_rnn" if layers == 1 else f"{cell}_rnn_{i + 1}"
        x = LAYERS[cell](units, activation=activation, return_sequences=not last, name=name)(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    probs = keras.layers.Dense(vocab_size, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(ids, probs, name=f"textgen_{cell}")


def compile_model(
    model: keras.Model,
    *,
    learning_rate: float,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
) -> None:
    """Adam and cross-entropy as the notebook, with optional gradient clipping.

    Sparse labels: the notebook's categorical cross-entropy without one-hot label arrays.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate, clipnorm=clipnorm, clipvalue=clipvalue
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", bpc],
    )


def load_keras(path: str | Path, *, compile: bool = True) -> keras.Model:
    """Load a model.keras written by the trainer (its `bpc` metric is registered here)."""
    return keras.models.load_model(path, compile=compile)
