"""Greedy character generation from an exported model with onnxruntime and NumPy only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .artifact import MODEL_FILE, ModelSpec, default_model_dir, sha256_file
from .errors import ArtifactError, GenerationSettingsError, ModelNotFoundError, PromptError

# Far beyond any useful greedy continuation of a window model, small enough that a typo
# (an extra zero or three) is caught before it pins a device's CPU for minutes.
MAX_LENGTH = 100_000

_ORT_DTYPES = {"int32": "tensor(int32)", "int64": "tensor(int64)", "float32": "tensor(float)"}


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Session settings for tiny models on small devices.

    One thread is fastest for a model this size (thread hand-off costs more than the math),
    and spinning worker threads would burn CPU and battery between calls.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@dataclass
class Generator:
    """A loaded model: its validated vocab.json and an onnxruntime session.

    Build one with `Generator.load(path)`. Calls keep no state on the instance,
    so one Generator can serve several threads.
    """

    spec: ModelSpec
    session: ort.InferenceSession
    model_dir: Path
    _in_dtype: np.dtype = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._in_dtype = np.dtype(self.spec.input.dtype)

    @classmethod
    def load(cls, path: str | Path | None = None, *, threads: int = 1) -> Generator:
        """Load `path` (a directory with model.onnx and vocab.json; None = the default model).

        Checks model.onnx against the sha256 in vocab.json before onnxruntime parses it,
        then checks the graph's inputs and outputs against vocab.json.
        """
        model_dir = Path(path) if path is not None else default_model_dir()
        if not model_dir.is_dir():
            raise ModelNotFoundError(
                f"model directory {model_dir} not found; pass --model DIR with a directory "
                "written by textgen-train"
            )
        spec = ModelSpec.read(model_dir)
        model_path = model_dir / MODEL_FILE
        if not model_path.is_file():
            raise ModelNotFoundError(
                f"{model_path} not found; re-export the model with textgen-train export"
            )
        if sha256_file(model_path) != spec.model_sha256:
            raise ArtifactError(
                f"{model_path} does not match the sha256 in vocab.json (corrupt, truncated or "
                "from another export); copy both files from the same export"
            )
        try:
            session = ort.InferenceSession(
                str(model_path),
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(
                f"onnxruntime cannot load {model_path}: {first}; re-export the model"
            ) from None
        _check_graph(spec, session, model_path)
        return cls(spec=spec, session=session, model_dir=model_dir)

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
        window = self.spec.seq_length
        chars = self.spec.chars
        run = self.session.run
        outputs = [self.spec.output.name]
        feed_name = self.spec.input.name
        # One reused [1, window] buffer, shifted left in place: no allocation per step.
        buf = np.ascontiguousarray(ids[-window:].reshape(1, window))
        feed = {feed_name: buf}
        for _ in range(length):
            probs = run(outputs, feed)[0]
            nxt = int(probs[0].argmax())
            buf[0, :-1] = buf[0, 1:]
            buf[0, -1] = nxt
            yield chars[nxt]

    def generate(self, prompt: str, length: int) -> str:
        """Return `prompt` followed by `length` greedily generated characters."""
        return prompt + "".join(self.stream(prompt, length))


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
    if spec.output.name not in [o.name for o in outputs]:
        fail(f"graph has no output named {spec.output.name!r}")
    out = next(o for o in outputs if o.name == spec.output.name)
    inp = inputs[0]
    if inp.type != _ORT_DTYPES[spec.input.dtype] or out.type != _ORT_DTYPES[spec.output.dtype]:
        fail(f"graph types are {inp.type} -> {out.type}")
    if len(inp.shape) != 2 or inp.shape[1] != spec.seq_length:
        fail(f"graph input shape is {inp.shape}, vocab.json says seq_length {spec.seq_length}")
    if len(out.shape) != 2 or out.shape[1] != spec.vocab_size:
        fail(f"graph output shape is {out.shape}, vocab.json has {spec.vocab_size} characters")
