"""The artifact contract: what a model directory holds and how vocab.json is validated.

The trainer writes artifacts through these classes and the runtime reads them back
through the same ones, so the format is defined in exactly one place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import ArtifactError, ModelNotFoundError, UnsupportedVersionError

FORMAT_NAME = "rnn-textgen-vocab"
# Version 1: window models. Version 2 adds stateful models ("mode": "stateful", a "states"
# list in "graph", a time axis on the input). A file carries the lowest version that can
# describe it (MODE_VERSIONS), so window models stay readable by version-1 runtimes; this
# is the newest version this runtime reads, not a version every file is written with.
#
# Version 3 adds a graph that one-hot encodes with ONNX's `OneHot` operator instead of a
# `Gather` from a [vocabulary, vocabulary] identity table: written for vocabularies of
# ONE_HOT_OP_CHARS characters or more, where the table is 4 MiB and more (a 5,000-character
# CJK corpus: 100 MB of the 102 MB file, 360 MB of a 380 MB process). Smaller vocabularies
# keep the table and their version, so older runtimes read them as before; a runtime reads
# either form at any size (files written before version 3 have tables).
NEWEST_VERSION = 3
SUPPORTED_VERSIONS = frozenset({1, 2, 3})
MODE_VERSIONS = {"window": 1, "stateful": 2}
ONE_HOT_OP_VERSION = 3
ONE_HOT_OP_CHARS = 1024


def uses_one_hot_op(vocab_size: int) -> bool:
    """Whether the trainer one-hot encodes a vocabulary of this size with an `OneHot` node
    (format version 3) rather than a `Gather` from an identity table."""
    return vocab_size >= ONE_HOT_OP_CHARS


MODEL_FILE = "model.onnx"
VOCAB_FILE = "vocab.json"
# Precision -> file. fp32 is the model itself; others are optional variants listed in
# vocab.json's "variants" with their own sha256.
MODEL_FILES = {"fp32": MODEL_FILE, "int8": "model.int8.onnx"}

# vocab.json is read before anything is trusted; a cap keeps a hostile file from
# making json.loads allocate gigabytes. A 65,536-character vocabulary fits with room.
MAX_VOCAB_BYTES = 4 * 1024 * 1024
MAX_CHARS = 65_536
MAX_SEQ_LENGTH = 100_000

INPUT_DTYPES = frozenset({"int32", "int64"})
OUTPUT_DTYPES = frozenset({"float32"})
NEXT_DTYPES = frozenset({"int64"})
# The graph's greedy choice (argmax of the probabilities), read by the runtime's hot loop.
NEXT_NAME = "next"
MODES = frozenset(MODE_VERSIONS)
# How the runtime runs a stateful model's generation steps (runtime.step_graph): "native",
# model.onnx itself; "decomposed", a one-character graph built at load from its weights.
# Window models are always "native". Readers that do not know the field run model.onnx,
# which is always the complete graph, so it needs no new format version.
GRAPH_BUILDERS = ("native", "decomposed")
STATE_DTYPES = frozenset({"float32"})

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Facts that commands print or use, with their type and range ("kind", low, high): checked
# when present, so `textgen info` never meets a value it cannot format.
MAX_FACT_DEPTH = 16
VARIANT_FACTS = {
    "bytes": ("int", 0, None),
    "size_vs_fp32": ("float", 0, None),
    "greedy_agreement": ("float", 0, 1),
    "agreement_windows": ("int", 0, None),
    "agreement_on": ("str", None, None),
}
ARCHITECTURE_FACTS = {
    "cell": ("str", None, None),
    "layers": ("int", 1, None),
    "units": ("int", 1, None),
    "activation": ("str", None, None),
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of one graph input or output (None = dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor of a stateful step graph: fed in, and read back out."""

    input: str
    output: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "dtype": self.dtype,
            "shape": list(self.shape),
        }


@dataclass(frozen=True)
class ModelSpec:
    """Everything vocab.json says about a model: vocabulary, window, graph I/O, provenance.

    `chars` are in index order: the model's input index i and output column i mean chars[i].
    `seq_length` means two things, by mode: see `window` and `training_chunk`.
    """

    chars: tuple[str, ...]
    seq_length: int
    input: TensorSpec
    output: TensorSpec
    next: TensorSpec
    model_sha256: str
    mode: str = "window"
    states: tuple[StateSpec, ...] = ()
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    graph_builder: str = "native"

    @cached_property
    def char_to_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def stateful(self) -> bool:
        return self.mode == "stateful"

    @property
    def window(self) -> int | None:
        """Characters a window model reads per step (vocab.json's seq_length); None for a
        stateful model, whose seq_length is only the length of its training chunks."""
        return None if self.stateful else self.seq_length

    @property
    def training_chunk(self) -> int | None:
        """A stateful model's training chunk length (vocab.json's seq_length); None for a
        window model."""
        return self.seq_length if self.stateful else None

    @property
    def one_hot_op(self) -> bool:
        """Whether the trainer writes this model's one-hot encoding as an `OneHot` node
        (rather than a `Gather` from an identity table)."""
        return uses_one_hot_op(self.vocab_size)

    @property
    def version(self) -> int:
        """The format version the trainer writes for this model: the lowest that can
        describe it."""
        return max(MODE_VERSIONS[self.mode], ONE_HOT_OP_VERSION if self.one_hot_op else 0)

    @property
    def min_prompt(self) -> int:
        """Shortest usable prompt: a full window, or one character to start a stateful model."""
        return 1 if self.stateful else self.seq_length

    @property
    def sample_prompt(self) -> str:
        """The prompt to use when none is given: the start of the training corpus, recorded
        at export, or (for a file without one) the first character repeated to a window."""
        recorded = self.training.get("sample_prompt")
        if isinstance(recorded, str) and recorded:
            return recorded
        return self.chars[0] * self.seq_length

    @property
    def precisions(self) -> list[str]:
        """Precisions this model directory offers: always fp32, plus its variants."""
        return ["fp32", *sorted(self.variants)]

    def model_file(self, precision: str = "fp32") -> tuple[str, str]:
        """File name and expected sha256 of the graph for `precision`."""
        if precision == "fp32":
            return MODEL_FILE, self.model_sha256
        if precision not in self.variants:
            raise ModelNotFoundError(
                f"this model has no {precision} variant (it offers {', '.join(self.precisions)}); "
                f"export one with textgen-train export --quantize {precision}"
            )
        return MODEL_FILES[precision], self.variants[precision]["sha256"]

    def to_dict(self) -> dict[str, Any]:
        # format and version first, so a reader (human or program) sees them before anything else.
        graph = {
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "next": self.next.to_dict(),
        }
        if self.stateful:
            graph["states"] = [state.to_dict() for state in self.states]
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "mode": self.mode,
            "chars": list(self.chars),
            "seq_length": self.seq_length,
            "graph": graph,
            "model_sha256": self.model_sha256,
            **({"graph_builder": self.graph_builder} if self.stateful else {}),
            "variants": {k: dict(v) for k, v in self.variants.items()},
            "architecture": dict(self.architecture),
            "training": dict(self.training),
        }

    def to_json(self) -> str:
        # ensure_ascii keeps the file readable on any terminal whatever the corpus' script.
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = VOCAB_FILE) -> ModelSpec:
        """Parse and validate vocab.json; raise ArtifactError naming the first problem.

        Only what the trainer writes parses: UTF-8 (json.loads would also take UTF-16 and
        UTF-32, which other readers do not) and one value per key. A repeated key is how a
        file shows one reader one vocabulary and another reader another: Python and
        JavaScript keep the last value, other parsers the first."""
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            doc = json.loads(
                text, parse_constant=_no_constants, object_pairs_hook=_one_value_per_key
            )
        except _RepeatedKey as exc:
            raise ArtifactError(
                f"{source} is malformed: {exc}; re-export the model with textgen-train"
            ) from None
        except UnicodeDecodeError as exc:
            raise ArtifactError(
                f"{source} is not UTF-8 (bad byte at offset {exc.start}); re-export the model "
                "with textgen-train export"
            ) from None
        except ValueError as exc:
            raise ArtifactError(
                f"{source} is not valid JSON ({exc}); re-export the model with textgen-train export"
            ) from None
        except RecursionError:  # a few hundred KB of brackets nest deeper than Python recurses
            raise ArtifactError(
                f"{source} nests too deeply to be a vocabulary file; re-export the model "
                "with textgen-train export"
            ) from None
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = VOCAB_FILE) -> ModelSpec:
        """Validate a parsed vocab.json document field by field."""
        v = _Validator(source)
        v.check(isinstance(doc, dict), "the top level is not a JSON object")
        v.check(doc.get("format") == FORMAT_NAME, f"its format is not {FORMAT_NAME!r}")
        version = doc.get("version")
        v.check(_is_int(version), "its version is missing or not an integer")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(
                f"{source} has format version {version}, but this runtime reads version(s) "
                f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}; "
                "upgrade rnn-textgen or re-export the model"
            )
        mode = doc.get("mode")
        v.check(_one_of(mode, MODES), f"mode {short_repr(mode)} is not one of {sorted(MODES)}")
        v.check(
            MODE_VERSIONS[mode] <= version,
            f"mode {mode!r} needs format version {MODE_VERSIONS[mode]} or later",
        )

        chars = doc.get("chars")
        v.check(
            isinstance(chars, list) and 0 < len(chars) <= MAX_CHARS,
            f"chars must be a non-empty list of at most {MAX_CHARS} characters",
        )
        v.check(
            all(isinstance(c, str) and len(c) == 1 and not _surrogate(c) for c in chars),
            "every entry of chars must be a single Unicode character",
        )
        v.check(len(set(chars)) == len(chars), "chars holds the same character twice")

        seq_length = doc.get("seq_length")
        v.check(
            _is_int(seq_length) and 1 <= seq_length <= MAX_SEQ_LENGTH,
            f"seq_length must be an integer from 1 to {MAX_SEQ_LENGTH}",
        )

        graph = doc.get("graph")
        v.check(isinstance(graph, dict), "graph is missing or not an object")
        inp = _tensor(v, graph.get("input"), "graph.input", INPUT_DTYPES)
        out = _tensor(v, graph.get("output"), "graph.output", OUTPUT_DTYPES)
        nxt = _tensor(v, graph.get("next"), "graph.next", NEXT_DTYPES)
        states = _states(v, graph.get("states"), mode)
        names = [inp.name, out.name, nxt.name, *(n for s in states for n in (s.input, s.output))]
        v.check(len(set(names)) == len(names), "two graph tensors have the same name")

        sha = doc.get("model_sha256")
        v.check(
            isinstance(sha, str) and bool(_SHA256.match(sha)),
            "model_sha256 must be 64 lowercase hex digits",
        )

        builder = doc.get("graph_builder", "native")
        v.check(
            _one_of(builder, frozenset(GRAPH_BUILDERS)),
            f"graph_builder {short_repr(builder)} is not one of {list(GRAPH_BUILDERS)}",
        )
        v.check(
            builder == "native" or mode == "stateful",
            f"graph_builder {builder!r} is for stateful models only",
        )

        variants = doc.get("variants", {})
        v.check(isinstance(variants, dict), "variants must be an object")
        for precision, variant in variants.items():
            v.check(
                precision in MODEL_FILES and precision != "fp32",
                f"variants.{precision} is not one of {sorted(set(MODEL_FILES) - {'fp32'})}",
            )
            v.check(
                isinstance(variant, dict)
                and isinstance(variant.get("sha256"), str)
                and bool(_SHA256.match(variant["sha256"])),
                f"variants.{precision}.sha256 must be 64 lowercase hex digits",
            )
            for key, (kind, low, high) in VARIANT_FACTS.items():
                value = variant.get(key)
                v.check(
                    value is None or _fact_ok(value, kind, low, high),
                    f"variants.{precision}.{key} must be {_fact_text(kind, low, high)}",
                )

        architecture = doc.get("architecture", {})
        training = doc.get("training", {})
        v.check(isinstance(architecture, dict), "architecture must be an object")
        v.check(isinstance(training, dict), "training must be an object")
        for name, value in (
            ("architecture", architecture),
            ("training", training),
            ("variants", variants),
        ):
            v.check(
                _plain(value),
                f"{name} holds a value JSON cannot carry (NaN, infinity, nesting over "
                f"{MAX_FACT_DEPTH} levels, a lone surrogate)",
            )
        for key, (kind, low, high) in ARCHITECTURE_FACTS.items():
            value = architecture.get(key)
            v.check(
                value is None or _fact_ok(value, kind, low, high),
                f"architecture.{key} must be {_fact_text(kind, low, high)}",
            )
        prompt = training.get("sample_prompt")
        v.check(
            prompt is None or (isinstance(prompt, str) and len(prompt) <= MAX_SEQ_LENGTH),
            "training.sample_prompt must be a string",
        )
        # The start of the training text, as the trainer records it: the prompt commands use
        # when given none, so it must be one the model reads.
        v.check(
            prompt is None
            or (
                len(prompt) >= (1 if mode == "stateful" else seq_length)
                and set(prompt) <= set(chars)
            ),
            "training.sample_prompt must be at least a window of the model's own characters",
        )
        return cls(
            chars=tuple(chars),
            seq_length=seq_length,
            input=inp,
            output=out,
            next=nxt,
            states=states,
            model_sha256=sha,
            mode=mode,
            variants=variants,
            architecture=architecture,
            training=training,
            graph_builder=builder,
        )

    @classmethod
    def read(cls, model_dir: Path) -> ModelSpec:
        """Read `model_dir/vocab.json`, refusing files over MAX_VOCAB_BYTES before parsing."""
        path = Path(model_dir) / VOCAB_FILE
        data = read_capped(path, MAX_VOCAB_BYTES, "it is not a vocabulary file")
        return cls.from_json(data, source=str(path))


class _Validator:
    """Raises one ArtifactError per failed check, always naming the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            raise ArtifactError(
                f"{self.source} is malformed: {problem}; re-export the model with textgen-train"
            )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _RepeatedKey(ValueError):
    pass


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _RepeatedKey(f"key {short_repr(key)} appears twice in one object")
        doc[key] = value
    return doc


def _plain(x: Any, depth: int = 0) -> bool:
    """Finite JSON data only: NaN and infinity are not JSON, and would not round-trip; a lone
    surrogate cannot be encoded to print or to write back."""
    if depth > MAX_FACT_DEPTH:
        return False
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, str):
        return not any(_surrogate(c) for c in x)
    if isinstance(x, dict):
        return all(_plain(k, depth) and _plain(v, depth + 1) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v, depth + 1) for v in x)
    return x is None or isinstance(x, int | bool)


def _surrogate(c: str) -> bool:
    return "\ud800" <= c <= "\udfff"


def _fact_ok(value: Any, kind: str, low: float | None, high: float | None) -> bool:
    if kind == "str":
        return isinstance(value, str) and len(value) <= 256
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "int" and not isinstance(value, int):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _fact_text(kind: str, low: float | None, high: float | None) -> str:
    if kind == "str":
        return "a short string"
    noun = "a whole number" if kind == "int" else "a number"
    if high is None:
        return f"{noun} of at least {low}"
    return f"{noun} from {low} to {high}"


def printable(text: str) -> str:
    """`text` with every character a terminal would act on (control, format, separator
    characters, lone surrogates) written as a Python escape: strings from a model file
    must not move the cursor, retitle the window or forge a line."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def short_repr(x: Any, limit: int = 40) -> str:
    """repr() cut to a length that keeps an error message on one readable line."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_of(x: Any, allowed: frozenset[str] | dict[str, Any]) -> bool:
    """Membership that a hostile document cannot turn into a TypeError (a list is unhashable)."""
    return isinstance(x, str) and x in allowed


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tensor(v: _Validator, doc: Any, where: str, dtypes: frozenset[str]) -> TensorSpec:
    v.check(isinstance(doc, dict), f"{where} is missing or not an object")
    name, dtype, shape = doc.get("name"), doc.get("dtype"), doc.get("shape")
    v.check(isinstance(name, str) and 0 < len(name) <= 256, f"{where}.name must be a short string")
    v.check(_one_of(dtype, dtypes), f"{where}.dtype must be one of {sorted(dtypes)}")
    v.check(
        isinstance(shape, list)
        and 1 <= len(shape) <= 8
        and all(d is None or (_is_int(d) and d > 0) for d in shape),
        f"{where}.shape must be a list of positive integers or null",
    )
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


def _states(v: _Validator, doc: Any, mode: str) -> tuple[StateSpec, ...]:
    if mode != "stateful":
        v.check(doc is None, "graph.states is only for stateful models")
        return ()
    v.check(
        isinstance(doc, list) and 1 <= len(doc) <= 64,
        "graph.states must list the stateful graph's state tensors",
    )
    out = []
    for i, state in enumerate(doc):
        where = f"graph.states[{i}]"
        v.check(isinstance(state, dict), f"{where} is not an object")
        names = state.get("input"), state.get("output")
        v.check(
            all(isinstance(n, str) and 0 < len(n) <= 256 for n in names),
            f"{where} needs input and output names",
        )
        v.check(_one_of(state.get("dtype"), STATE_DTYPES), f"{where}.dtype must be float32")
        shape = state.get("shape")
        v.check(
            isinstance(shape, list)
            and len(shape) == 2
            and shape[0] is None
            and _is_int(shape[1])
            and shape[1] > 0,
            f"{where}.shape must be [null, units]",
        )
        out.append(StateSpec(input=names[0], output=names[1], shape=tuple(shape)))
    return tuple(out)


# Opening a FIFO to read waits for a writer (forever, in a crafted model directory):
# without blocking the open returns at once, and what it opened is checked before a read.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def read_capped(path: Path, limit: int, too_big: str) -> bytes:
    """The bytes of `path`, a regular file (not a FIFO, device or directory, which could
    block, never end or hold no bytes), refusing a file over `limit` before reading it all;
    every OS error (missing, unreadable, a name too long) is the runtime's own one-line
    error."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
                raise ArtifactError(
                    f"{path} is {kind}, not a regular file; copy the files textgen-train "
                    "wrote into the model directory"
                )
            if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
                os.set_blocking(fd, True)  # a regular file: reads as any file does (FUSE too)
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(limit + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"{path} not found; a model directory needs {MODEL_FILE} and {VOCAB_FILE} (and "
            "any variant it lists) from one export of textgen-train"
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions"
        ) from None
    if len(data) > limit:
        raise ArtifactError(f"{path} is larger than {limit:,} bytes; {too_big}")
    return data


def take_mode(new: Path, old: Path) -> None:
    """Give `new`, a directory about to replace `old`, old's mode and group: mkdtemp makes
    it 0700 in the user's own group, and a shared model directory (2775, a team's group)
    became private with each export. The group stays the user's where they are not in
    old's."""
    st = old.stat()
    os.chmod(new, stat.S_IMODE(st.st_mode))
    if new.stat().st_gid != st.st_gid:
        with contextlib.suppress(OSError):
            os.chown(new, -1, st.st_gid)


def default_model_dir() -> Path:
    """The shipped default model: inside the installed package, or artifacts/ in a checkout."""
    packaged = Path(__file__).parent / "_default_model"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "artifacts" / "default"


def bits_per_char(loss_nats: float) -> float:
    """Cross-entropy in nats per character, expressed in bits."""
    return loss_nats / math.log(2)


__all__ = [
    "FORMAT_NAME",
    "GRAPH_BUILDERS",
    "NEWEST_VERSION",
    "MODEL_FILE",
    "VOCAB_FILE",
    "ModelSpec",
    "StateSpec",
    "TensorSpec",
    "bits_per_char",
    "default_model_dir",
    "printable",
]
