"""`textgen-train`: fit a character RNN on a text file and export it for the runtime."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from runtime.artifact import ModelSpec
from runtime.cli import InterruptibleGroup
from runtime.errors import TextgenError

from . import import_tensorflow_quietly
from .config import choices, unicode_text, values

OUT_OPTION = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write model.onnx, vocab.json and model.keras into.",
)
QUANTIZE_OPTION = click.option(
    "--quantize",
    type=click.Choice(choices("quantize")),
    default=None,
    help="Also write model.int8.onnx (dynamic int8 weights) and report its agreement with fp32.",
)
FORCE_OPTION = click.option(
    "--force", is_flag=True, help="Replace a model already in the output directory."
)


def _range(name: str) -> click.ParamType:
    """The CLI's type for the numeric setting `name`: its range in TrainConfig."""
    r = values(name)
    kind = click.IntRange if r.whole else click.FloatRange
    return kind(r.low, r.high, min_open=r.low_open, max_open=r.high_open)


def _arg(path: Path) -> str:
    """`path` as a shell argument in a command we suggest: quoted where it must be, and
    printable (a byte that is not UTF-8 shown as U+FFFD rather than failing the print)."""
    return unicode_text(shlex.quote(str(path)))


@click.group(cls=InterruptibleGroup)
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
    type=_range("seq_length"),
    default=3,
    show_default=True,
    help="Characters the model reads to predict the next one.",
)
@click.option(
    "--cell",
    type=click.Choice(choices("cell")),
    default="simple",
    show_default=True,
    help="Recurrent cell.",
)
@click.option(
    "--layers",
    type=_range("layers"),
    default=1,
    show_default=True,
    help="Stacked recurrent layers.",
)
@click.option("--units", type=_range("units"), default=50, show_default=True)
@click.option(
    "--dropout",
    type=_range("dropout"),
    default=0.0,
    show_default=True,
    help="Dropout between layers and before the output.",
)
@click.option(
    "--activation",
    type=click.Choice(choices("activation")),
    default=None,
    help="Cell activation.  [default: relu for simple (as the notebook), tanh otherwise]",
)
@click.option("--epochs", type=_range("epochs"), default=100, show_default=True)
@click.option("--batch-size", type=_range("batch_size"), default=32, show_default=True)
@click.option("--learning-rate", type=_range("learning_rate"), default=0.001, show_default=True)
@click.option(
    "--clipnorm",
    type=_range("clipnorm"),
    default=5.0,
    show_default=True,
    help="Clip each gradient to this L2 norm.",
)
@click.option(
    "--clipvalue",
    type=_range("clipvalue"),
    default=None,
    help="Also clip each gradient element to +-this value.",
)
@click.option("--no-clip", is_flag=True, help="Turn gradient clipping off.")
@click.option(
    "--val-fraction",
    type=_range("val_fraction"),
    default=None,
    help="Hold out this end fraction of the corpus.  [default: 0.1 with --corpus, "
    "0 for the built-in sentence]",
)
@click.option(
    "--early-stopping",
    type=_range("early_stopping"),
    default=None,
    metavar="PATIENCE",
    help="Stop after PATIENCE epochs without a better validation loss; keep the best weights.",
)
@click.option(
    "--steps-per-epoch",
    type=_range("steps_per_epoch"),
    default=None,
    help="Batches per epoch. Default: one pass over every window.",
)
@click.option(
    "--time-limit",
    type=_range("time_limit"),
    default=None,
    metavar="MINUTES",
    help="Stop after the last epoch that fits in this many minutes of training.",
)
@click.option(
    "--max-val-windows",
    type=_range("max_val_windows"),
    default=20_000,
    show_default=True,
    help="Validate each epoch on at most this many held-out windows, evenly spread.",
)
@click.option(
    "--mode",
    type=click.Choice(choices("mode")),
    default="window",
    show_default=True,
    help="window: the notebook's model (last SEQ_LENGTH characters -> next). stateful: "
    "a target at every position, exported as a step graph that carries its state.",
)
@click.option(
    "--strategy",
    type=click.Choice(choices("strategy")),
    default="default",
    show_default=True,
    help="tf.distribute strategy: mirrored = all GPUs of this host; multiworker = several "
    "hosts, each running this same command with its own TF_CONFIG.",
)
@click.option(
    "--seed",
    type=_range("seed"),
    default=None,
    help="Seed for identical weights run to run. Default: drawn and recorded.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --out from its last completed epoch.",
)
@QUANTIZE_OPTION
@FORCE_OPTION
@click.option("--quiet", is_flag=True, help="No per-epoch progress.")
@click.pass_context
def train(
    ctx: click.Context,
    corpus: Path | None,
    out_dir: Path,
    no_clip: bool,
    quiet: bool,
    resume: bool,
    **options: object,
) -> None:
    """Fit a model on CORPUS and export it into OUT."""
    import_tensorflow_quietly()
    from .train import config_for_run
    from .train import train as run_training

    if no_clip:
        if ctx.get_parameter_source("clipnorm") == ParameterSource.COMMANDLINE:
            raise click.UsageError("give --clipnorm or --no-clip, not both")
        options["clipnorm"] = None
    given = {k for k in options if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    if no_clip:
        given.add("clipnorm")
    try:
        config = config_for_run(
            out_dir,
            corpus=corpus,
            options=options,
            given=given,
            resume=resume,
            verbose=0 if quiet else 2,
        )
        spec = run_training(config)
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted; finished epochs are saved: continue with "
            f"textgen-train train --out {_arg(out_dir)} --resume",
            err=True,
        )
        sys.exit(130)
    if spec is None:
        click.echo("worker finished; the chief worker wrote the model")
        return
    t = spec.training
    val = (
        f", validation {t['val_bits_per_char']:.3f} bits/char"
        if t.get("val_bits_per_char") is not None
        else ""
    )
    click.echo(
        f"wrote {unicode_text(str(out_dir))}: loss {t['loss']:.4f}, accuracy "
        f"{t['accuracy']:.3f}, {t['bits_per_char']:.3f} bits/char{val}; try: textgen generate "
        f"--model {_arg(out_dir)}"
    )
    _report_variants(spec)


def _report_variants(spec: ModelSpec) -> None:
    # A stateful model is compared at every position of its windows, a window model once each.
    unit = "characters" if spec.stateful else "windows"
    for precision, v in spec.variants.items():
        click.echo(
            f"{precision}: {v['bytes']:,} bytes ({v['size_vs_fp32']:.0%} of fp32), "
            f"greedy next-character agreement with fp32 {v['greedy_agreement']:.2%} "
            f"on {v['agreement_windows']:,} {unit} ({v['agreement_on']}); "
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
    "--held-out",
    "--corpus",  # the name before 0.1's trust-boundary release; kept for scripts
    "held_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Held-out UTF-8 text to measure int8 agreement on (text the model has not seen).",
)
@FORCE_OPTION
def export_command(
    model_dir: Path, out_dir: Path | None, quantize: str | None, held_out: Path | None, force: bool
) -> None:
    """Re-export the Keras model kept in MODEL_DIR to ONNX, verified against Keras."""
    import_tensorflow_quietly()
    from .export import reexport

    try:
        spec = reexport(model_dir, out_dir, force=force, quantize=quantize, held_out=held_out)
    except TextgenError as exc:
        raise click.ClickException(str(exc)) from None
    shown = unicode_text(str(out_dir or model_dir))
    click.echo(f"wrote {shown} (sha256 {spec.model_sha256[:12]}...)")
    _report_variants(spec)


if __name__ == "__main__":  # pragma: no cover
    main()
