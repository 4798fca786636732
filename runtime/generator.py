"""Greedy character generation from an exported model with onnxruntime and NumPy only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .artifact import MODEL_FILES, ModelSpec, default_model_dir, sha256_file
from .errors import ArtifactError, GenerationSettingsError, ModelNotFoundError, PromptError

# Far beyond any useful greedy continuation of a window model, small enough that a typo
# (an extra zero or three) is caught before it pins a device's CPU for minutes.
MAX_LENGTH = 100_000

_ORT_DTYPES = {
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
    "float32": "tensor(float)",
}


# A batch this size already saturates a core; more is almost certainly a mistake in a script.
MAX_BATCH = 65_536


def session_options(threads: int = 1, *, memory_arena: bool = False) -> ort.SessionOptions:
    """Session settings for tiny models on small devices.

    One thread is fastest for a model this size (handing work to a pool costs more than the
    math); spinning worker threads would burn CPU and battery between calls; and the CPU
    memory arena would keep a model's peak allocation reserved for the process' lifetime.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = memory_arena
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@dataclass
class Generator:
    """A loaded model: its validated vocab.json and an onnxruntime session.

    Build one with `Generator.load(path)`. Each call keeps its buffers to itself, so one
    Generator can serve several threads at once.
    """

    spec: ModelSpec
    session: ort.InferenceSession
    model_dir: Path
    precision: str = "fp32"
    _in_dtype: np.dtype = field(init=False, repr=False)
    _char_table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._in_dtype = np.dtype(self.spec.input.dtype)
        self._char_table = np.array(self.spec.chars, dtype=object)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        precision: str = "fp32",
        threads: int = 1,
        memory_arena: bool = False,
    ) -> Generator:
        """Load `path` (a directory with model.onnx and vocab.json; None = the default model).

        `precision` "int8" loads the quantized variant (model.int8.onnx) instead.
        Checks the graph file against the sha256 in vocab.json before onnxruntime parses it,
        then checks the graph's inputs and outputs against vocab.json.
        """
        if precision not in MODEL_FILES:
            raise GenerationSettingsError(
                f"precision must be one of {', '.join(MODEL_FILES)}, got {precision!r}"
            )
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise GenerationSettingsError(f"threads must be a positive integer, got {threads!r}")
        model_dir = Path(path) if path is not None else default_model_dir()
        if not model_dir.is_dir():
            raise ModelNotFoundError(
                f"model directory {model_dir} not found; pass --model DIR with a directory "
                "written by textgen-train"
            )
        spec = ModelSpec.read(model_dir)
        file_name, sha256 = spec.model_file(precision)
        model_path = model_dir / file_name
        if not model_path.is_file():
            raise ModelNotFoundError(
                f"{model_path} not found; re-export the model with textgen-train export"
            )
        if sha256_file(model_path) != sha256:
            raise ArtifactError(
                f"{model_path} does not match the sha256 in vocab.json (corrupt, truncated or "
                "from another export); copy both files from the same export"
            )
        try:
            session = ort.InferenceSession(
                str(model_path),
                sess_options=session_options(threads, memory_arena=memory_arena),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(
                f"onnxruntime cannot load {model_path}: {first}; re-export the model"
            ) from None
        _check_graph(spec, session, model_path)
        return cls(spec=spec, session=session, model_dir=model_dir, precision=precision)

    def encode(self, prompt: str) -> np.ndarray:
        """Character indices of `prompt`; raises PromptError if the model cannot read it."""
        if not isinstance(prompt, str) or prompt == "":
            raise PromptError(
                f"the prompt is empty; give at least {self.spec.seq_length} characters"
            )
        index = self.spec.char_to_index
        unknown = sorted({c for c in prompt if c not in index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise PromptError(
                f"the prompt has characters outside the model's vocabulary: {shown}{more}; "
                "use only characters from `textgen info`"
            )
        if len(prompt) < self.spec.seq_length:
            raise PromptError(
                f"the prompt has {len(prompt)} characters but the model reads windows of "
                f"{self.spec.seq_length}; give a longer prompt"
            )
        return np.fromiter((index[c] for c in prompt), dtype=self._in_dtype, count=len(prompt))

    def stream(self, prompt: str, length: int) -> Iterator[str]:
        """Yield `length` new characters one at a time, greedily, as the notebook's loop does:
        the last seq_length characters go in, the argmax comes out and is appended.

        The prompt is validated before the first character is produced.
        """
        _check_length(length)
        ids = self.encode(prompt)
        return self._stream(ids, length)

    def _stream(self, ids: np.ndarray, length: int) -> Iterator[str]:
        step, window, nxt = self._stepper(ids[None, -self.spec.seq_length :])
        row, chars = window[0], self.spec.chars
        for _ in range(length):
            step()
            c = int(nxt[0])
            row[:-1] = row[1:]
            row[-1] = c
            yield chars[c]

    def generate(self, prompt: str, length: int) -> str:
        """Return `prompt` followed by `length` greedily generated characters."""
        _check_length(length)
        return prompt + "".join(self._stream(self.encode(prompt), length))

    def generate_batch(self, prompts: Sequence[str], length: int) -> list[str]:
        """`generate` for many prompts at once: one onnxruntime Run per step for all of them."""
        _check_length(length)
        if isinstance(prompts, str) or not 1 <= len(prompts) <= MAX_BATCH:
            raise GenerationSettingsError(f"prompts must be a list of 1 to {MAX_BATCH} strings")
        windows = np.empty((len(prompts), self.spec.seq_length), dtype=self._in_dtype)
        for i, prompt in enumerate(prompts):
            try:
                windows[i] = self.encode(prompt)[-self.spec.seq_length :]
            except PromptError as exc:
                raise PromptError(f"prompt {i + 1} of {len(prompts)}: {exc}") from None
        out = self._generate_ids(windows, length)
        texts = self._char_table[out.T]
        return [p + "".join(row) for p, row in zip(prompts, texts, strict=True)]

    def _generate_ids(self, windows: np.ndarray, length: int) -> np.ndarray:
        """Greedy indices [length, batch] continuing each row of `windows` [batch, L]."""
        step, window, nxt = self._stepper(windows)
        out = np.empty((length, len(windows)), dtype=np.int64)
        for t in range(length):
            step()
            out[t] = nxt
            window[:, :-1] = window[:, 1:]
            window[:, -1] = nxt
        return out

    def _stepper(self, windows: np.ndarray) -> tuple[Callable[[], object], np.ndarray, np.ndarray]:
        """A zero-argument step that runs the graph on a copy of `windows`, and that copy
        and the `next` array the step writes into.

        Input and output are bound once to buffers owned by this call (IO binding), so a
        step allocates nothing and converts nothing: the caller shifts the window in place.
        The step holds the binding; the caller holds the buffers for as long as it steps.
        """
        window = np.ascontiguousarray(windows, dtype=self._in_dtype).copy()
        nxt = np.zeros(len(window), dtype=np.int64)
        io = self.session.io_binding()
        io.bind_input(
            self.spec.input.name, "cpu", 0, window.dtype, list(window.shape), window.ctypes.data
        )
        io.bind_output(self.spec.next.name, "cpu", 0, nxt.dtype, list(nxt.shape), nxt.ctypes.data)
        # The C-level entry point skips a Python wrapper frame: measured 15% of a step for
        # the default model. Older or newer wrappers without it get the public method.
        inner = getattr(self.session, "_sess", None)
        if inner is not None and hasattr(inner, "run_with_iobinding") and hasattr(io, "_iobinding"):
            step = partial(inner.run_with_iobinding, io._iobinding, ort.RunOptions())
        else:  # pragma: no cover - depends on the onnxruntime build
            step = partial(self.session.run_with_iobinding, io)
        return step, window, nxt


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
        raise GenerationSettingsError(
            f"length must be a whole number from 1 to {MAX_LENGTH}, got {length!r}"
        )


def _check_graph(spec: ModelSpec, session: ort.InferenceSession, model_path: Path) -> None:
    """The graph must take [batch, seq_length] indices and give [batch, vocab] probabilities."""
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fail(problem: str) -> None:
        raise ArtifactError(
            f"{model_path} does not match vocab.json: {problem}; "
            "copy both files from the same export"
        )

    if [i.name for i in inputs] != [spec.input.name]:
        fail(f"graph inputs are {[i.name for i in inputs]}, vocab.json says {spec.input.name!r}")
    by_name = {o.name: o for o in outputs}
    for tensor in (spec.output, spec.next):
        if tensor.name not in by_name:
            fail(f"graph has no output named {tensor.name!r}")
        if by_name[tensor.name].type != _ORT_DTYPES[tensor.dtype]:
            fail(f"graph output {tensor.name!r} is {by_name[tensor.name].type}")
    out, inp = by_name[spec.output.name], inputs[0]
    if inp.type != _ORT_DTYPES[spec.input.dtype]:
        fail(f"graph input type is {inp.type}")
    if len(inp.shape) != 2 or inp.shape[1] != spec.seq_length:
        fail(f"graph input shape is {inp.shape}, vocab.json says seq_length {spec.seq_length}")
    if len(out.shape) != 2 or out.shape[1] != spec.vocab_size:
        fail(f"graph output shape is {out.shape}, vocab.json has {spec.vocab_size} characters")
