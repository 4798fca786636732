"""`textgen-train`: fit a character RNN on a text file and export it for the runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from runtime.artifact import ModelSpec
from runtime.errors import TextgenError

OUT_OPTION = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write model.onnx, vocab.json and model.keras into.",
)
QUANTIZE_OPTION = click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Also write model.int8.onnx (dynamic int8 weights) and report its agreement with fp32.",
)
FORCE_OPTION = click.option(
    "--force", is_flag=True, help="Replace a model already in the output directory."
)


@click.group()
@click.version_option(package_name="rnn-textgen")
def main() -> None:
    """Train and export character-level RNN text generators."""
    # Our own progress at INFO; other libraries (tf2onnx, onnxruntime.quantization) narrate
    # every pass at INFO through the root logger, so the root stays at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("trainer").setLevel(logging.INFO)


@main.command()
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=None,
    help="UTF-8 text file to learn. Default: the notebook's one sentence.",
)
@OUT_OPTION
@click.option(
    "--seq-length",
    type=click.IntRange(1, 10_000),
    default=3,
    show_default=True,
    help="Characters the model reads to predict the next one.",
)
@click.option(
    "--cell",
    type=click.Choice(["simple", "lstm", "gru"]),
    default="simple",
    show_default=True,
    help="Recurrent cell.",
)
@click.option("--units", type=click.IntRange(1, 8192), default=50, show_default=True)
@click.option(
    "--activation",
    default=None,
    help="Cell activation. Default: relu for simple (as the notebook), tanh otherwise.",
)
@click.option("--epochs", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=32, show_default=True)
@click.option(
    "--learning-rate", type=click.FloatRange(0, 10, min_open=True), default=0.001, show_default=True
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="Seed for identical weights run to run. Default: drawn and recorded.",
)
@QUANTIZE_OPTION
@FORCE_OPTION
@click.option("--quiet", is_flag=True, help="No per-epoch progress.")
def train(
    corpus: Path | None,
    out_dir: Path,
    seq_length: int,
    cell: str,
    units: int,
    activation: str | None,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int | None,
    quantize: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Fit a model on CORPUS and export it into OUT."""
    from .train import TrainConfig
    from .train import train as run_training

    config = TrainConfig(
        out_dir=out_dir,
        corpus=corpus,
        seq_length=seq_length,
        cell=cell,
        units=units,
        activation=activation,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        force=force,
        quantize=quantize,
        verbose=0 if quiet else 2,
    )
    try:
        spec = run_training(config)
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; the output directory was left as it was") from None
    t = spec.training
    click.echo(
        f"wrote {out_dir}: loss {t['loss']:.4f}, accuracy {t['accuracy']:.3f}, "
        f"{t['bits_per_char']:.3f} bits/char; try: textgen generate --model {out_dir}"
    )
    _report_variants(spec)


def _report_variants(spec: ModelSpec) -> None:
    for precision, v in spec.variants.items():
        click.echo(
            f"{precision}: {v['bytes']:,} bytes ({v['size_vs_fp32']:.0%} of fp32), "
            f"greedy next-character agreement with fp32 {v['greedy_agreement']:.2%} "
            f"on {v['agreement_windows']:,} windows ({v['agreement_on']}); "
            f"use it with --precision {precision}"
        )


@main.command("export")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory written by `textgen-train train` (it keeps model.keras).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write. Default: --model-dir itself.",
)
@QUANTIZE_OPTION
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=None,
    help="Held-out UTF-8 text to measure int8 agreement on.",
)
@FORCE_OPTION
def export_command(
    model_dir: Path, out_dir: Path | None, quantize: str | None, corpus: Path | None, force: bool
) -> None:
    """Re-export the Keras model kept in MODEL_DIR to ONNX, verified against Keras."""
    from .export import reexport

    try:
        spec = reexport(model_dir, out_dir, force=force, quantize=quantize, corpus=corpus)
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out_dir or model_dir} (sha256 {spec.model_sha256[:12]}...)")
    _report_variants(spec)


if __name__ == "__main__":  # pragma: no cover
    main()
