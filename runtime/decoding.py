"""Decoding settings and sampling: greedy by default; temperature, top-k, top-p, seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import GenerationSettingsError

MAX_STOPS = 16
MAX_STOP_LENGTH = 1000


@dataclass(frozen=True)
class GenerationOptions:
    """Per-call settings. None means "the model's default", which is greedy decoding.

    Setting temperature, top_k or top_p samples instead: probabilities are sharpened or
    flattened by `temperature` (default 1.0), cut to the `top_k` most likely characters
    and to the smallest set whose probability reaches `top_p`, then drawn from with a
    generator seeded by `seed`: the same seed gives the same text every run, and each
    prompt of a batch the text it would get alone.
    Generation ends early when the text ends with one of `stop`.
    """

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        t, k, p = self.temperature, self.top_k, self.top_p
        if t is not None and not (_real(t) and t > 0 and math.isfinite(t)):
            raise GenerationSettingsError(f"temperature must be a number above 0, got {t!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise GenerationSettingsError(f"top_k must be a whole number of at least 1, got {k!r}")
        if p is not None and not (_real(p) and 0 < p <= 1):
            raise GenerationSettingsError(f"top_p must be in (0, 1], got {p!r}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise GenerationSettingsError(
                f"seed must be a whole number of at least 0, got {seed!r}"
            )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stop) > MAX_STOPS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stop
        ):
            raise GenerationSettingsError(
                f"stop must be at most {MAX_STOPS} non-empty strings of at most "
                f"{MAX_STOP_LENGTH} characters"
            )
        object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        return self.temperature is None and self.top_k is None and self.top_p is None

    def to_dict(self) -> dict[str, object]:
        return {
            "decoding": "greedy" if self.greedy else "sample",
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
        }


def _real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class Sampler:
    """Draws one character per row from a batch of probability rows, reproducibly."""

    def __init__(self, options: GenerationOptions) -> None:
        self.temperature = options.temperature or 1.0
        self.top_k = options.top_k
        self.top_p = options.top_p
        self.seed = options.seed
        self._rng: np.random.Generator | None = None
        # With a seed, every row draws the seed's t-th number at step t: a prompt in a batch
        # gets exactly the text it would get alone. Without one, rows draw independently.
        self.shared = options.seed is not None

    def _stream(self) -> np.random.Generator:
        if self._rng is None:  # made on first use: importing numpy.random costs ~10 ms
            self._rng = np.random.default_rng(self.seed)
        return self._rng

    def uniform(self, n: int) -> np.ndarray:
        """`n` draws from [0, 1), the next numbers of the seed's stream."""
        return self._stream().random(n)

    def draw(self) -> float:
        """The next number of the seed's stream (the one `uniform(1)` would give)."""
        return self._stream().random()

    def __call__(self, probs: np.ndarray, out: np.ndarray) -> None:
        """Write one drawn index per row of `probs` [batch, vocab] into `out` [batch]."""
        # One stream draws from its row as a 1-D array: the same arithmetic, in reductions
        # a third cheaper (a draw at vocabulary 73: 12 -> 8 us; 7.4 with the search below;
        # 5.9 without a normalization the draw's own scaling makes redundant).
        rows = probs[0] if len(probs) == 1 else probs
        # Work in log space: p ** (1 / T) without overflow, and -inf marks cut characters.
        # The most likely character is 0 before dividing, so a temperature near 0 (even
        # 1e-310) tends to greedy instead of overflowing every row to -inf; it stays the
        # largest (0 / T), so exp needs no second shift.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            logp = np.log(rows, dtype=np.float64)
            logp -= logp.max(axis=-1, keepdims=True)
            if self.temperature != 1.0:  # x / 1.0 is x: the division would change nothing
                logp /= self.temperature
        vocab = logp.shape[-1]
        if self.top_k is not None and self.top_k < vocab:
            kth = np.partition(logp, vocab - self.top_k, axis=-1)[..., vocab - self.top_k]
            logp[logp < kth[..., None]] = -np.inf
        p = np.exp(logp)
        if self.top_p is not None and self.top_p < 1:
            # Only top_p reads the mass as a fraction; the draw scales u by the cdf's end.
            p /= p.sum(axis=-1, keepdims=True)
            order = np.argsort(-p, axis=-1, kind="stable")
            ranked = np.take_along_axis(p, order, axis=-1)
            # Keep the most likely characters until their mass reaches top_p (at least one).
            cut = (ranked.cumsum(axis=-1) - ranked) >= self.top_p
            ranked[cut] = 0.0
            p = np.zeros_like(p)
            np.put_along_axis(p, order, ranked, axis=-1)
        cdf = p.cumsum(axis=-1)
        if rows.ndim == 1:
            # The characters whose cumulative mass is <= u: a binary search of the
            # non-decreasing cdf, 0.5 us under a compare and count (a NaN row draws 0 as the
            # count did: its cdf ends in NaN, and nothing compares <= NaN).
            u = self.draw() * cdf[-1]
            out[0] = min(int(cdf.searchsorted(u, "right")), vocab - 1) if u == u else 0
        else:
            u = self.uniform(1 if self.shared else len(probs))[:, None] * cdf[:, -1:]
            np.minimum((cdf <= u).sum(axis=1), vocab - 1, out=out)


class ProbeSampler(Sampler):
    """A sampler whose every draw is 0.5: runs the sampled path's arithmetic (a load-time
    check) without numpy.random, whose import is 10 ms of a greedy cold start."""

    def __init__(self) -> None:
        super().__init__(GenerationOptions(temperature=1.0, seed=0))

    def uniform(self, n: int) -> np.ndarray:
        return np.full(n, 0.5)

    def draw(self) -> float:
        return 0.5


class StopMatcher:
    """The one rule for stop strings: generation ends when the text (prompt included) ends
    with one of them, right after a generated character. Only the tail can match, so it
    keeps as many characters as the longest stop string."""

    def __init__(self, stops: Sequence[str], prompt: str) -> None:
        self.stops = tuple(stops)
        self.keep = max((len(s) for s in self.stops), default=0)
        self.tail = prompt[-self.keep :] if self.keep else ""

    def feed(self, ch: str) -> str | None:
        """Add one generated character; the stop string the text now ends with, or None."""
        self.tail = (self.tail + ch)[-self.keep :]
        for stop in self.stops:
            if self.tail.endswith(stop):
                return stop
        return None

    def cut(self, text: str) -> tuple[str, str | None]:
        """`text` (generated) up to and including the first stop, and that stop."""
        for i, ch in enumerate(text):
            stop = self.feed(ch)
            if stop is not None:
                return text[: i + 1], stop
        return text, None


@dataclass(frozen=True)
class GenerationResult:
    """What one generation produced and why it ended (as llm's Response: the caller prints
    what the library knows instead of working it out again)."""

    prompt: str
    text: str  # the generated characters only
    stopped: str  # "stop": a stop string ended it; "length": it reached the length asked for
    stop: str | None  # the stop string that ended it
    seconds: float  # wall time of the generation (the whole batch's, for a batch)

    @property
    def output(self) -> str:
        """The prompt followed by the generated text."""
        return self.prompt + self.text
