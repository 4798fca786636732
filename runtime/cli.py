"""`textgen`: generate text from an exported model, or describe it."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import click

from .artifact import MODEL_FILE, MODEL_FILES, VOCAB_FILE, printable
from .decoding import GenerationOptions
from .errors import TextgenError
from .generator import MAX_LENGTH, Generator

MODEL_OPTION = click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Model directory (model.onnx + vocab.json). Default: the shipped model.",
)


class _Group(click.Group):
    """Ctrl-C anywhere (loading, generating, writing) ends with exit status 130, the shell's
    convention for SIGINT, instead of click's 'Aborted!' and 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="rnn-textgen")
def main() -> None:
    """Generate text with a character-level RNN exported by textgen-train."""


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
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads (1 is fastest for small models).",
)
WARMUP_THREADS_OPTION = click.option(
    "--warmup-threads",
    type=click.IntRange(1, 256),
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
    type=click.File("r", encoding="utf-8"),
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
    prompts_file: TextIO | None,
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
            start = time.perf_counter()
            texts = gen.generate_batch(prompts, length, options)
            seconds = time.perf_counter() - start
            for p, text in zip(prompts, texts, strict=True):
                click.echo(_json(gen, p, text, options, length, seconds) if as_json else text)
            return
        if prompt is None:
            prompt = gen.spec.training.get("sample_prompt", "")
        chars = gen.stream(prompt, length, options)
        if as_json:
            start = time.perf_counter()
            text = prompt + "".join(chars)
            click.echo(_json(gen, prompt, text, options, length, time.perf_counter() - start))
            return
        _print_stream(prompt, chars)
    except TextgenError as exc:
        raise _error(exc) from None


def _print_stream(prompt: str, chars: Iterator[str]) -> None:
    """Write the prompt, then each character as it comes; Ctrl-C keeps what was printed."""
    out = sys.stdout
    # Per-character flushes are for a person watching; a pipe gets whole buffers.
    live = out.isatty()
    try:
        out.write(prompt)
        out.flush()
        for ch in chars:
            out.write(ch)
            if live:
                out.flush()
        out.write("\n")
        out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `textgen generate ... | head -c 20`: the reader left, not an error
        sys.stderr.close()
        os._exit(0)


def _read_stdin_prompt() -> str:
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _json(
    gen: Generator,
    prompt: str,
    text: str,
    options: GenerationOptions,
    length: int,
    seconds: float,
) -> str:
    generated = text[len(prompt) :]
    # Generation ends before LENGTH only at a stop string.
    stopped = "stop" if generated and any(text.endswith(s) for s in options.stop) else "length"
    return json.dumps(
        {
            "prompt": prompt,
            "text": generated,
            "output": text,
            "stopped": stopped,
            "settings": {**options.to_dict(), "length": length},
            "model": {
                "dir": str(gen.model_dir),
                "mode": gen.spec.mode,
                "precision": gen.precision,
                "sha256": gen.spec.model_file(gen.precision)[1],
            },
            "timing": {
                "seconds": round(seconds, 6),
                "characters": len(generated),
                "characters_per_second": round(len(generated) / seconds, 1) if seconds else None,
            },
        },
        ensure_ascii=False,
    )


def _read_prompts(fh: TextIO) -> list[str]:
    try:
        prompts = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{fh.name} is not UTF-8 (bad byte at offset {exc.start}); convert it first"
        ) from None
    if not prompts:
        raise click.ClickException(f"{fh.name} holds no prompts; write one prompt per line")
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

    try:
        result = bench_mod.run(model_dir, precision=precision, threads=threads, batch=batch)
    except TextgenError as exc:
        raise _error(exc) from None
    click.echo("\n".join(result.lines()))


@main.command()
@MODEL_OPTION
def info(model_dir: Path | None) -> None:
    """Print the model card: vocabulary, window, architecture, files and training facts."""
    try:
        gen = Generator.load(model_dir)
    except TextgenError as exc:
        raise _error(exc) from None
    click.echo(model_card(gen))


def model_card(gen: Generator) -> str:
    """A human-readable summary of a loaded model; every string from the model files is
    printed with control characters escaped."""
    s = gen.spec
    arch = {k: printable(str(v)) for k, v in s.architecture.items()}
    lines = [
        f"model:       {printable(str(gen.model_dir))}",
        f"mode:        {s.mode} "
        + (
            f"(carries {len(s.states)} state tensor(s); trained on chunks of {s.seq_length})"
            if s.stateful
            else f"(reads the last {s.seq_length} characters)"
        ),
        f"cell:        {arch.get('cell', '?')} x {arch.get('layers', 1)} layer(s), "
        f"{arch.get('units', '?')} units, activation {arch.get('activation', '?')}",
        f"vocabulary:  {s.vocab_size} characters: {printable(repr(''.join(s.chars)))}",
        printable(
            f"graph:       {s.input.name} {s.input.dtype}{list(s.input.shape)} -> "
            f"{s.output.name} {s.output.dtype}{list(s.output.shape)}, "
            f"{s.next.name} {s.next.dtype}{list(s.next.shape)}"
        ),
    ]
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


if __name__ == "__main__":  # pragma: no cover
    main()
