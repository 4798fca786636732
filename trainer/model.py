"""The Keras model: character indices in, next-character probabilities out."""

from __future__ import annotations

from pathlib import Path

import keras

from runtime.artifact import bits_per_char, short_repr

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


# What a model.keras the trainer writes holds: its members, and every object its
# config.json names, as (module, class_name). Keras rebuilds whatever a config names, and
# its safe_mode has been bypassed again and again (CVE-2025-1550, -8747, -9906: arbitrary
# code; CVE-2025-12058: a lookup layer reading any local file): a model directory from
# elsewhere is checked against this list before Keras sees it.
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})
KERAS_OBJECTS = frozenset(
    {
        ("keras.src.models.functional", "Functional"),
        ("keras.src.ops.nn", "OneHot"),
        ("keras", "DTypePolicy"),
        ("keras.optimizers", "Adam"),
        ("builtins", "function"),  # a registered function: only bpc (KERAS_FUNCTIONS)
        (None, "__keras_tensor__"),
        *(
            ("keras.layers", name)
            for name in ("InputLayer", "SimpleRNN", "LSTM", "GRU", "Dense", "Dropout")
        ),
        *(("keras.initializers", name) for name in ("GlorotUniform", "Orthogonal", "Zeros")),
    }
)
KERAS_FUNCTIONS = frozenset({"rnn_textgen>bpc"})
MAX_KERAS_CONFIG = 1 << 20


class NotOurKerasModel(ValueError):
    """A model.keras that is not one the trainer writes (the message says what differs)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"not a model textgen-train writes ({problem})")


def check_keras_archive(path: str | Path) -> None:
    """NotOurKerasModel unless `path` holds only what the trainer writes (KERAS_MEMBERS,
    KERAS_OBJECTS), read without running anything from it."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if len(names) != len(set(names)) or not set(names) <= KERAS_MEMBERS:
                extra = sorted(set(names) - KERAS_MEMBERS) or ["a member twice"]
                raise NotOurKerasModel(f"it holds {short_repr(extra[0], 80)}")
            info = archive.getinfo("config.json")
            if info.file_size > MAX_KERAS_CONFIG:
                raise NotOurKerasModel(f"its config.json is {info.file_size:,} bytes")
            config = json.loads(archive.read(info))
            _check_weights(archive.read("model.weights.h5"))
    except NotOurKerasModel:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, RecursionError) as exc:
        raise NotOurKerasModel(f"it is not a Keras archive ({exc})") from None
    for obj in _named_objects(config):
        key = (obj.get("module"), obj.get("class_name"))
        if key not in KERAS_OBJECTS or (
            key == ("builtins", "function") and obj.get("config") not in KERAS_FUNCTIONS
        ):
            name = f"{key[0]}.{key[1]}" if key[0] else str(key[1])
            raise NotOurKerasModel(f"its config.json names {short_repr(name, 80)}")


def _check_weights(data: bytes) -> None:
    """NotOurKerasModel if the weights file reaches outside itself: an HDF5 dataset can keep
    its bytes in any local file (external storage) or map other files (a virtual dataset),
    and a link can point into another file; loaded as weights, such bytes would be
    published in model.onnx. (Keras 3.15 refuses external datasets itself, in a many-line
    error; this holds whatever Keras is installed, and says what is wrong in one line.)"""
    import io

    import h5py

    # A visitor's return value other than None ends the visit and is returned (an exception
    # raised inside one comes out of h5py mangled).
    def links(name: str, link: object) -> str | None:
        return None if isinstance(link, h5py.HardLink) else f"its weights link {name!r} elsewhere"

    def datasets(name: str, obj: object) -> str | None:
        outside = isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual)
        return f"its weight {name!r} is read from another file" if outside else None

    with h5py.File(io.BytesIO(data), "r") as weights:
        problem = weights.visititems_links(links) or weights.visititems(datasets)
    if problem:
        raise NotOurKerasModel(problem)


def _named_objects(doc: object) -> list[dict]:
    """Every object of a parsed config.json that names a class to rebuild."""
    found, stack = [], [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if "class_name" in x or "module" in x:
                found.append(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return found


def load_keras(path: str | Path, *, compile: bool = True) -> keras.Model:
    """Load a model.keras written by the trainer (its `bpc` metric is registered here),
    after check_keras_archive: NotOurKerasModel for any other archive, before Keras reads
    it."""
    check_keras_archive(path)
    return keras.models.load_model(path, compile=compile, safe_mode=True)
