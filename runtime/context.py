"""Incremental use of a model: a context that grows a character at a time, its next-character
probabilities, scoring text, and word completion (the keyboard case).

A context reads each character once. For a stateful model it carries the recurrent state,
with the last character held back (`pending`) exactly as `Generator` does: the state covers
everything before it, and the next step feeds it. Reading `top()` runs that step once and
keeps its result, so appending the next character costs nothing more: one step per
character, whatever the context's length. A window model's context is its last
`seq_length` characters.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .binding import BoundRun
from .decoding import GenerationOptions, Sampler, StopMatcher
from .errors import ContextError, GenerationSettingsError, PromptError
from .loading import model_failures, rows_per_run

if TYPE_CHECKING:
    from .generator import Generator

# What `Context.text` keeps of a long context: the tail a stop string or a window needs is far
# shorter; the rest would only grow without bound in a long-running app.
MAX_TEXT_TAIL = 4096
# Word completion: characters per completion, and beams kept per step.
MAX_COMPLETION = 24
SAVE_MAGIC = b"rnn-textgen-context\n"
SCORE_CHUNK = 512  # window model: windows scored per Run


@dataclass
class ScoreResult:
    """How likely a text is under the model: cross-entropy in bits per character."""

    bits_per_char: float
    chars: int  # characters scored (a window model's first seq_length are context only)
    log_probs: list[float] | None = field(default=None, repr=False)  # natural log, per char


class Context:
    """A growing text and the model's view of it. Belongs to one thread at a time; one
    Generator serves many contexts. Build one with `Generator.context(prompt)`."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        # The last MAX_TEXT_TAIL characters fed: a deque, so a keystroke copies nothing.
        self._tail: deque[str] = deque(maxlen=MAX_TEXT_TAIL)
        self._length = 0  # characters fed in all
        spec = gen.spec
        if spec.stateful:
            # Two sets of state buffers: the current state, and the state after the pending
            # character, which a step writes; appending swaps them (nothing is copied).
            self._buf = [[np.zeros((1, s.shape[1]), np.float32) for s in spec.states]]
            self._buf.append([a.copy() for a in self._buf[0]])
            self._cur = 0
            self._stepped = False  # the step for the pending character has run
            self._pending: int | None = None
            self._bound: list[BoundRun] | None = None
        else:
            self._window: list[int] = []
        self._probs: np.ndarray | None = None  # next-character probabilities, once computed

    @property
    def text(self) -> str:
        """What was fed (its last MAX_TEXT_TAIL characters, for a long context)."""
        return "".join(self._tail)

    def __len__(self) -> int:
        return self._length

    def append(self, text: str) -> Context:
        """Feed `text` (each character read once); returns the context."""
        if not isinstance(text, str):
            raise PromptError(f"the text must be a string, got {type(text).__name__}")
        if not text:
            return self
        index = self.gen.spec.char_to_index.get(text) if len(text) == 1 else None
        # One character (a keystroke) skips the general encoder: it is most of the cost.
        ids = [index] if index is not None else [int(i) for i in self.gen.encode_any(text)]
        if self.gen.spec.stateful:
            self._append_stateful(ids)
        else:
            self._window = (self._window + ids)[-self.gen.spec.seq_length :]
            self._probs = None
        self._tail.extend(text)
        self._length += len(text)
        return self

    def _append_stateful(self, ids: list[int]) -> None:
        if self._pending is not None:
            if self._stepped:  # top() already ran the pending step: its state is current
                self._cur ^= 1
            else:
                ids = [self._pending, *ids]
        self._stepped = False
        self._pending = ids[-1]
        self._probs = None
        if len(ids) > 1:
            feed = np.array([ids[:-1]], dtype=self.gen._in_dtype)
            current = self._buf[self._cur]
            with model_failures():
                states = self.gen._feed(feed, current)
            for buf, value in zip(current, states, strict=True):
                np.copyto(buf, value)

    def _step(self) -> np.ndarray:
        """Run the pending character from the current state (one bound Run, as a generated
        character costs); the next state waits in the other buffers."""
        spec = self.gen.spec
        if self._bound is None:
            self._char = np.zeros((1, 1), dtype=self.gen._in_dtype)
            self._out = np.zeros((1, spec.vocab_size), np.float32)
            self._bound = self.gen._alternating_runs(
                self._char, {spec.output.name: self._out}, self._buf[0], self._buf[1]
            )
        self._char[0, 0] = self._pending
        with model_failures():
            self._bound[self._cur].run()
        self._stepped = True
        return self._out

    def _next_probs(self) -> np.ndarray:
        """Probabilities of the next character (computed once per position)."""
        if self._probs is not None:
            return self._probs
        spec = self.gen.spec
        if spec.stateful:
            if self._pending is None:
                raise PromptError("the context is empty; append at least one character")
            probs = self._step()
        else:
            if len(self._window) < spec.seq_length:
                raise PromptError(
                    f"the model reads windows of {spec.seq_length} characters and the context "
                    f"has only {len(self._window)}; append more text"
                )
            probs = self.gen._window_probs(np.array([self._window]))[0]
        self._probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        return self._probs

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The `k` most likely next characters with their probabilities, most likely first
        (ties: lower index first, as greedy decoding picks)."""
        vocab = self.gen.spec.vocab_size
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
            raise GenerationSettingsError(f"k must be a whole number from 1 to {vocab}, got {k!r}")
        probs = self._next_probs()
        order = np.argsort(-probs, kind="stable")[:k]
        chars = self.gen.spec.chars
        return [(chars[i], float(probs[i])) for i in order]

    def generate(self, length: int, options: GenerationOptions | None = None) -> str:
        """Generate up to `length` characters (greedy unless `options` say otherwise, ending
        at a stop string) and append them to the context; returns them."""
        from .generator import _check_length, _options

        options = _options(options)
        _check_length(length)
        sampler = None if options.greedy else Sampler(options)
        stops = StopMatcher(options.stop, self.text) if options.stop else None
        chars = self.gen.spec.chars
        picked = np.zeros(1, dtype=np.int64)
        out = []
        for _ in range(length):
            probs = self._next_probs()
            if sampler is None:
                index = int(np.argmax(probs))
            else:
                sampler(probs[None].astype(np.float32), picked)
                index = int(picked[0])
            ch = chars[index]
            out.append(ch)
            self.append(ch)
            if stops is not None and stops.feed(ch) is not None:
                break
        return "".join(out)

    def complete(self, k: int = 3, max_chars: int = MAX_COMPLETION) -> list[tuple[str, float]]:
        """The `k` most likely continuations up to the next word boundary (a character that
        is not a letter or digit), by beam search over characters, with their probabilities
        (the boundary's included), most likely first; one that reaches `max_chars` without a
        boundary is returned as it stands. The context itself does not change."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
            raise GenerationSettingsError(f"k must be a whole number from 1 to 64, got {k!r}")
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise GenerationSettingsError(
                f"max_chars must be a positive whole number, got {max_chars!r}"
            )
        self._next_probs()  # an unreadable context fails here, with its own message
        beams: list[tuple[float, str, Context]] = [(0.0, "", self)]
        done: list[tuple[float, str]] = []
        chars = self.gen.spec.chars
        for _ in range(max_chars):
            candidates: list[tuple[float, str, Context, int]] = []
            for logp, word, ctx in beams:
                probs = ctx._next_probs()
                for i in np.argsort(-probs, kind="stable")[:k]:
                    if probs[i] > 0:
                        candidates.append((logp + math.log(float(probs[i])), word, ctx, int(i)))
            candidates.sort(key=lambda c: -c[0])
            beams = []
            for logp, word, ctx, i in candidates[:k]:
                ch = chars[i]
                if ch.isalnum():
                    beams.append((logp, word + ch, ctx.fork().append(ch)))
                else:
                    done.append((logp, word))
            # Stop when k finished words beat every open beam (probabilities only shrink).
            finished = sorted((d[0] for d in done), reverse=True)
            if not beams or (len(finished) >= k and finished[k - 1] >= beams[0][0]):
                break
        done += [(logp, word) for logp, word, _ in beams]
        best: dict[str, float] = {}
        for logp, word in done:
            best[word] = max(best.get(word, -math.inf), logp)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        return [(word, math.exp(logp)) for word, logp in ranked]

    def fork(self) -> Context:
        """An independent copy: appending to either leaves the other as it was."""
        twin = Context.__new__(Context)
        twin.__dict__.update(self.__dict__)
        twin._tail = deque(self._tail, maxlen=MAX_TEXT_TAIL)
        if self.gen.spec.stateful:
            twin._buf = [[a.copy() for a in bufs] for bufs in self._buf]
            twin._bound = None  # bindings point at this context's buffers: the twin binds its own
        else:
            twin._window = list(self._window)
        return twin

    def save(self) -> bytes:
        """The context as bytes (model sha256, mode, state or window, text tail), for
        `Generator.restore`."""
        spec = self.gen.spec
        meta = {
            "model_sha256": spec.model_file(self.gen.precision)[1],
            "mode": spec.mode,
            "precision": self.gen.precision,
            "tail": self.text,
            "length": self._length,
        }
        arrays: list[np.ndarray] = []
        if spec.stateful:  # the state before the pending character, and that character
            meta["pending"] = self._pending
            arrays = [np.ascontiguousarray(a, np.float32) for a in self._buf[self._cur]]
        else:
            meta["window"] = self._window
        header = json.dumps(meta, ensure_ascii=True).encode()
        body = b"".join(a.tobytes() for a in arrays)
        return SAVE_MAGIC + len(header).to_bytes(4, "big") + header + body

    @classmethod
    def restore(cls, gen: Generator, data: bytes) -> Context:
        """The context `save()` wrote; ContextError if it is another model's or damaged."""
        spec = gen.spec
        bad = ContextError(
            "the saved context is damaged or not one rnn-textgen wrote; save it again"
        )
        if not isinstance(data, bytes | bytearray) or not data.startswith(SAVE_MAGIC):
            raise bad
        rest = bytes(data[len(SAVE_MAGIC) :])
        size = int.from_bytes(rest[:4], "big")
        try:
            meta = json.loads(rest[4 : 4 + size])
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise bad from None
        if not isinstance(meta, dict):
            raise bad
        if meta.get("model_sha256") != spec.model_file(gen.precision)[1]:
            raise ContextError(
                "the saved context belongs to another model (its sha256 differs); restore it "
                "with the model that saved it"
            )
        ctx = cls(gen)
        tail, length = meta.get("tail"), meta.get("length")
        if not isinstance(tail, str) or not isinstance(length, int) or length < len(tail):
            raise bad
        ctx._tail.extend(tail[-MAX_TEXT_TAIL:])
        ctx._length = length
        body = rest[4 + size :]
        if spec.stateful:
            units = [s.shape[1] for s in spec.states]
            pending = meta.get("pending")
            if len(body) != 4 * sum(units) or not (
                pending is None or (isinstance(pending, int) and 0 <= pending < spec.vocab_size)
            ):
                raise bad
            flat = np.frombuffer(body, np.float32)
            for buf, value in zip(ctx._buf[0], np.split(flat, np.cumsum(units)[:-1]), strict=True):
                np.copyto(buf, value[None])
            ctx._pending = pending
        else:
            window = meta.get("window")
            if (
                not isinstance(window, list)
                or len(window) > spec.seq_length
                or not all(isinstance(i, int) and 0 <= i < spec.vocab_size for i in window)
            ):
                raise bad
            ctx._window = window
        return ctx


def score(gen: Generator, text: str | Iterable[str], *, per_char: bool = False) -> ScoreResult:
    """Bits per character of `text` (a string, or an iterable of pieces for long texts read
    in bounded memory): each character's cross-entropy given everything before it; a
    window model's first `seq_length` characters are its context and are not scored, and a
    stateful model's first character is read from zero state."""
    pieces = [text] if isinstance(text, str) else text
    ctx = Context(gen)
    total = 0.0
    count = 0
    logs: list[float] | None = [] if per_char else None
    for piece in pieces:
        if not isinstance(piece, str):
            raise PromptError(f"the text must be a string, got {type(piece).__name__}")
        if gen.spec.stateful:
            for ch in piece:
                if len(ctx):
                    lp = math.log(max(float(ctx._next_probs()[gen.spec.char_to_index[ch]]), 1e-45))
                    total -= lp
                    count += 1
                    if logs is not None:
                        logs.append(lp)
                ctx.append(ch)
        else:
            total, count = _score_windows(gen, ctx, piece, total, count, logs)
    if count == 0:
        need = gen.spec.seq_length + 1 if not gen.spec.stateful else 2
        raise PromptError(f"the text is too short to score; give at least {need} characters")
    return ScoreResult(bits_per_char=total / count / math.log(2), chars=count, log_probs=logs)


def _score_windows(
    gen: Generator,
    ctx: Context,
    piece: str,
    total: float,
    count: int,
    logs: list[float] | None,
) -> tuple[float, int]:
    """Score `piece` after what `ctx` holds, a chunk of windows per Run."""
    seq = gen.spec.seq_length
    ids = np.concatenate([np.array(ctx._window, np.int64), gen.encode_any(piece)])
    targets = np.arange(len(ctx._window), len(ids))
    targets = targets[targets >= seq]
    # A view (row i = ids[i : i + seq]); no rows where the text is shorter than a window.
    every = np.lib.stride_tricks.sliding_window_view(ids, min(seq, len(ids)))
    chunk = min(SCORE_CHUNK, rows_per_run(gen.position_floats, seq))
    for start in range(0, len(targets), chunk):
        at = targets[start : start + chunk]
        windows = every[at - seq]  # the seq characters before each target (a copy)
        probs = gen._window_probs(windows)
        picked = np.maximum(probs[np.arange(len(at)), ids[at]].astype(np.float64), 1e-45)
        lp = np.log(picked)
        total -= float(lp.sum())
        count += len(at)
        if logs is not None:
            logs.extend(float(x) for x in lp)
    ctx._window = [int(i) for i in ids[-seq:]]
    ctx._length += len(piece)
    return total, count


def complete(
    gen: Generator, prompt: str, k: int = 3, max_chars: int = MAX_COMPLETION
) -> list[tuple[str, float]]:
    """`Context.complete` for a context that starts as `prompt`."""
    return gen.context(prompt).complete(k, max_chars)
