"""`textgen`: generate text from an exported model, or describe it."""

from __future__ import annotations

import codecs
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TextIO

import click
import onnxruntime as ort

from .artifact import MODEL_FILE, MODEL_FILES, VOCAB_FILE, printable
from .decoding import GenerationOptions, GenerationResult
from .errors import TextgenError
from .generator import MAX_BATCH, MAX_LENGTH, MAX_THREADS, Generator

MODEL_OPTION = click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Model directory (model.onnx + vocab.json). Default: the shipped model.",
)


class InterruptibleGroup(click.Group):
    """Ctrl-C anywhere (loading, generating, writing) ends with exit status 130, the shell's
    convention for SIGINT, instead of click's 'Aborted!' and 1. Both CLIs use it."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


@click.group(cls=InterruptibleGroup)
@click.version_option(package_name="rnn-textgen")
def main() -> None:
    """Generate text with a character-level RNN exported by textgen-train."""
    # onnxruntime's own log lines (coloured, before ours) would make an error two lines:
    # every failure it reports reaches the user as the runtime's one Error: line.
    ort.set_default_logger_severity(4)


def _error(exc: Exception) -> click.ClickException:
    """The one-line message of a runtime error, safe to print to a terminal."""
    return click.ClickException(printable(str(exc)))


PRECISION_OPTION = click.option(
    "--precision",
    type=click.Choice(list(MODEL_FILES)),
    default="fp32",
    show_default=True,
    help="Which graph to run: fp32 (model.onnx) or the int8 variant, if exported.",
)
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads (1 is fastest for small models).",
)
WARMUP_THREADS_OPTION = click.option(
    "--warmup-threads",
    type=click.IntRange(1, MAX_THREADS),
    default=None,
    help="Threads that consume a stateful model's prompt (1 = none).  "
    "[default: this machine's cores, at most 4]",
)


@main.command()
@click.argument("prompt", required=False)
@MODEL_OPTION
@click.option(
    "--length",
    "-n",
    type=click.IntRange(1, MAX_LENGTH),
    default=50,
    show_default=True,
    help="Most characters to generate.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Sample, with probabilities sharpened (<1) or flattened (>1).  [default: greedy]",
)
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=None,
    help="Sample from the K most likely characters.",
)
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Sample from the smallest set of characters with probability >= P.",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=None,
    help="Seed for sampling: the same seed gives the same text.",
)
@click.option(
    "--stop",
    multiple=True,
    metavar="STRING",
    help="End when the text ends with STRING (repeatable).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (JSON Lines with --prompts-file).",
)
@click.option(
    "--prompts-file",
    type=click.File("rb"),
    default=None,
    help="Generate for every line of FILE ('-' = stdin) in one batch; "
    "prints one completion per line.",
)
@PRECISION_OPTION
@THREADS_OPTION
@WARMUP_THREADS_OPTION
def generate(
    prompt: str | None,
    model_dir: Path | None,
    length: int,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    stop: tuple[str, ...],
    as_json: bool,
    prompts_file: BinaryIO | None,
    precision: str,
    threads: int,
    warmup_threads: int | None,
) -> None:
    """Print PROMPT followed by up to LENGTH generated characters, as they are produced.

    Greedy by default. PROMPT '-' reads the prompt from stdin; without PROMPT the model's
    sample prompt (the start of its training corpus) is used.
    """
    if prompt is not None and prompts_file is not None:
        raise click.UsageError("give either PROMPT or --prompts-file, not both")
    out = _stdout()
    try:
        options = GenerationOptions(
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop
        )
        if prompt == "-":
            prompt = _read_stdin_prompt()
        prompts = _read_prompts(prompts_file) if prompts_file is not None else None
        gen = Generator.load(
            model_dir, precision=precision, threads=threads, warmup_threads=warmup_threads
        )
        if prompts is not None:
            results = gen.run_batch(prompts, length, options)
            if as_json:
                lines = [_json(out, gen, r, options, length) for r in results]
            else:
                shown = _for_terminal if out.isatty() else str
                lines = [shown(r.output) for r in results]
                _check_encodable(out, "".join(lines))
            _echo(out, "\n".join(lines))
            return
        if prompt is None:
            prompt = gen.spec.sample_prompt
        if as_json:
            _echo(out, _json(out, gen, gen.run(prompt, length, options), options, length))
            return
        chars = gen.stream(prompt, length, options)
        # Checked before the first character: a stream never breaks off half-way.
        _check_encodable(out, prompt + "".join(gen.spec.chars))
        _print_stream(out, prompt, chars)
    except TextgenError as exc:
        raise _error(exc) from None


def _stdout() -> TextIO:
    """Standard output, or a one-line error when the shell closed it (`>&-`)."""
    if sys.stdout is None:
        raise click.ClickException(
            "standard output is closed; redirect it to a file or to /dev/null"
        )
    return sys.stdout


@contextmanager
def _writing() -> Iterator[None]:
    """Output failures as users meet them: a reader that left (`| head`) ends the command
    quietly with status 0; a full disk or a closed descriptor is one Error: line."""
    try:
        yield
    except BrokenPipeError:
        _drop_stdout()
        sys.exit(0)
    except OSError as exc:
        _drop_stdout()
        raise click.ClickException(
            f"cannot write the output: {exc.strerror or exc}; free some space or write it elsewhere"
        ) from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    with suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _echo(out: TextIO, text: str) -> None:
    with _writing():
        out.write(text + "\n")
        out.flush()


def _check_encodable(out: TextIO, text: str) -> None:
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise click.ClickException(
            f"standard output's encoding ({encoding}) cannot show "
            f"{printable(repr(exc.object[exc.start]))}, which this model can write; use a "
            "UTF-8 locale or PYTHONIOENCODING=utf-8, or --json (which escapes it)"
        ) from None
    except LookupError:
        return


def _utf(out: TextIO) -> bool:
    encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "")
    return encoding in ("utf8", "utf8sig")


# What a terminal shows as text, besides printable characters: the rest (escape sequences,
# C1 controls, bidirectional overrides: what a crafted vocabulary can make a model write,
# and a terminal would act on) reaches a terminal escaped. A pipe or file gets the text.
_SHOWN = frozenset("\n\t\r\u200c\u200d")  # ... and the zero-width (non-)joiners of emoji


def _for_terminal(text: str) -> str:
    """`text` as a terminal should get it: every character it would act on escaped."""
    return "".join(c if c.isprintable() or c in _SHOWN else printable(c) for c in text)


def _print_stream(out: TextIO, prompt: str, chars: Iterator[str]) -> None:
    """Write the prompt, then each character as it comes; Ctrl-C keeps what was printed."""
    # Per-character flushes are for a person watching; a pipe gets whole buffers.
    live = out.isatty()
    shown = _for_terminal if live else str
    with _writing():
        try:
            out.write(shown(prompt))
            out.flush()
            for ch in chars:
                out.write(shown(ch))
                if live:
                    out.flush()
            out.write("\n")
            out.flush()
        except KeyboardInterrupt:
            out.write("\n")
            out.flush()
            click.echo("interrupted", err=True)
            sys.exit(130)


def _read_stdin_prompt() -> str:
    if sys.stdin is None:
        raise click.ClickException(
            "standard input is closed; pipe a prompt in, or give it as an argument"
        )
    text = _read_input(sys.stdin.buffer, "standard input")
    # One trailing line ending (LF or CRLF) is the shell's, not the prompt's.
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


# The most bytes a prompt or a prompts file may hold (each is generated from whole): an
# endless stream (`yes | textgen generate -`, `--prompts-file /dev/zero`) ends with an
# error, not by taking every byte of memory the machine has. `score` reads in pieces.
MAX_INPUT_BYTES = 1 << 28


def _read_input(fh: BinaryIO, source: str) -> str:
    """The UTF-8 text of a stream or file the user gave, at most MAX_INPUT_BYTES."""
    data = fh.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise click.ClickException(
            f"{source} holds more than {MAX_INPUT_BYTES:,} bytes; split it into smaller parts"
        )
    return _decode(data, source)


# Bytes of a scored text read, decoded and scored at a time: `textgen score` reads a text
# of any length in bounded memory (a whole 20 MB text peaked at 600 MB RSS).
SCORE_PIECE = 1 << 20


def _pieces(fh: BinaryIO, source: str, *, keep_end: bool) -> Iterator[str]:
    """The UTF-8 text of `fh` (a byte-order mark dropped) in pieces of SCORE_PIECE bytes;
    its last line ending (LF, CRLF or CR) left out unless `keep_end`."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    held, offset = "", 0
    while True:
        data = fh.read(SCORE_PIECE)
        start = offset - len(decoder.getstate()[0])  # the file offset of what decode reads
        offset += len(data)
        try:
            text = held + decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise _not_utf8(source, start + exc.start) from None
        body = text if keep_end else text.removesuffix("\n").removesuffix("\r")
        yield body
        if not data:
            return
        held = text[len(body) :]  # the ending, until a later piece shows it is not the last


def _encodes(text: str) -> bool:
    """Whether `text` is UTF-8-encodable (a path's undecodable bytes are not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark dropped), or a one-line error naming the bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(source, exc.start) from None


def _not_utf8(source: str, offset: int) -> click.ClickException:
    return click.ClickException(
        f"{source} is not UTF-8 (bad byte at offset {offset}); convert it first"
    )


def _json(
    out: TextIO,
    gen: Generator,
    result: GenerationResult,
    options: GenerationOptions,
    length: int,
) -> str:
    return json.dumps(
        {
            "prompt": result.prompt,
            "text": result.text,
            "output": result.output,
            "stopped": result.stopped,
            "stop": result.stop,
            "settings": {**options.to_dict(), "length": length},
            "model": {
                "dir": str(gen.model_dir),
                "mode": gen.spec.mode,
                "precision": gen.precision,
                "sha256": gen.spec.model_file(gen.precision)[1],
            },
            "timing": {
                "seconds": round(result.seconds, 6),
                "characters": len(result.text),
                "characters_per_second": (
                    round(len(result.text) / result.seconds, 1) if result.seconds else None
                ),
            },
        },
        # \u escapes where the terminal cannot show the text, where a terminal would act
        # on it (below), or where a directory's name holds bytes that are not UTF-8
        # (Python's lone surrogates): still the same JSON.
        ensure_ascii=not _utf(out)
        or not _encodes(str(gen.model_dir))
        or (out.isatty() and _for_terminal(result.output) != result.output),
    )


def _read_prompts(fh: BinaryIO) -> list[str]:
    """One prompt per line: split on LF only (a prompt may hold other separators), a CR
    before it dropped, as is the byte-order mark of a file saved by Windows tools."""
    name = getattr(fh, "name", "the prompts file")
    name = "standard input" if name in ("<stdin>", "-") else name
    text = _read_input(fh, str(name))
    prompts = text.split("\n")
    if prompts and prompts[-1] == "":
        prompts.pop()
    prompts = [p[:-1] if p.endswith("\r") else p for p in prompts]
    if not prompts:
        raise click.ClickException(f"{name} holds no prompts; write one prompt per line")
    if len(prompts) > MAX_BATCH:
        raise click.ClickException(
            f"{name} holds {len(prompts):,} prompts, over the {MAX_BATCH:,} one batch takes; "
            "split it into smaller files"
        )
    return prompts


@main.command()
@MODEL_OPTION
@PRECISION_OPTION
@THREADS_OPTION
@click.option(
    "--batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Prompts per batch for the batched figure.",
)
def bench(model_dir: Path | None, precision: str, threads: int, batch: int) -> None:
    """Measure this machine: per-character latency, throughput, cold start, peak RSS."""
    from . import bench as bench_mod

    out = _stdout()
    try:
        result = bench_mod.run(model_dir, precision=precision, threads=threads, batch=batch)
    except TextgenError as exc:
        raise _error(exc) from None
    _echo(out, "\n".join(result.lines()))


@main.command()
@click.argument("source", type=click.File("rb"))
@MODEL_OPTION
@PRECISION_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def score(source: BinaryIO, model_dir: Path | None, precision: str, as_json: bool) -> None:
    """Print how likely the text in SOURCE ('-' = stdin) is under the model: bits per
    character (lower is more likely), the characters scored and the time taken. A final
    line ending is dropped when the model has no newline in its vocabulary."""
    out = _stdout()
    name = "standard input" if source.name in ("<stdin>", "-") else source.name
    try:
        gen = Generator.load(model_dir, precision=precision)
        # A file's last line ending is not its text, unless the model writes newlines.
        pieces = _pieces(source, str(name), keep_end="\n" in gen.spec.char_to_index)
        start = time.perf_counter()
        result = gen.score(pieces)
        seconds = time.perf_counter() - start
    except TextgenError as exc:
        raise _error(exc) from None
    if as_json:
        doc = {
            "bits_per_char": round(result.bits_per_char, 6),
            "chars": result.chars,
            "seconds": round(seconds, 6),
            "model": {"dir": str(gen.model_dir), "precision": gen.precision},
        }
        _echo(out, json.dumps(doc))
    else:
        _echo(
            out,
            f"{result.bits_per_char:.4f} bits/char over {result.chars:,} characters "
            f"({seconds:.3f} s)",
        )


@main.command()
@click.argument("prompt")
@MODEL_OPTION
@PRECISION_OPTION
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="How many completions.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def complete(prompt: str, model_dir: Path | None, precision: str, k: int, as_json: bool) -> None:
    """Print the K most likely completions of PROMPT's word (up to the next word boundary),
    one per line, most likely first, with their probabilities."""
    out = _stdout()
    try:
        gen = Generator.load(model_dir, precision=precision)
        results = gen.complete(prompt, k)
    except TextgenError as exc:
        raise _error(exc) from None
    if as_json:
        lines = [json.dumps({"completion": w, "probability": p}) for w, p in results]
    else:
        lines = [f"{printable(w)}\t{p:.4f}" for w, p in results]
    _echo(out, "\n".join(lines))


@main.command()
@MODEL_OPTION
@click.option(
    "--out",
    "site",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the site into (new or empty; a link to one is followed).",
)
@click.option(
    "--ort-web",
    "ort_dist",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="The dist/ folder of the onnxruntime-web npm package, copied into the site. "
    "Default: the page loads a pinned release from a CDN (integrity-checked).",
)
def web(model_dir: Path | None, site: Path, ort_dist: Path | None) -> None:
    """Write a static web page that runs the model in the browser (onnxruntime-web)."""
    from .web import write_site

    out = _stdout()
    try:
        write_site(model_dir, site, ort_dist)
    except TextgenError as exc:
        raise _error(exc) from None
    shown = printable(str(site))
    _echo(out, f"wrote {shown}: serve it (python -m http.server -d {shown}) and open index.html")


@main.command()
@MODEL_OPTION
def info(model_dir: Path | None) -> None:
    """Print the model card: vocabulary, window, architecture, files and training facts."""
    out = _stdout()
    try:
        gen = Generator.load(model_dir)
    except TextgenError as exc:
        raise _error(exc) from None
    _echo(out, model_card(gen))


def model_card(gen: Generator) -> str:
    """A human-readable summary of a loaded model; every string from the model files is
    printed with control characters escaped."""
    s = gen.spec
    arch = {k: printable(str(v)) for k, v in s.architecture.items()}
    lines = [
        f"model:       {printable(str(gen.model_dir))}",
        f"mode:        {s.mode} "
        + (
            f"(carries {len(s.states)} state tensor(s); trained on chunks of {s.training_chunk})"
            if s.stateful
            else f"(reads the last {s.window} characters)"
        ),
        f"cell:        {arch.get('cell', '?')} x {arch.get('layers', 1)} layer(s), "
        f"{arch.get('units', '?')} units, activation {arch.get('activation', '?')}",
        *_vocabulary_lines(s.chars),
        printable(
            f"graph:       {s.input.name} {s.input.dtype}{list(s.input.shape)} -> "
            f"{s.output.name} {s.output.dtype}{list(s.output.shape)}, "
            f"{s.next.name} {s.next.dtype}{list(s.next.shape)}"
        ),
    ]
    if gen.graph_builder == "native":
        how = "(model.onnx)"
    elif s.stateful:
        how = "(step graphs built at load from model.onnx's weights)"
    else:
        how = "(long greedy texts: a window graph built from model.onnx's weights)"
    lines.append(f"steps run:   {gen.graph_builder} {how}")
    for name in (MODEL_FILE, VOCAB_FILE):
        lines.append(f"{name + ':':<13}{(gen.model_dir / name).stat().st_size:,} bytes")
    lines.append(f"sha256:      {s.model_sha256}")
    for precision, v in s.variants.items():
        size = f"{v['bytes']:,} bytes" if "bytes" in v else "size not recorded"
        agreement = v.get("greedy_agreement")
        agreed = "not measured" if agreement is None else f"{agreement:.2%}"
        lines.append(
            f"{precision + ':':<13}{size}, sha256 {v['sha256']}, "
            f"greedy agreement with fp32 {agreed}"
        )
    if s.training:
        lines.append("training:")
        facts = {printable(k): printable(str(v)) for k, v in s.training.items()}
        width = max(len(k) for k in facts)
        lines += [f"  {k:<{width}}  {v}" for k, v in facts.items()]
    return "\n".join(lines)


# Characters per line of `textgen info`'s vocabulary: a wide one (CJK: thousands) in lines a
# terminal can show, not one line of 15 KB.
VOCAB_LINE_CHARS = 64


def _vocabulary_lines(chars: tuple[str, ...]) -> list[str]:
    """The model card's vocabulary: every character, in index order, as Python literals
    (escaped), on the heading line when they fit there, else VOCAB_LINE_CHARS a line."""
    text = "".join(chars)
    head = f"vocabulary:  {len(chars):,} characters:"
    if len(chars) <= VOCAB_LINE_CHARS:
        return [f"{head} {printable(repr(text))}"]
    rows = range(0, len(text), VOCAB_LINE_CHARS)
    return [head] + [f"{'':13}{printable(repr(text[i : i + VOCAB_LINE_CHARS]))}" for i in rows]


if __name__ == "__main__":  # pragma: no cover
    main()
