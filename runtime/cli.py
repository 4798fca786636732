"""`textgen`: generate text from an exported model, or describe it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from .artifact import MODEL_FILE, MODEL_FILES, VOCAB_FILE
from .errors import TextgenError
from .generator import MAX_LENGTH, Generator

MODEL_OPTION = click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Model directory (model.onnx + vocab.json). Default: the shipped model.",
)


@click.group()
@click.version_option(package_name="rnn-textgen")
def main() -> None:
    """Generate text with a character-level RNN exported by textgen-train."""


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


@main.command()
@click.argument("prompt", required=False)
@MODEL_OPTION
@click.option(
    "--length",
    "-n",
    type=click.IntRange(1, MAX_LENGTH),
    default=50,
    show_default=True,
    help="Number of characters to generate.",
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
def generate(
    prompt: str | None,
    model_dir: Path | None,
    length: int,
    precision: str,
    prompts_file: TextIO | None,
    threads: int,
) -> None:
    """Print PROMPT followed by LENGTH greedily generated characters, as they are produced.

    Without PROMPT, the model's sample prompt (the start of its training corpus) is used.
    """
    if prompt is not None and prompts_file is not None:
        raise click.UsageError("give either PROMPT or --prompts-file, not both")
    try:
        if prompts_file is not None:
            prompts = _read_prompts(prompts_file)
        gen = Generator.load(model_dir, precision=precision, threads=threads)
        if prompts_file is not None:
            for text in gen.generate_batch(prompts, length):
                click.echo(text)
            return
        if prompt is None:
            prompt = gen.spec.training.get("sample_prompt", "")
        chars = gen.stream(prompt, length)
        out = sys.stdout
        out.write(prompt)
        out.flush()
        for ch in chars:
            out.write(ch)
            out.flush()
        out.write("\n")
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None


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
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(result.lines()))


@main.command()
@MODEL_OPTION
def info(model_dir: Path | None) -> None:
    """Print the model card: vocabulary, window, architecture, files and training facts."""
    try:
        gen = Generator.load(model_dir)
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(model_card(gen))


def model_card(gen: Generator) -> str:
    """A human-readable summary of a loaded model."""
    s = gen.spec
    arch = s.architecture
    lines = [
        f"model:       {gen.model_dir}",
        f"mode:        {s.mode} "
        + (
            f"(carries {len(s.states)} state tensor(s); trained on chunks of {s.seq_length})"
            if s.stateful
            else f"(reads the last {s.seq_length} characters)"
        ),
        f"cell:        {arch.get('cell', '?')} x {arch.get('layers', 1)} layer(s), "
        f"{arch.get('units', '?')} units, activation {arch.get('activation', '?')}",
        f"vocabulary:  {s.vocab_size} characters: {''.join(s.chars)!r}",
        f"graph:       {s.input.name} {s.input.dtype}{list(s.input.shape)} -> "
        f"{s.output.name} {s.output.dtype}{list(s.output.shape)}, "
        f"{s.next.name} {s.next.dtype}{list(s.next.shape)}",
    ]
    for name in (MODEL_FILE, VOCAB_FILE):
        lines.append(f"{name + ':':<13}{(gen.model_dir / name).stat().st_size:,} bytes")
    lines.append(f"sha256:      {s.model_sha256}")
    for precision, v in s.variants.items():
        lines.append(
            f"{precision + ':':<13}{v.get('bytes', 0):,} bytes, sha256 {v['sha256']}, "
            f"greedy agreement with fp32 {v.get('greedy_agreement', float('nan')):.2%}"
        )
    if s.training:
        lines.append("training:")
        width = max(len(k) for k in s.training)
        lines += [f"  {k:<{width}}  {v}" for k, v in s.training.items()]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
