"""Loading a model directory: read and vet the bytes, build the session, check it.

Everything here happens once per `Generator.load`, before a character is generated; the
decode loop lives in `generator`. The order is the trust boundary: vocab.json is validated
(`artifact`), the model's bytes are read under a size cap and hashed, the same bytes are
vetted against the graphs our exporters write (`graph_rules`), and only then does
onnxruntime see them; afterwards the session's inputs and outputs are checked again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .artifact import ModelSpec, default_model_dir, read_capped
from .errors import ArtifactError, ModelNotFoundError
from .graph_rules import GATES, GraphMismatchError, GraphRuleError, ProtoError, vet_model
from .onnx_proto import Model

# Far above any character model (an LSTM 1024 x 3 is about 100 MB); a cap on what a hostile
# or mistaken file can make the runtime read and hash.
MAX_MODEL_BYTES = 512 * 1024 * 1024
# The most activation memory one Run of model.onnx may take: onnxruntime materializes every
# position of every row at once (the one-hot input, each layer's input projection and
# output), so a batch is split into Runs of as many rows as fit (a window LSTM 256 at
# window 100 took 930 MB for 2,048 windows in one Run; 65,536 would need about 30 GB).
RUN_BYTES = 64 << 20


def position_floats(spec: ModelSpec, model: Model | None = None) -> int:
    """Floats a Run of model.onnx holds per batch row and position: the one-hot input and,
    for each recurrent layer, its input projection (gates x units) and its output. From the
    vetted graph's layers, or without one (a session built elsewhere) from vocab.json's
    architecture facts, counting every layer as an LSTM (of 256 units where they do not
    say)."""
    from .step_graph import cells  # as make_step_sessions imports it

    if model is not None:
        layers = cells(model)
    else:
        arch = spec.architecture
        units, count = arch.get("units"), arch.get("layers", 1)
        layers = [("LSTM", units if isinstance(units, int) else 256)] * (
            count if isinstance(count, int) else 1
        )
    return spec.vocab_size + sum((GATES.get(op, 4) + 1) * units for op, units in layers)


def rows_per_run(floats: int, positions: int) -> int:
    """Batch rows one Run over `positions` may carry within RUN_BYTES."""
    return max(1, RUN_BYTES // (4 * max(1, positions) * max(1, floats)))


# What onnxruntime raises when a graph fails while running: RuntimeError from IO-bound
# Runs, and from `session.run` its own pybind classes, which are not RuntimeErrors (a fuzzed
# file whose Unsqueeze axes were [1, 1] escaped the load-time probe as `Fail`).
ORT_FAILURES: tuple[type[Exception], ...] = (
    RuntimeError,
    *(
        error
        for name in ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "EPFail")
        if isinstance(error := getattr(_ort_state, name, None), type)
        and issubclass(error, Exception)
    ),
)


@contextmanager
def model_failures() -> Iterator[None]:
    """Turn a failure inside onnxruntime into the runtime's ArtifactError: a hostile graph
    can pass every load check and fail only on some inputs (found by fuzzing)."""
    try:
        yield
    except ORT_FAILURES as exc:
        raise ArtifactError(f"the model failed while generating: {first_line(exc)}") from None


_ORT_DTYPES = {
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
    "float32": "tensor(float)",
}


def session_options(
    threads: int = 1, *, memory_arena: bool = False, spin: bool = False, reuse: bool = True
) -> ort.SessionOptions:
    """Session settings for tiny models on small devices.

    One thread is fastest for a model this size (handing work to a pool costs more than the
    math); spinning worker threads would burn CPU and battery between calls; and the CPU
    memory arena would keep a model's peak allocation reserved for the process' lifetime.

    `spin` lets the pool's threads spin only while a Run is in progress (they stop when it
    returns): for the stateful warm-up, which hands the pool one step after another.
    `reuse=False` gives every intermediate tensor a buffer of its own instead of sharing
    buffers between tensors whose lifetimes do not overlap: for graphs whose tensors are
    small and fixed (the greedy graph), where it measured 8-15% faster.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = memory_arena
    opts.enable_mem_reuse = reuse
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # int8 files keep GRU / RNN weights and the one-hot table as int8 + DequantizeLinear:
    # without QDQ handling onnxruntime folds those into float constants once, at load
    # (measured on a GRU 256 step: 18.8 µs folded, 46.2 µs dequantizing every step).
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if spin:  # measured: without it the pool spins on for ~35 ms of CPU after each Run
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


def default_warmup_threads() -> int:
    """Threads for a stateful warm-up: this machine's cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def read_model(
    path: str | Path | None, precision: str, max_model_bytes: int = MAX_MODEL_BYTES
) -> tuple[ModelSpec, bytes, Path, Model]:
    """vocab.json's spec, and the vetted bytes, path and parsed form of the graph for
    `precision`."""
    model_dir = Path(path) if path is not None else default_model_dir()
    if not _is_dir(model_dir):
        raise ModelNotFoundError(
            f"model directory {model_dir} not found; pass --model DIR with a directory "
            "written by textgen-train"
        )
    spec = ModelSpec.read(model_dir)
    file_name, sha256 = spec.model_file(precision)
    model_path = model_dir / file_name
    data = read_capped(model_path, max_model_bytes, "if it is really yours, raise max_model_bytes")
    # Hash, vet and load the same bytes: a file swapped after the check is never run.
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(
            f"{model_path} does not match the sha256 in vocab.json (corrupt, truncated or "
            "from another export); copy both files from the same export"
        )
    try:
        model = vet_model(data, spec, precision)
    except GraphMismatchError as exc:
        raise ArtifactError(
            f"{model_path} does not match vocab.json: {exc}; copy both files from the same export"
        ) from None
    except (ProtoError, GraphRuleError) as exc:
        raise ArtifactError(
            f"{model_path} is not a graph textgen-train writes ({exc}); refusing to load "
            "it: re-export the model with textgen-train export"
        ) from None
    return spec, data, model_path, model


def make_session(data: bytes, opts: ort.SessionOptions, model_path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped pybind errors
        raise ArtifactError(
            f"onnxruntime cannot load {model_path}: {first_line(exc)}; re-export the model"
        ) from None


class StepSessions(NamedTuple):
    """The sessions over a model's decomposed graphs (`runtime.step_graph`)."""

    step: ort.InferenceSession | None  # one character per Run, any batch (stateful models)
    greedy: ort.InferenceSession | None  # one greedy stream, GREEDY_STEPS characters per Run


def make_step_sessions(
    spec: ModelSpec,
    model: Model,
    precision: str,
    model_path: Path,
    *,
    threads: int = 1,
    memory_arena: bool = False,
    greedy: bool = True,
) -> StepSessions | None:
    """Sessions over the decomposed graphs of a model's vetted graph. A stateful model: the
    one-step graph, and the greedy graph where `greedy` asks for it and the model is narrow
    enough for one. A window model: the window greedy graph only (with `greedy`). None when
    `runtime.step_graph` does not recognize the graph or onnxruntime refuses what it
    built (model.onnx then runs every step)."""
    from .step_graph import GREEDY_STEPS, decompose_each, decompose_window, wants_greedy_graph

    if not spec.stateful:
        window = decompose_window(model, spec, precision, GREEDY_STEPS) if greedy else None
        if window is None:
            return None
        try:
            opts = session_options(threads, memory_arena=memory_arena, reuse=False)
            return StepSessions(None, make_session(window, opts, model_path))
        except ArtifactError:
            return None
    counts = (1, GREEDY_STEPS) if greedy and wants_greedy_graph(spec, precision) else (1,)
    graphs = decompose_each(model, spec, precision, counts)
    if graphs is None:
        return None
    # The greedy graph's tensors are a few kilobytes, for one stream: each gets its own
    # buffer (reuse=False), 0.6-0.9 us off a step at 64-256 units. The one-step graph's
    # grow with the batch, and it gained 0-3%: it shares them.
    options = [session_options(threads, memory_arena=memory_arena, reuse=n == 1) for n in counts]
    try:
        sessions = [make_session(g, o, model_path) for g, o in zip(graphs, options, strict=True)]
    except ArtifactError:  # model.onnx itself loaded; it can run the steps too
        return None
    return StepSessions(sessions[0], sessions[1] if len(sessions) > 1 else None)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name longer than the system allows, a loop of links
        return False


def check_session(spec: ModelSpec, session: ort.InferenceSession, model_path: Path) -> None:
    """The graph must take what vocab.json says and give [batch, vocab] probabilities.

    Window: char_ids [batch, seq_length]. Stateful: char_ids [batch, time] plus each state
    [batch, units] in, and each new state out.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}

    def fail(problem: str) -> None:
        raise ArtifactError(
            f"{model_path} does not match vocab.json: {problem}; "
            "copy both files from the same export"
        )

    expected_inputs = [spec.input.name, *(s.input for s in spec.states)]
    if sorted(inputs) != sorted(expected_inputs):
        fail(f"graph inputs are {sorted(inputs)}, vocab.json says {expected_inputs}")
    wanted = [(spec.output.name, spec.output.dtype), (spec.next.name, spec.next.dtype)]
    wanted += [(s.output, s.dtype) for s in spec.states]
    for name, dtype in wanted:
        if name not in outputs:
            fail(f"graph has no output named {name!r}")
        if outputs[name].type != _ORT_DTYPES[dtype]:
            fail(f"graph output {name!r} is {outputs[name].type}")
    inp, out = inputs[spec.input.name], outputs[spec.output.name]
    if inp.type != _ORT_DTYPES[spec.input.dtype]:
        fail(f"graph input type is {inp.type}")
    if len(inp.shape) != 2 or (not spec.stateful and inp.shape[1] != spec.seq_length):
        fail(f"graph input shape is {inp.shape}, vocab.json says seq_length {spec.seq_length}")
    if len(out.shape) != 2 or out.shape[1] != spec.vocab_size:
        fail(f"graph output shape is {out.shape}, vocab.json has {spec.vocab_size} characters")
    for state in spec.states:
        for name in (state.input, state.output):
            shape = (inputs | outputs)[name].shape
            if len(shape) != 2 or shape[1] != state.shape[1]:
                fail(f"state {name!r} has shape {shape}, vocab.json says {list(state.shape)}")
