"""Greedy character generation from an exported model with onnxruntime and NumPy only."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .artifact import GRAPH_BUILDERS, MODEL_FILES, ModelSpec
from .binding import BoundRun
from .decoding import GenerationOptions, GenerationResult, ProbeSampler, Sampler, StopMatcher
from .errors import ArtifactError, GenerationSettingsError, PromptError
from .loading import (
    MAX_MODEL_BYTES,
    ORT_FAILURES,
    StepSessions,
    check_session,
    default_warmup_threads,
    first_line,
    make_session,
    make_step_sessions,
    model_failures,
    position_floats,
    read_model,
    rows_per_run,
    session_options,
)
from .step_graph import chosen_builder

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the app API loads on first use: a CLI that only generates skips it
    from .context import Context, ScoreResult

# Far beyond any useful greedy continuation of a window model, small enough that a typo
# (an extra zero or three) is caught before it pins a device's CPU for minutes.
MAX_LENGTH = 100_000

# A batch this size already saturates a core; more is almost certainly a mistake in a script.
MAX_BATCH = 65_536
# The most onnxruntime threads a session may ask for: a pool of 100,000 never finished
# starting, and of a million killed the process with no message.
MAX_THREADS = 256
# Characters one batch may generate in all (prompts x length): its indices and texts take a
# few hundred MB; beyond that a request is a mistake (65,536 x 100,000 would need 48 GiB).
MAX_BATCH_CHARS = 1 << 26
# Stateful warm-ups of at least this many characters (all prompts together) run on the
# threaded warm-up session: measured on an LSTM 256, 2 threads win from 16 characters (1.4x;
# 1.7x at 2,000) and lose below 4; a SimpleRNN 50 never splits its work, so it neither
# gains nor loses.
THREADED_WARM_UP = 16
# Stateful warm-up slices: an LSTM 256 projects a 4,096-character slice in 16 MB per prompt.
WARM_UP_SLICE = 4096
# A window model's window greedy graph is built once greedy calls have asked for this many
# characters: building it takes ~3 ms (7 in a fresh process) and it saves ~2.5 us a
# character of the default model, so a one-off short `textgen generate` never pays for it.
WINDOW_GRAPH_AFTER = 2000
# Greedy streams kept bound between calls, per Generator: as many as run at once, up to
# this; binding a stream's two Runs afresh costs ~60 us (22 tensors through IOBinding).
IDLE_STREAMS = 4
# Unknown characters in a text longer than this get no normal-form hint: normalizing it
# would cost more than the hint is worth.
MAX_HINT_TEXT = 1 << 20


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
    # Stateful models: a second session over the same bytes, with a thread pool, that
    # consumes long prompts (each recurrent step's matrix-vector product is split).
    warmup_session: ort.InferenceSession | None = field(default=None, repr=False)
    # Stateful models built "decomposed": the one-character graph generation steps run
    # (runtime.step_graph); None: `session` runs them too.
    step_session: ort.InferenceSession | None = field(default=None, repr=False)
    # ... and the greedy graph over the same weights, GREEDY_STEPS characters per Run, that
    # one greedy stream runs on (None: the one-step graph runs it; see wants_greedy_graph).
    # A window model's is the window greedy graph (see window_builder); `session` runs
    # everything else.
    greedy_session: ort.InferenceSession | None = field(default=None, repr=False)
    # Floats a Run of model.onnx holds per batch row and position (loading.position_floats):
    # batches, warm-ups and scoring are split into Runs of at most RUN_BYTES. 0: estimated
    # from vocab.json (a session built elsewhere).
    position_floats: int = field(default=0, repr=False)
    _in_dtype: np.dtype = field(init=False, repr=False)
    _char_table: np.ndarray = field(init=False, repr=False)
    # Greedy streams no call is using (see _greedy_stream); deque's append and pop are atomic.
    # Each Generator has its own (replace() makes a new one).
    _idle: deque[_GreedyStream] = field(init=False, repr=False, compare=False)
    # A window model's window greedy graph, until it is built (see _window_session).
    _window_graph: Callable[[], StepSessions | None] | None = field(
        init=False, repr=False, compare=False
    )
    _window_demand: int = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.position_floats:
            self.position_floats = position_floats(self.spec)
        self._in_dtype = np.dtype(self.spec.input.dtype)
        self._char_table = np.array(self.spec.chars, dtype=object)
        self._idle = deque(maxlen=IDLE_STREAMS)
        self._window_graph, self._window_demand = None, 0
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        precision: str = "fp32",
        threads: int = 1,
        warmup_threads: int | None = None,
        memory_arena: bool = False,
        max_model_bytes: int = MAX_MODEL_BYTES,
        graph_builder: str | None = None,
    ) -> Generator:
        """Load `path` (a directory with model.onnx and vocab.json; None = the default model).

        `precision` "int8" loads the quantized variant (model.int8.onnx) instead.
        `threads` run each generation step; `warmup_threads` (stateful models; default:
        the machine's cores, at most 4; 1 = none) consume long prompts.
        `graph_builder` overrides the choice of how generation steps run (vocab.json's for a
        stateful model, `step_graph.window_builder`'s for a window model): "native"
        (model.onnx) or "decomposed" (graphs built at load by `runtime.step_graph`).
        Before onnxruntime sees the graph, refuses a file over `max_model_bytes`, one whose
        sha256 differs from vocab.json's, and any graph that is not one textgen-train writes
        for this model (`runtime.graph_rules`); afterwards, checks the session's inputs and
        outputs against vocab.json and runs one probe step.
        """
        if precision not in MODEL_FILES:
            raise GenerationSettingsError(
                f"precision must be one of {', '.join(MODEL_FILES)}, got {precision!r}"
            )
        warmup_threads = default_warmup_threads() if warmup_threads is None else warmup_threads
        for name, value in (("threads", threads), ("warmup_threads", warmup_threads)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_THREADS
            ):
                raise GenerationSettingsError(
                    f"{name} must be a whole number from 1 to {MAX_THREADS}, got {value!r}"
                )
        if graph_builder is not None and graph_builder not in GRAPH_BUILDERS:
            raise GenerationSettingsError(
                f"graph_builder must be one of {', '.join(GRAPH_BUILDERS)}, got {graph_builder!r}"
            )
        spec, data, model_path, model = read_model(path, precision, max_model_bytes)
        model_dir = model_path.parent
        opts = session_options(threads, memory_arena=memory_arena)
        session = make_session(data, opts, model_path)
        steps: StepSessions | None = None
        decomposed = (graph_builder or chosen_builder(model, spec)) == "decomposed"
        if decomposed and spec.stateful:
            steps = make_step_sessions(
                spec, model, precision, model_path, threads=threads, memory_arena=memory_arena
            )
            if steps is None:
                log.warning(
                    "%s: not in the form the decomposed step builder reads; generating "
                    "with model.onnx itself",
                    model_path,
                )
        warm = None
        if spec.stateful and warmup_threads > 1:
            opts = session_options(warmup_threads, memory_arena=memory_arena, spin=True)
            warm = make_session(data, opts, model_path)
        try:
            check_session(spec, session, model_path)
            gen = cls(
                spec=spec,
                session=session,
                model_dir=model_dir,
                precision=precision,
                warmup_session=warm,
                step_session=steps.step if steps else None,
                greedy_session=steps.greedy if steps else None,
                position_floats=position_floats(spec, model),
            )
            if decomposed and not spec.stateful:  # built on first need: see _window_session
                gen._window_graph = partial(
                    make_step_sessions, spec, model, precision, model_path, threads=threads
                )
            gen._probe()
        except (*ORT_FAILURES, ValueError, UnicodeDecodeError) as exc:
            # Found by fuzzing: graphs that load but cannot run (mutated weight shapes, an
            # output of the wrong rank), or names that are not UTF-8.
            raise ArtifactError(
                f"{model_path} loads but does not run as vocab.json describes "
                f"({first_line(exc)}); re-export the model"
            ) from None
        return gen

    @classmethod
    def from_session(
        cls,
        spec: ModelSpec,
        session: ort.InferenceSession,
        model_dir: str | Path = ".",
        *,
        step_session: ort.InferenceSession | None = None,
        greedy_session: ort.InferenceSession | None = None,
    ) -> Generator:
        """A Generator over a session built elsewhere, without `load`'s file checks: for the
        exporter's own verification of a graph it has just built, and for tests."""
        return cls(
            spec=spec,
            session=session,
            model_dir=Path(model_dir),
            step_session=step_session,
            greedy_session=greedy_session,
        )

    @property
    def graph_builder(self) -> str:
        """How generation steps run: "decomposed" (graphs built from model.onnx's weights)
        or "native". A window model's window graph is built once its greedy calls need it
        (WINDOW_GRAPH_AFTER): "decomposed" from load, "native" if building it failed."""
        graphs = (self.step_session, self.greedy_session, self._window_graph)
        return "native" if all(g is None for g in graphs) else "decomposed"

    def _window_session(self, length: int) -> ort.InferenceSession | None:
        """A window model's window greedy graph, once greedy calls have asked for
        WINDOW_GRAPH_AFTER characters in all (this one's `length` included): built then,
        once, or never where the builder cannot read the graph (model.onnx runs it all)."""
        if self._window_graph is None:
            return self.greedy_session
        self._window_demand += length
        if self._window_demand < WINDOW_GRAPH_AFTER:
            return None
        with self._lock:
            if self._window_graph is not None:
                steps = self._window_graph()
                if steps is None:
                    log.warning(
                        "%s: not in the form the window graph builder reads; generating "
                        "with model.onnx itself",
                        self.model_dir,
                    )
                self.greedy_session = steps.greedy if steps else None
                self._window_graph = None
        return self.greedy_session

    def _probe(self) -> None:
        """One greedy and one sampled step on a dummy prompt, through the very bindings
        generation uses, so that a graph which cannot run fails here, at load."""
        # A stateful model's probe prompt is long enough to use its warm-up session too.
        n = THREADED_WARM_UP + 1 if self.spec.stateful else max(self.spec.min_prompt, 2)
        ids = np.zeros(n, dtype=self._in_dtype)
        vocab = self.spec.vocab_size
        for sampler in (None, ProbeSampler()):
            advance, chosen = self._decoder([ids], sampler)
            advance()
            for index in chosen.ravel().tolist():
                if not 0 <= index < vocab:
                    raise _out_of_range(index, vocab)

    def encode(self, prompt: str) -> np.ndarray:
        """Character indices of `prompt`; raises PromptError if the model cannot read it."""
        need = self.spec.min_prompt
        if not isinstance(prompt, str):
            raise PromptError(f"the prompt must be a string, got {type(prompt).__name__}")
        if prompt == "":
            raise PromptError(f"the prompt is empty; give at least {need} character(s)")
        ids = self.encode_any(prompt, "the prompt")
        if len(prompt) < need:
            raise PromptError(
                f"the model reads windows of {need} characters and the prompt has only "
                f"{len(prompt)}; give a longer prompt"
            )
        return ids

    def encode_any(self, text: str, what: str = "the text") -> np.ndarray:
        """Character indices of `text`, of any length; PromptError names unknown characters."""
        index = self.spec.char_to_index
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            shown = ", ".join(_shown_char(c) for c in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise PromptError(
                f"{what} has characters outside the model's vocabulary: {shown}{more}; "
                f"{_normal_form_hint(text, index)}use only characters from `textgen info`"
            )
        return np.fromiter((index[c] for c in text), dtype=self._in_dtype, count=len(text))

    def context(self, prompt: str = "") -> Context:
        """An incremental context starting with `prompt` (see runtime.context): append
        characters, read the next character's probabilities, generate, fork, save."""
        from .context import Context

        return Context(self).append(prompt)

    def restore(self, data: bytes) -> Context:
        """The context that `Context.save()` wrote; ContextError if another model's."""
        from .context import Context

        return Context.restore(self, data)

    def score(self, text: str | Iterable[str], *, per_char: bool = False) -> ScoreResult:
        """Bits per character of `text` under the model (see runtime.context.score)."""
        from .context import score

        return score(self, text, per_char=per_char)

    def complete(
        self, prompt: str, k: int = 3, max_chars: int | None = None
    ) -> list[tuple[str, float]]:
        """The `k` most likely continuations of `prompt` to the next word boundary, at most
        `max_chars` characters deep (default: runtime.context.MAX_COMPLETION)."""
        from .context import MAX_COMPLETION, complete

        return complete(self, prompt, k, MAX_COMPLETION if max_chars is None else max_chars)

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        """Next-character probabilities [n, vocab] of a window model's windows [n, L]."""
        feed = {self.spec.input.name: windows.astype(self._in_dtype)}
        with model_failures():
            return self.session.run([self.spec.output.name], feed)[0]

    def stream(
        self, prompt: str, length: int, options: GenerationOptions | None = None
    ) -> Iterator[str]:
        """Yield up to `length` new characters one at a time, as they are produced.

        Greedy unless `options` say otherwise. A window model does what the notebook's loop
        does: the last seq_length characters go in, the choice comes out and is appended. A
        stateful model reads the whole prompt once, then one character per step, carrying
        its state. Everything is validated before the first character is produced; the
        stream ends early when the text ends with one of `options.stop`.
        """
        options = _options(options)
        _check_length(length)
        ids = self.encode(prompt)
        return self._stream(prompt, ids, length, options)

    def _stream(
        self,
        prompt: str,
        ids: np.ndarray,
        length: int,
        options: GenerationOptions,
        ended: list[str | None] | None = None,
    ) -> Iterator[str]:
        """The decode loop (`tests/test_generator.py::notebook_loop` is the same loop
        written plainly). `ended`, if given, receives the stop string that ended it."""
        with model_failures():
            sampler = None if options.greedy else Sampler(options)
            advance, chosen = self._decoder([ids], sampler, length)
        column = chosen[:, 0]  # the characters of one Run: one, or the greedy graph's
        chars = self.spec.chars
        stops = StopMatcher(options.stop, prompt) if options.stop else None
        vocab = len(chars)
        if ended is None:
            ended = []
        with model_failures():  # one try around the loop: nothing added per character
            # Two loops with the same body, on purpose: with one character per Run, reading
            # a scalar instead of a Run's list is 2% of the default model's step.
            if len(column) == 1:
                for _ in range(length):
                    advance()
                    index = column.item()
                    if not 0 <= index < vocab:  # never a (negative) index into the table
                        raise _out_of_range(index, vocab)
                    ch = chars[index]
                    yield ch
                    if stops is not None and (stop := stops.feed(ch)) is not None:
                        ended.append(stop)
                        return
                return
            left = length
            while left:  # the greedy graph: its characters come in a list per Run
                advance()
                for index in column.tolist()[:left]:
                    if not 0 <= index < vocab:
                        raise _out_of_range(index, vocab)
                    ch = chars[index]
                    yield ch
                    if stops is not None and (stop := stops.feed(ch)) is not None:
                        ended.append(stop)
                        return
                left = max(0, left - len(column))

    def run(
        self, prompt: str, length: int, options: GenerationOptions | None = None
    ) -> GenerationResult:
        """Generate as `generate` does, and say how it went: the text, why it stopped (and
        on which stop string), and how long it took."""
        options = _options(options)
        _check_length(length)
        ids = self.encode(prompt)
        ended: list[str | None] = []
        start = time.perf_counter()
        text = "".join(self._stream(prompt, ids, length, options, ended))
        seconds = time.perf_counter() - start
        stop = ended[0] if ended else None
        return GenerationResult(prompt, text, "stop" if ended else "length", stop, seconds)

    def generate(self, prompt: str, length: int, options: GenerationOptions | None = None) -> str:
        """Return `prompt` followed by up to `length` generated characters (greedy unless
        `options` say otherwise; fewer if a stop string ends the text)."""
        return prompt + "".join(self.stream(prompt, length, options))

    def generate_batch(
        self, prompts: Sequence[str], length: int, options: GenerationOptions | None = None
    ) -> list[str]:
        """`generate` for many prompts at once: one onnxruntime Run per step for all of them."""
        return [r.output for r in self.run_batch(prompts, length, options)]

    def run_batch(
        self, prompts: Sequence[str], length: int, options: GenerationOptions | None = None
    ) -> list[GenerationResult]:
        """`run` for many prompts at once (one onnxruntime Run per step for all of them);
        each result's `seconds` is the whole batch's."""
        options = _options(options)
        _check_length(length)
        if isinstance(prompts, str) or not 1 <= len(prompts) <= MAX_BATCH:
            raise GenerationSettingsError(f"prompts must be a list of 1 to {MAX_BATCH} strings")
        if len(prompts) * length > MAX_BATCH_CHARS:
            raise GenerationSettingsError(
                f"{len(prompts):,} prompts x {length:,} characters is "
                f"{len(prompts) * length:,} characters, over the {MAX_BATCH_CHARS:,} one batch "
                "may generate; use fewer prompts per batch or a shorter length"
            )
        encoded = []
        for i, prompt in enumerate(prompts):
            try:
                encoded.append(self.encode(prompt))
            except PromptError as exc:
                raise PromptError(f"prompt {i + 1} of {len(prompts)}: {exc}") from None
        start = time.perf_counter()
        # Indices fit 16 bits (at most MAX_CHARS characters): a quarter of int64's memory.
        out = np.empty((length, len(prompts)), dtype=np.uint16)
        with model_failures():
            sampler = None if options.greedy else Sampler(options)
            advance, chosen = self._decoder(encoded, sampler, length)
            vocab = self.spec.vocab_size
            t = 0
            while t < length:
                advance()
                # Before the next step feeds it back: never an index outside the table.
                if chosen.min() < 0 or chosen.max() >= vocab:
                    raise _out_of_range(int(chosen[(chosen < 0) | (chosen >= vocab)][0]), vocab)
                n = min(len(chosen), length - t)
                out[t : t + n] = chosen[:n]
                t += n
        texts = ["".join(row) for row in self._char_table[out.T]]
        seconds = time.perf_counter() - start
        results = []
        for prompt, text in zip(prompts, texts, strict=True):
            stop = None
            if options.stop:
                text, stop = StopMatcher(options.stop, prompt).cut(text)
            stopped = "length" if stop is None else "stop"
            results.append(GenerationResult(prompt, text, stopped, stop, seconds))
        return results

    def _decoder(
        self, prompts: list[np.ndarray], sampler: Sampler | None = None, length: int = 0
    ) -> tuple[Callable[[], object], np.ndarray]:
        """Decoding state for encoded prompts, owned by this call.

        Returns `advance` and the `chosen` array [characters, prompts]: each advance() runs
        once, writes the characters it chose for every prompt into `chosen` (one per Run;
        GREEDY_STEPS on the greedy graph) and feeds the last back, so the following call
        continues the text. Greedy decoding reads the graph's own argmax (`next`);
        sampling reads `probs`. `length`: the characters the caller will ask for (a
        window model's window graph is built once enough have been asked for).
        """
        batch = len(prompts)
        nxt = np.zeros(batch, dtype=np.int64)
        pick: Callable[[], None] | None = None
        if sampler is None:
            target = {self.spec.next.name: nxt}
        else:
            probs = np.zeros((batch, self.spec.vocab_size), dtype=np.float32)
            target = {self.spec.output.name: probs}
            pick = partial(sampler, probs, nxt)
        if self.spec.stateful:
            return self._stateful_decoder(prompts, target, pick, nxt)
        if batch == 1 and pick is None and self._window_session(length) is not None:
            return self._window_decoder(prompts[0])
        window = np.stack([p[-self.spec.seq_length :] for p in prompts]).astype(self._in_dtype)
        if batch == 1 and pick is None:  # one greedy stream: 1-D slicing is cheaper than 2-D
            bound = BoundRun(self.session, {self.spec.input.name: window}, target)
            row = window[0]

            def advance() -> None:
                bound.run()
                row[:-1] = row[1:]
                row[-1] = nxt.item()

        else:
            # Runs over consecutive rows (views of the same buffers), within RUN_BYTES.
            rows = rows_per_run(self.position_floats, self.spec.seq_length)
            runs = [
                BoundRun(
                    self.session,
                    {self.spec.input.name: window[a : a + rows]},
                    _rows_of(target, a, rows),
                ).run
                for a in range(0, batch, rows)
            ]

            def advance() -> None:
                for run in runs:
                    run()
                if pick is not None:
                    pick()
                window[:, :-1] = window[:, 1:]  # shift in place: no allocation per step
                window[:, -1] = nxt

        return advance, nxt[None]

    def _stateful_decoder(
        self,
        prompts: list[np.ndarray],
        target: dict[str, np.ndarray],
        pick: Callable[[], None] | None,
        nxt: np.ndarray,
    ) -> tuple[Callable[[], None], np.ndarray]:
        spec, batch = self.spec, len(prompts)
        if batch == 1 and pick is None and self.greedy_session is not None:
            return self._greedy_decoder(prompts[0])
        here = [np.zeros((batch, s.shape[1]), np.float32) for s in spec.states]
        there = [np.zeros_like(a) for a in here]
        self._warm_up(prompts, here)
        char = np.array([[p[-1]] for p in prompts], dtype=self._in_dtype)
        # Runs over consecutive rows (views of the same buffers), within RUN_BYTES each:
        # nearly always one.
        rows = rows_per_run(self.position_floats, 1)
        chunks = [
            self._alternating_runs(
                char[a : a + rows],
                _rows_of(target, a, rows),
                [h[a : a + rows] for h in here],
                [h[a : a + rows] for h in there],
            )
            for a in range(0, batch, rows)
        ]
        # Alternates the two bindings of each chunk. The cycles hold the BoundRun objects
        # themselves, not just their run methods: they own the state buffers onnxruntime
        # writes into.
        if batch == 1 and pick is None:  # one greedy stream: scalar indexing is cheapest
            step = cycle(chunks[0]).__next__

            def advance() -> None:
                step().run()
                char[0, 0] = nxt[0]

            return advance, nxt[None]
        phase = cycle(list(zip(*chunks, strict=True))).__next__

        def advance() -> None:
            for bound in phase():
                bound.run()
            if pick is not None:
                pick()
            char[:, 0] = nxt

        return advance, nxt[None]

    def _greedy_decoder(self, prompt: np.ndarray) -> tuple[Callable[[], None], np.ndarray]:
        """One greedy stream on the greedy graph: each Run chooses the next GREEDY_STEPS
        characters."""
        stream = self._greedy_stream()
        for buf in stream.here:
            buf.fill(0.0)
        self._warm_up([prompt], stream.here)
        step = cycle(stream.runs).__next__  # from `here`, as the warm-up left it
        ids, chosen = stream.ids, stream.chosen
        ids[0, 0] = prompt[-1]

        def advance() -> None:
            step().run()
            ids[0, 0] = chosen[-1, 0]

        # Back to the idle streams when this call's decoder is gone (the end of its text,
        # or an abandoned stream collected): never while a call can still run it.
        weakref.finalize(advance, self._idle.append, stream)
        return advance, chosen

    def _window_decoder(self, prompt: np.ndarray) -> tuple[Callable[[], None], np.ndarray]:
        """One greedy stream of a window model on the window greedy graph: each Run
        chooses the next GREEDY_STEPS characters, each from the seq_length before it."""
        stream = self._greedy_stream()
        window, chosen = stream.ids[0], stream.chosen[:, 0]
        length, steps = len(window), len(chosen)
        window[:] = prompt[-length:]
        run = stream.runs[0].run

        def advance() -> None:
            run()
            if steps >= length:
                window[:] = chosen[-length:]
            else:
                window[:-steps] = window[steps:]
                window[-steps:] = chosen

        weakref.finalize(advance, self._idle.append, stream)  # as in _greedy_decoder
        return advance, stream.chosen

    def _greedy_stream(self) -> _GreedyStream:
        """An idle greedy stream of this Generator's greedy graph, or a new one."""
        from .step_graph import GREEDY_STEPS, greedy_outputs  # loaded with the session

        assert self.greedy_session is not None
        try:
            return self._idle.pop()
        except IndexError:
            pass
        chosen = np.zeros((GREEDY_STEPS, 1), dtype=np.int64)  # row k: step k's character
        names = greedy_outputs(self.spec, GREEDY_STEPS)
        target = {name: chosen[k] for k, name in enumerate(names)}
        if not self.spec.stateful:  # the window greedy graph reads one int64 window
            window = np.zeros((1, self.spec.seq_length), np.int64)
            bound = BoundRun(self.greedy_session, {self.spec.input.name: window[0]}, target)
            return _GreedyStream(window, chosen, [], [bound])
        here = [np.zeros((1, s.shape[1]), np.float32) for s in self.spec.states]
        there = [np.zeros_like(a) for a in here]
        ids = np.zeros((1, 1), np.int64)  # the greedy graph reads int64, as GatherND does
        runs = self._alternating_runs(ids, target, here, there, self.greedy_session)
        return _GreedyStream(ids, chosen, here, runs)

    def _alternating_runs(
        self,
        char: np.ndarray,
        target: dict[str, np.ndarray],
        here: list[np.ndarray],
        there: list[np.ndarray],
        session: ort.InferenceSession | None = None,
    ) -> list[BoundRun]:
        """Two bound step Runs over `char` [batch, 1] that swap the state buffers: the first
        reads `here` and writes `there`, the second the other way round, so no state is
        ever copied. `target`: the other outputs to write (name -> array). `session`: a
        decomposed graph to run (default: the one generation steps run on)."""
        spec = self.spec
        session = session or self.step_session or self.session
        # The decomposed graphs read the ids flat: a view of the same memory.
        ids = char.reshape(-1) if session is not self.session else char
        ins = [s.input for s in spec.states]
        outs = [s.output for s in spec.states]
        return [
            BoundRun(
                session,
                {spec.input.name: ids, **dict(zip(ins, a, strict=True))},
                {**target, **dict(zip(outs, b, strict=True))},
            )
            for a, b in ((here, there), (there, here))
        ]

    def _warm_up(self, prompts: list[np.ndarray], states: list[np.ndarray]) -> None:
        """Feed every prompt but its last character, from zero state, into `states`.

        Prompts of equal length share Runs; a long prompt goes through in slices of
        WARM_UP_SLICE characters (carrying the state), which bounds the memory an RNN op
        needs for its input projection.
        """
        spec = self.spec
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(len(p), []).append(i)
        for n, group in groups.items():
            if n < 2:
                continue
            # As many prompts per Run as fit RUN_BYTES over one slice's positions.
            step = rows_per_run(self.position_floats, min(n - 1, WARM_UP_SLICE))
            for a in range(0, len(group), step):
                rows = group[a : a + step]
                ids = np.stack([prompts[i][:-1] for i in rows]).astype(self._in_dtype)
                current = [np.zeros((len(rows), s.shape[1]), np.float32) for s in spec.states]
                current = self._feed(ids, current)
                for buf, value in zip(states, current, strict=True):
                    buf[rows] = value

    def _feed(self, ids: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        """A stateful model's states after reading `ids` [rows, n] from `states`, in slices
        of WARM_UP_SLICE characters, on the threaded session when there is enough work."""
        spec = self.spec
        session = self.session
        if self.warmup_session is not None and ids.size >= THREADED_WARM_UP:
            session = self.warmup_session
        outputs = [s.output for s in spec.states]
        for start in range(0, ids.shape[1], WARM_UP_SLICE):
            feed = {spec.input.name: ids[:, start : start + WARM_UP_SLICE]}
            feed |= {s.input: c for s, c in zip(spec.states, states, strict=True)}
            states = session.run(outputs, feed)
        return states


@dataclass
class _GreedyStream:
    """The buffers of one greedy stream and its two Runs bound to them (see
    `_alternating_runs`), kept for the next call while no call uses them."""

    ids: np.ndarray  # [1, 1] int64: the character the next Run starts from (a window: [1, L])
    chosen: np.ndarray  # [GREEDY_STEPS, 1]: the characters a Run chose
    here: list[np.ndarray]  # the states the first Run reads (the second writes them)
    runs: list[BoundRun]  # own every buffer above


def _rows_of(arrays: dict[str, np.ndarray], start: int, count: int) -> dict[str, np.ndarray]:
    """Rows start .. start + count of each array: views, for a Run over part of a batch."""
    return {name: arr[start : start + count] for name, arr in arrays.items()}


def _out_of_range(index: int, vocab: int) -> ArtifactError:
    return ArtifactError(
        f"the model chose character {index}, outside its vocabulary of {vocab}; "
        "the graph does not match vocab.json: re-export the model"
    )


def _options(options: GenerationOptions | None) -> GenerationOptions:
    if options is None:
        return GenerationOptions()
    if not isinstance(options, GenerationOptions):
        raise GenerationSettingsError("options must be a runtime.GenerationOptions")
    return options


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
        raise GenerationSettingsError(
            f"length must be a whole number from 1 to {MAX_LENGTH}, got {length!r}"
        )


def _shown_char(c: str) -> str:
    """A character for an error line: repr(), or for a combining mark, which would sit on
    the quote before it, its code point and name."""
    import unicodedata  # error paths only: not part of a cold start

    if unicodedata.category(c).startswith("M"):  # repr() escapes the other invisible ones
        return f"U+{ord(c):04X} ({unicodedata.name(c, 'a combining mark')})"
    return repr(c)


def _normal_form_hint(text: str, index: dict[str, int]) -> str:
    """Where the text reads in the model's vocabulary once its accents are composed (NFC)
    or decomposed (NFD), as pasted text and macOS file names often differ, say which."""
    import unicodedata

    if len(text) > MAX_HINT_TEXT:
        return ""
    for form in ("NFC", "NFD"):
        if all(c in index for c in unicodedata.normalize(form, text)):
            how = "composed" if form == "NFC" else "decomposed"
            return f"its Unicode {form} form (accents {how}) has none: normalize it to {form}; "
    return ""
