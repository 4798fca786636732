"""Reading a training corpus and turning it into character indices and windows."""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorpusError

# The notebook's one sentence: the corpus when the user names none.
DEFAULT_TEXT = "This is Zindua School a software training institute"


# Compressed corpora, known by their first bytes: (magic, what it is, the command that
# unpacks it to stdout, for a --corpus <(...) the error suggests).
ARCHIVES = (
    (b"\x1f\x8b", "gzip-compressed", "zcat"),
    (b"BZh", "bzip2-compressed", "bzcat"),
    (b"\xfd7zXZ\x00", "xz-compressed", "xzcat"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstdcat"),
    (b"PK\x03\x04", "a zip archive", "unzip -p"),
)


@dataclass(frozen=True)
class Corpus:
    """A training text, its sorted vocabulary and the text as vocabulary indices."""

    text: str
    chars: tuple[str, ...]
    ids: np.ndarray
    name: str

    @classmethod
    def from_text(cls, text: str, name: str = "<builtin sentence>") -> Corpus:
        chars = tuple(sorted(set(text)))
        index = {c: i for i, c in enumerate(chars)}
        ids = np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
        return cls(text=text, chars=chars, ids=ids, name=name)

    @classmethod
    def read(cls, path: Path | None) -> Corpus:
        """Read a UTF-8 file (a leading BOM is dropped); None gives the notebook's sentence."""
        if path is None:
            return cls.from_text(DEFAULT_TEXT)
        path = Path(path)
        try:
            # A device (/dev/zero, /dev/urandom, a terminal) never ends: refused before a
            # read. A FIFO is a stream that does (`--corpus <(zcat corpus.gz)`): read.
            mode = os.stat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
                raise CorpusError(
                    f"corpus {path} is a device or socket, not a text file; pass a UTF-8 text file"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorpusError(f"corpus file {path} not found; pass --corpus FILE") from None
        except IsADirectoryError:
            raise CorpusError(f"corpus {path} is a directory; pass a UTF-8 text file") from None
        except OSError as exc:
            raise CorpusError(f"cannot read corpus {path}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # what Windows tools call "Unicode"
                raise CorpusError(
                    f"corpus {path} is UTF-16 (it starts with a UTF-16 byte-order mark), not "
                    "UTF-8; convert it, e.g. iconv -f UTF-16 -t UTF-8"
                ) from None
            for magic, kind, unpack in ARCHIVES:
                if data.startswith(magic):
                    raise CorpusError(
                        f"corpus {path} is {kind}, not text; pass its text, e.g. "
                        f"--corpus <({unpack} {shlex.quote(str(path))})"
                    ) from None
            raise CorpusError(
                f"corpus {path} is not UTF-8 (bad byte at offset {exc.start}); "
                "convert it, e.g. iconv -t UTF-8"
            ) from None
        if not text:
            raise CorpusError(f"corpus {path} is empty; give it some text to learn from")
        if len(set(text)) < 2:
            # Nothing to predict: every next character is certain (and Keras would score a
            # one-column output with binary accuracy, recording 0.0 at a loss of 0.0).
            raise CorpusError(
                f"corpus {path} repeats one character ({text[0]!r}); a model needs at least "
                "two different characters to learn anything"
            )
        return cls.from_text(text, name=path.name)

    def windows(self, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Every window of seq_length indices and the index that follows it.

        X is a strided view into `ids`, so it costs no memory of its own.
        """
        if len(self.text) < seq_length + 1:
            raise CorpusError(
                f"corpus {self.name} has {len(self.text)} characters; it needs at least "
                f"seq_length + 1 = {seq_length + 1} to make one training sample"
            )
        x = np.lib.stride_tricks.sliding_window_view(self.ids[:-1], seq_length)
        y = self.ids[seq_length:]
        return x, y

    def windows_in(self, chars: tuple[str, ...], seq_length: int) -> np.ndarray:
        """Windows of this text encoded with another model's vocabulary (for evaluation).

        Windows that hold a character the model does not know are skipped.
        """
        index = {c: i for i, c in enumerate(chars)}
        ids = np.fromiter(
            (index.get(c, -1) for c in self.text), dtype=np.int32, count=len(self.text)
        )
        if len(ids) < seq_length:
            raise CorpusError(f"corpus {self.name} is shorter than one window ({seq_length})")
        windows = np.lib.stride_tricks.sliding_window_view(ids, seq_length)
        known = windows[(windows >= 0).all(axis=1)]
        if len(known) == 0:
            unknown = sorted(set(self.text) - set(index))[:10]
            raise CorpusError(
                f"every window of corpus {self.name} has characters the model does not know "
                f"({', '.join(map(repr, unknown))}); evaluate on text from the same alphabet"
            )
        return known

    def sample_prompt(self, seq_length: int) -> str:
        """Three windows' worth of the corpus start: the prompt used to check and demo a model."""
        return self.text[: min(len(self.text) - 1, 3 * seq_length)]
