"""Training settings: each field's default and the rules about it, in one place (no TensorFlow).

Every `TrainConfig` field says in its metadata whether a resumed run may change it, whether
the workers of a multi-worker run may give it differently, whether the replay command in
vocab.json repeats it, and which values the CLI offers. The CLI, resuming and the
multi-worker agreement read these instead of keeping their own lists.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from runtime.artifact import MODE_VERSIONS, uses_one_hot_op
from runtime.graph_rules import ACTIVATIONS, GATES

from .errors import CorpusError, TrainingError

CELLS = ("simple", "lstm", "gru")
MODES = tuple(MODE_VERSIONS)  # the artifact contract's modes: window, stateful
STRATEGIES = ("default", "mirrored", "multiworker")
QUANTIZE = ("int8",)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting takes: whole numbers (`whole`) or any number, from
    `low` to `high` (None: unbounded), each end included unless open."""

    whole: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        low, high = self.low, self.high
        above = low is None or (value > low if self.low_open else value >= low)
        below = high is None or (value < high if self.high_open else value <= high)
        return above and below

    def describe(self) -> str:
        """ "a whole number from 1 to 16", "a number above 0 and at most 10", ..."""

        def shown(x: float) -> str:
            return f"{x:,}" if isinstance(x, int) else f"{x:g}"

        noun = "a whole number" if self.whole else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None and not (self.low_open or self.high_open):
            return f"{noun} from {shown(low)} to {shown(high)}"
        clauses = []
        if low is not None:
            clauses.append(f"{'above' if self.low_open else 'at least'} {shown(low)}")
        if high is not None:
            clauses.append(f"{'below' if self.high_open else 'at most'} {shown(high)}")
        return f"{noun} {' and '.join(clauses)}".strip()


def setting(
    default: Any,
    *,
    resume: bool = False,
    per_worker: bool = False,
    replay: bool = True,
    choices: tuple[str, ...] | None = None,
    values: Range | None = None,
) -> Any:
    """A TrainConfig field. `resume`: a resumed run may give another value (for the seed,
    the saved one is used); `per_worker`: each worker of a multi-worker run may differ (the
    rest must match the chief's); `replay`: the replay command repeats it; `choices`: the
    values the CLI offers; `values`: a number's range (the CLI's, and the library's)."""
    meta = {
        "resume": resume,
        "per_worker": per_worker,
        "replay": replay,
        "choices": choices,
        "values": values,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. Defaults are the notebook's, plus what real corpora need."""

    out_dir: Path = field(metadata={"resume": True, "per_worker": True, "replay": False})
    # The corpus is compared by content between workers and runs, not by path.
    corpus: Path | None = setting(None, per_worker=True, replay=False)
    # Window length; for a stateful model, the length of the training chunks.
    seq_length: int = setting(3, values=Range(True, 1, 10_000))
    cell: str = setting("simple", choices=CELLS)
    units: int = setting(50, values=Range(True, 1, 8192))
    layers: int = setting(1, values=Range(True, 1, 16))
    dropout: float = setting(0.0, values=Range(False, 0, 1, high_open=True))
    # None: relu for SimpleRNN (as the notebook), tanh otherwise.
    activation: str | None = setting(None, choices=tuple(ACTIVATIONS))
    epochs: int = setting(100, resume=True, values=Range(True, 1, 100_000))
    batch_size: int = setting(32, values=Range(True, 1, 1 << 20))
    learning_rate: float = setting(0.001, values=Range(False, 0, 10, low_open=True))
    # char-rnn's grad_clip; None turns clipping off
    clipnorm: float | None = setting(5.0, values=Range(False, 0, low_open=True))
    clipvalue: float | None = setting(None, values=Range(False, 0, low_open=True))
    # None: 0.1 for a corpus file, 0 for the sentence
    val_fraction: float | None = setting(None, values=Range(False, 0, 1, high_open=True))
    # patience, on validation loss
    early_stopping: int | None = setting(None, resume=True, values=Range(True, 1, 10_000))
    # None: one pass over every window
    steps_per_epoch: int | None = setting(None, values=Range(True, 1))
    # Minutes of training; stops after the last epoch that fits.
    time_limit: float | None = setting(
        None, resume=True, per_worker=True, values=Range(False, 0, low_open=True)
    )
    # evenly strided held-out subset per epoch
    max_val_windows: int | None = setting(20_000, values=Range(True, 1))
    strategy: str = setting("default", choices=STRATEGIES)
    mode: str = setting("window", choices=MODES)  # stateful: exported as a step graph
    # Drawn and recorded when None; a resumed run keeps the saved one.
    seed: int | None = setting(
        None, resume=True, per_worker=True, replay=False, values=Range(True, 0, 2**31 - 1)
    )
    force: bool = setting(False, resume=True, per_worker=True, replay=False)
    resume: bool = setting(False, resume=True, per_worker=True, replay=False)
    quantize: str | None = setting(
        None, resume=True, per_worker=True, replay=False, choices=QUANTIZE
    )
    verbose: int = setting(0, resume=True, per_worker=True, replay=False)

    def resolved_activation(self) -> str:
        if self.activation is not None:
            return self.activation
        return "relu" if self.cell == "simple" else "tanh"

    def resolved_val_fraction(self) -> float:
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.0 if self.corpus is None else 0.1

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["out_dir"] = str(self.out_dir)
        doc["corpus"] = None if self.corpus is None else str(self.corpus)
        return doc


def _names(key: str, value: bool = True) -> frozenset[str]:
    return frozenset(f.name for f in fields(TrainConfig) if f.metadata.get(key, True) is value)


# Settings a resumed run may change; everything else must match the interrupted run.
RESUME_MAY_CHANGE = _names("resume")
# Settings the workers of one run may give differently.
PER_WORKER = _names("per_worker")
# Settings the replay command in vocab.json leaves out (it adds --corpus, --seed, --out).
NOT_REPLAYED = _names("replay", False)


def choices(name: str) -> list[str]:
    """The values the CLI offers for `name`."""
    return list(next(f for f in fields(TrainConfig) if f.name == name).metadata["choices"])


def values(name: str) -> Range:
    """The range of the numeric setting `name` (the CLI's options are built from it)."""
    found = next(f for f in fields(TrainConfig) if f.name == name).metadata["values"]
    assert found is not None, name
    return found


def check_config(config: TrainConfig) -> None:
    """Refuse settings that cannot work, before reading anything: the CLI's ranges and
    choices, for library callers too (units=0 or epochs=-1 reached Keras, or trained
    nothing and published it)."""
    problems = []
    for f in fields(TrainConfig):
        allowed, numbers = f.metadata.get("choices"), f.metadata.get("values")
        value = getattr(config, f.name)
        if value is None:
            continue
        if allowed and f.name != "activation" and value not in allowed:
            problems.append(f"{f.name} must be one of {', '.join(allowed)}")
        if numbers is not None and not numbers.holds(value):
            problems.append(f"{f.name} must be {numbers.describe()}, got {value!r}")
    if config.resolved_activation() not in ACTIVATIONS:
        problems.append(
            f"activation must be one of {', '.join(ACTIVATIONS)}: the runtime runs only the "
            "native ONNX cells, which offer these"
        )
    if config.early_stopping is not None and config.resolved_val_fraction() == 0:
        problems.append("early stopping watches validation loss: give a --val-fraction above 0")
    if problems:
        raise TrainingError("; ".join(problems))


# The ONNX operator each cell exports to (graph_rules.GATES: its gates).
CELL_OPS = {"simple": "RNN", "gru": "GRU", "lstm": "LSTM"}


def check_exportable(config: TrainConfig, vocab: int) -> None:
    """Refuse, before any training, a model whose model.onnx the runtime would refuse to
    load (MAX_MODEL_BYTES), 4 bytes a weight. Otherwise the whole run is lost at its
    export. (Below ONE_HOT_OP_CHARS the graph also holds a [vocabulary, vocabulary]
    one-hot table; above, where it used to cost 577 MB at 12,000 characters, an OneHot.)"""
    from runtime.loading import MAX_MODEL_BYTES

    rows, units = GATES[CELL_OPS[config.cell]] * config.units, config.units
    table = 0 if uses_one_hot_op(vocab) else vocab * vocab
    floats = table + units * vocab + vocab  # one-hot table, output layer
    for layer in range(config.layers):
        inputs = vocab if layer == 0 else units
        floats += rows * (inputs + units + 2)  # W, R and both biases
    if 4 * floats > MAX_MODEL_BYTES:
        raise CorpusError(
            f"the corpus has {vocab:,} distinct characters: with {config.layers} x "
            f"{config.units} units model.onnx would be about {4 * floats / 1e6:,.0f} MB, "
            f"over the {MAX_MODEL_BYTES:,} bytes the runtime loads; use fewer --units, or "
            "map rare characters to common ones (or drop them) to shrink the vocabulary"
        )


def unicode_text(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 (which Python decodes to lone
    surrogates) as U+FFFD: vocab.json's strings must be text JSON can carry, and the
    runtime refuses a lone surrogate (a run whose corpus was named so lost its export)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def command_line(config: TrainConfig, seed: int) -> str:
    """The textgen-train command that repeats this run (recorded in vocab.json)."""
    defaults = TrainConfig(out_dir=config.out_dir)
    parts = ["textgen-train train"]
    if config.corpus is not None:
        parts.append(f"--corpus {shlex.quote(str(config.corpus))}")
    for key, value in asdict(config).items():
        if key in NOT_REPLAYED or value == getattr(defaults, key):
            continue
        flag = f"--{key.replace('_', '-')}"
        parts.append("--no-clip" if key == "clipnorm" and value is None else f"{flag} {value}")
    parts += [f"--seed {seed}", f"--out {shlex.quote(str(config.out_dir))}"]
    return unicode_text(" ".join(parts))
