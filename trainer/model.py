"""The Keras model: character indices in, next-character probabilities out."""

from __future__ import annotations

import keras

CELLS = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}

INPUT_NAME = "char_ids"
OUTPUT_NAME = "probs"


def build_model(
    vocab_size: int,
    seq_length: int,
    *,
    units: int = 50,
    cell: str = "simple",
    activation: str = "relu",
) -> keras.Model:
    """The notebook's model, as a functional model (tf2onnx cannot convert a Sequential).

    The one-hot encoding happens inside the model, the same math as the notebook's
    tf.one_hot but without a windows x seq_length x vocabulary array in memory.
    """
    ids = keras.Input((seq_length,), dtype="int32", name=INPUT_NAME)
    x = keras.ops.one_hot(ids, vocab_size)
    x = CELLS[cell](units, activation=activation, name=f"{cell}_rnn")(x)
    probs = keras.layers.Dense(vocab_size, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(ids, probs, name=f"textgen_{cell}")
