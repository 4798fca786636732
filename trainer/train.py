"""Fit the character model on a corpus and export it: the library behind `textgen-train train`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from runtime.artifact import ModelSpec, bits_per_char

from .config import (
    PER_WORKER,
    RESUME_MAY_CHANGE,
    TrainConfig,
    check_config,
    check_exportable,
    command_line,
    unicode_text,
)
from .corpus import Corpus
from .data import samples_in, steps_in, windows_dataset
from .errors import CorpusError, OutputDirError, TrainingError
from .export import export, prepare_out_dir
from .history import history_json, training_plot
from .loop import broadcast_any, broadcast_from_chief, fit_distributed, sync_from_chief
from .model import build_model, compile_model
from .publish import out_dir_lock
from .state import (
    STATE_DIR,
    EpochCheckpoint,
    EpochLine,
    ResumableEarlyStopping,
    StopOnDivergence,
    TimeLimit,
    damaged,
    latest_checkpoint,
    load_best_weights,
    load_checkpoint_model,
    read_progress,
    state_dir,
)

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Same seed, same weights on CPU: seed every RNG and ask TF for deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy to build and train under."""
    import tensorflow as tf

    if name == "mirrored":  # every GPU (or logical device) of this host
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":  # several hosts, described by the TF_CONFIG variable
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: Any) -> bool:
    """Only one process of a multi-worker run writes checkpoints and artifacts."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return _chief_task(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def chief_by_tf_config() -> bool:
    """Whether TF_CONFIG makes this process the chief (true when it names no task).

    Read without TensorFlow, so the CLI knows before training whether --out holds the run.
    """
    try:
        doc = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = doc.get("task") or {}
        return _chief_task(task.get("type"), int(task.get("index", 0)), doc.get("cluster") or {})
    except (ValueError, TypeError, AttributeError) as exc:
        raise TrainingError(
            f"TF_CONFIG is not a valid cluster description ({exc}); see the README's "
            "'Several devices' paragraph for its shape"
        ) from None


def _chief_task(task_type: str | None, task_id: int, cluster: dict[str, Any]) -> bool:
    # TensorFlow's rule: the "chief" task, or worker 0 of a cluster that has none.
    if not task_type or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def _agree_with_chief(
    strategy: Any, chief: bool, config: TrainConfig, corpus_sha: str, seed: int, epoch: int
) -> tuple[int, int]:
    """The chief's seed and starting epoch on every worker, after checking the rest agrees.

    Every worker cuts the same global batches (each keeps its share) and builds the same
    variables, so all must hold the same text and settings and use the same seed; a resumed
    run starts from the chief's checkpoint. A mismatch stops every worker with the reason.
    """
    shared = {k: v for k, v in config.to_json().items() if k not in PER_WORKER}
    settings = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()
    mine = np.array(  # 52-bit prefixes: exact in float64, which every collective carries
        [int(corpus_sha[:13], 16), int(settings[:13], 16), seed, epoch], dtype=np.float64
    )
    (chiefs,) = broadcast_from_chief(strategy, [mine], chief)
    if broadcast_any(strategy, chiefs[0] != mine[0]):
        raise CorpusError(
            "the workers' corpora differ from the chief's (sha256 compared): give every "
            "worker the same --corpus file"
        )
    if broadcast_any(strategy, chiefs[1] != mine[1]):
        raise TrainingError(
            "the workers' settings differ from the chief's: run the same textgen-train "
            "command on every worker (only TF_CONFIG, --out and --time-limit may differ)"
        )
    return int(chiefs[2]), int(chiefs[3])


def split_corpus(corpus: Corpus, val_fraction: float, seq_length: int) -> tuple[np.ndarray, ...]:
    """Training ids and held-out ids (the end of the text), each long enough for a window."""
    corpus.windows(seq_length)  # raises the clear "too short" error for the whole text
    if val_fraction == 0:
        return corpus.ids, corpus.ids[:0]
    cut = len(corpus.ids) - int(len(corpus.ids) * val_fraction)
    train_ids, val_ids = corpus.ids[:cut], corpus.ids[cut:]
    if len(train_ids) <= seq_length or len(val_ids) <= seq_length:
        raise CorpusError(
            f"corpus {corpus.name} has {len(corpus.ids):,} characters: too few to hold out "
            f"{val_fraction:.0%} and still make windows of {seq_length} on both sides; "
            "use a longer corpus, a shorter --seq-length or --val-fraction 0"
        )
    return train_ids, val_ids


def _resume_point(config: TrainConfig, corpus_sha: str) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to continue from (or None), after checking it fits this config."""
    checkpoint = latest_checkpoint(config.out_dir)
    if not config.resume:
        if checkpoint is not None and not config.force:
            done = read_progress(checkpoint)
            raise OutputDirError(
                f"{config.out_dir} holds an interrupted run (epoch {done['epoch']} of "
                f"{done['config'].get('epochs', '?')}); pass --resume to continue it or "
                "--force to start over"
            )
        shutil.rmtree(state_dir(config.out_dir), ignore_errors=True)
        return None, {}
    if checkpoint is None:
        raise OutputDirError(
            f"nothing to resume in {config.out_dir}: no completed epoch was saved there"
        )
    progress = read_progress(checkpoint)
    saved, now = progress["config"], config.to_json()
    diffs = [
        f"{k} {saved.get(k)!r} -> {now[k]!r}"
        for k in now
        if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k]
    ]
    if diffs:
        raise TrainingError(
            "--resume must continue the same run, but these settings differ: "
            + ", ".join(diffs)
            + "; drop them (they are read from the saved run)"
        )
    if progress.get("corpus_sha256") != corpus_sha:
        raise TrainingError("--resume found a different corpus than the interrupted run used")
    return checkpoint, progress


def config_for_run(
    out_dir: Path,
    *,
    corpus: Path | None,
    options: dict[str, Any],
    given: set[str],
    resume: bool,
    verbose: int = 0,
) -> TrainConfig:
    """The settings of the run to start, from the command line's `options` (`given`: those
    the user typed). With `resume` the saved run supplies every setting and the given ones
    must agree with it (train() says which do not), except those a resumed run may change;
    a follower of a multi-worker run keeps no state of its own, so it takes its settings
    from its command line and the chief's checkpoint."""
    follower = options.get("strategy") == "multiworker" and not chief_by_tf_config()
    if resume and not follower:
        overrides = {k: v for k, v in options.items() if k in given}
        if corpus is not None:
            overrides["corpus"] = corpus
        return resume_config(out_dir, verbose=verbose, **overrides)
    return TrainConfig(out_dir=out_dir, corpus=corpus, verbose=verbose, resume=resume, **options)


def resume_config(out_dir: Path, **overrides: Any) -> TrainConfig:
    """The interrupted run's config from its newest checkpoint, with `overrides` applied."""
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        raise OutputDirError(f"nothing to resume in {out_dir}: no completed epoch was saved")
    saved = read_progress(checkpoint)["config"]
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in saved.items() if k in known}
    saved["out_dir"] = Path(out_dir)
    corpus = saved.get("corpus")
    try:
        saved["corpus"] = None if corpus is None else Path(corpus)
        return replace(TrainConfig(**saved), resume=True, **overrides)
    except TypeError as exc:
        raise damaged(checkpoint, f"its config does not fit this trainer: {exc}") from None


def train(config: TrainConfig) -> ModelSpec | None:
    """Read the corpus, fit, export into config.out_dir and return the published spec.

    Returns None on the non-chief workers of a multi-worker run (the chief exports).
    """
    check_config(config)
    if config.strategy != "multiworker":
        with out_dir_lock(config.out_dir):
            return _train(config)
    import tensorflow as tf

    # Only the chief writes --out (the workers may share its filesystem).
    lock = out_dir_lock(config.out_dir) if chief_by_tf_config() else contextlib.nullcontext()
    try:
        with lock:
            return _train(config)
    except tf.errors.OpError as exc:
        from .loop import close_abandoned_pools

        close_abandoned_pools(exc)
        # A collective fails on every worker when one of them stops: say so, not gRPC.
        raise TrainingError(
            f"lost the other workers ({_op_error_reason(exc)}): one of them "
            "stopped or cannot be reached, and its own output says why; start every worker "
            "again (add --resume to continue from the chief's last completed epoch)"
        ) from None


def _op_error_reason(exc: Any) -> str:
    """TensorFlow's first message line, without the op name it starts with."""
    first = (exc.message or type(exc).__name__).splitlines()[0]
    return re.sub(r"^\{\{.*?\}\}\s*", "", first)[:200]


@dataclass
class _Run:
    """What the stages of one training run share, decided once at the start."""

    config: TrainConfig
    corpus: Corpus
    train_ids: np.ndarray
    val_ids: np.ndarray
    corpus_sha: str
    strategy: Any
    chief: bool  # this process writes --out (always, but for multi-worker followers)
    checkpoint: Path | None  # the checkpoint a resumed run continues from
    progress: dict[str, Any]  # that checkpoint's progress.json ({} for a fresh run)
    seed: int
    initial_epoch: int

    @property
    def multiworker(self) -> bool:
        return self.config.strategy == "multiworker"

    @property
    def sequence(self) -> bool:
        return self.config.mode == "stateful"


def _train(config: TrainConfig) -> ModelSpec | None:
    """The stages, top to bottom: data and resume point, model, callbacks, fit, facts, export."""
    run = _prepare(config)
    model = _model(run)
    history, early, callbacks = _callbacks(run)
    seconds = _fit(run, model, history, callbacks)
    training = _training_facts(run, history, early, seconds)
    if not run.chief:
        return None
    return _export(run, model, history, training)


def _prepare(config: TrainConfig) -> _Run:
    """Read and split the corpus, find the checkpoint to resume, agree on the seed."""
    corpus = Corpus.read(config.corpus)
    check_exportable(config, len(corpus.chars))
    train_ids, val_ids = split_corpus(corpus, config.resolved_val_fraction(), config.seq_length)
    corpus_sha = hashlib.sha256(corpus.text.encode()).hexdigest()
    multiworker = config.strategy == "multiworker"
    # Several hosts: only the chief looks at or writes its --out; the others follow it.
    strategy = make_strategy(config.strategy) if multiworker else None
    chief = strategy is None or is_chief(strategy)
    checkpoint, progress = _resume_point(config, corpus_sha) if chief else (None, {})
    if chief:
        prepare_out_dir(config.out_dir, force=config.force or config.resume)
    seed = progress.get("config", {}).get("seed") if checkpoint else config.seed
    # Without --seed a seed is still drawn and recorded, so any run can be repeated.
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    initial_epoch = progress.get("epoch", 0)
    if multiworker:
        seed, initial_epoch = _agree_with_chief(
            strategy, chief, config, corpus_sha, seed, initial_epoch
        )
    seed_everything(seed)
    return _Run(
        config=config,
        corpus=corpus,
        train_ids=train_ids,
        val_ids=val_ids,
        corpus_sha=corpus_sha,
        strategy=strategy or make_strategy(config.strategy),
        chief=chief,
        checkpoint=checkpoint,
        progress=progress,
        seed=seed,
        initial_epoch=initial_epoch,
    )


def _fresh_model(run: _Run) -> keras.Model:
    config = run.config
    model = build_model(
        len(run.corpus.chars),
        config.seq_length,
        units=config.units,
        cell=config.cell,
        activation=config.resolved_activation(),
        layers=config.layers,
        dropout=config.dropout,
        mode=config.mode,
    )
    compile_model(
        model,
        learning_rate=config.learning_rate,
        clipnorm=config.clipnorm,
        clipvalue=config.clipvalue,
    )
    return model


def _model(run: _Run) -> keras.Model:
    """A new model, or the checkpoint's (with its optimizer state)."""
    with run.strategy.scope():
        if run.multiworker:
            # Every worker creates the same variables in the same order (collectives pair
            # them up); the chief alone has the checkpoint, and shares it.
            model = _fresh_model(run)
            model.optimizer.build(model.trainable_variables)
        elif run.checkpoint is not None:
            model = load_checkpoint_model(run.checkpoint)
        else:
            model = _fresh_model(run)
    if run.multiworker:
        # The chief alone has the checkpoint: it loads it outside the strategy (creating
        # variables inside would start collectives the others do not join) and shares it.
        saved = load_checkpoint_model(run.checkpoint) if run.checkpoint is not None else None
        sync_from_chief(run.strategy, model, saved, run.chief)
    return model


def _callbacks(
    run: _Run,
) -> tuple[dict[str, list[float]], ResumableEarlyStopping | None, list[Any]]:
    """The history (continued on resume), early stopping, checkpoints, limits, progress."""
    config, progress = run.config, run.progress
    history = {k: list(v) for k, v in progress.get("history", {}).items()}
    early = None
    callbacks: list[Any] = []
    if config.early_stopping is not None:
        early = ResumableEarlyStopping(patience=config.early_stopping)
        if run.checkpoint is not None and "early_stopping" in progress:
            early.restore(progress["early_stopping"], load_best_weights(run.checkpoint))
        callbacks.append(early)  # before the checkpoint, which saves its state
    callbacks.append(
        EpochCheckpoint(
            config.out_dir,
            {**config.to_json(), "seed": run.seed},
            history,
            early,
            write=run.chief,
            extra={"corpus_sha256": run.corpus_sha},
        )
    )
    callbacks.append(StopOnDivergence())
    limit = None if config.time_limit is None else config.time_limit * 60
    if limit is not None:
        callbacks.append(TimeLimit(limit))
    if config.verbose:
        callbacks.append(EpochLine(config.epochs, time_limit=limit))
    return history, early, callbacks


def _fit(
    run: _Run, model: keras.Model, history: dict[str, list[float]], callbacks: list[Any]
) -> float:
    """Fit from the resume point to the last epoch; seconds of training, resumed ones too."""
    config, train_ids, val_ids = run.config, run.train_ids, run.val_ids
    per_pass = steps_in(len(train_ids), config.seq_length, config.batch_size, run.sequence)
    steps = config.steps_per_epoch or per_pass
    # One dataset for the whole run, one permutation per pass over the windows: with an
    # explicit steps_per_epoch Keras keeps a single iterator, so the order stays a pure
    # function of (seed, pass) and a resumed run continues exactly where it stopped.
    done_batches = run.initial_epoch * steps
    train_ds = windows_dataset(
        train_ids,
        config.seq_length,
        config.batch_size,
        shuffle=True,
        seed=run.seed,
        epochs=(done_batches // per_pass, -(-config.epochs * steps // per_pass)),
        skip_batches=done_batches % per_pass,
        sequence=run.sequence,
    )
    val_ds = None
    if len(val_ids):
        val_ds = windows_dataset(
            val_ids,
            config.seq_length,
            1024 if not run.sequence else max(1, 16384 // config.seq_length),
            shuffle=False,
            max_windows=config.max_val_windows,
            sequence=run.sequence,
        )
    log.info(
        "training %s %dx%d on %s windows of %d characters (%d distinct), %s held out, "
        "%d steps per epoch, seed %d%s",
        config.cell,
        config.layers,
        config.units,
        f"{len(train_ids) - config.seq_length:,}",
        config.seq_length,
        len(run.corpus.chars),
        f"{max(0, len(val_ids) - config.seq_length):,} windows" if len(val_ids) else "nothing",
        steps,
        run.seed,
        f", resuming after epoch {run.initial_epoch}" if run.checkpoint else "",
    )
    started = time.perf_counter()
    if run.initial_epoch < config.epochs and run.multiworker:
        fit_distributed(
            model,
            run.strategy,
            train_ds,
            val_ds,
            epochs=config.epochs,
            initial_epoch=run.initial_epoch,
            steps=steps,
            callbacks=callbacks,
        )
    elif run.initial_epoch < config.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=run.initial_epoch,
            steps_per_epoch=steps,
            shuffle=False,  # the dataset shuffles itself, with the seed
            verbose=1 if config.verbose and sys.stdout.isatty() else 0,
            callbacks=callbacks,
        )
    resumed = sum(history.get("seconds", [])[: run.initial_epoch])
    return time.perf_counter() - started + resumed


def _training_facts(
    run: _Run,
    history: dict[str, list[float]],
    early: ResumableEarlyStopping | None,
    seconds: float,
) -> dict[str, Any]:
    """vocab.json's `training` record: corpus, settings, seed, final metrics, the replay
    command; TrainingError if the metrics diverged."""
    config, sequence = run.config, run.sequence
    if early is not None and early.best_weights is not None:
        best = early.best_epoch  # the weights kept are this epoch's
    else:
        best = len(history.get("loss", [])) - 1
    facts = _final_facts(history, best)
    if not all(math.isfinite(v) for v in facts.values() if isinstance(v, float)):
        bad = [i for i, v in enumerate(history.get("loss", [])) if not math.isfinite(v)]
        first = bad[0] + 1 if bad else best + 1  # else validation loss alone
        raise TrainingError(
            f"training diverged: the loss was not finite from epoch {first} "
            f"(final metrics {facts}); start again with --force and a lower "
            "--learning-rate, or keep gradient clipping on"
        )
    return {
        "corpus": unicode_text(run.corpus.name),
        "corpus_chars": len(run.corpus.text),
        "corpus_sha256": run.corpus_sha,
        "val_fraction": config.resolved_val_fraction(),
        "mode": config.mode,
        # samples: windows (one target each) or, stateful, chunks (seq_length targets each)
        "train_windows" if not sequence else "train_chunks": samples_in(
            len(run.train_ids), config.seq_length, sequence
        ),
        "val_windows" if not sequence else "val_chunks": (
            samples_in(len(run.val_ids), config.seq_length, sequence) if len(run.val_ids) else 0
        ),
        "max_val_windows": config.max_val_windows,
        "epochs": config.epochs,
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": best + 1,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "clipnorm": config.clipnorm,
        "clipvalue": config.clipvalue,
        "dropout": config.dropout,
        "strategy": config.strategy,
        "seed": run.seed,
        **facts,
        "train_seconds": round(seconds, 2),
        "keras": keras.__version__,
        "command": command_line(config, run.seed),
    }


def _export(
    run: _Run, model: keras.Model, history: dict[str, list[float]], training: dict[str, Any]
) -> ModelSpec:
    """Export with parity checked on training windows (chunks) and int8 agreement measured
    on held-out ones; the finished run's checkpoints leave --out in the same swap."""
    config = run.config
    if run.multiworker:
        # Export outside the strategy: its predict would wait for the other workers.
        trained, model = model, _fresh_model(run)
        model.set_weights(trained.get_weights())
    parity = np.lib.stride_tricks.sliding_window_view(run.train_ids[:-1], config.seq_length)
    if run.sequence:  # whole chunks, as trained, spread over the text
        parity = parity[:: config.seq_length]
    held_out = (
        np.lib.stride_tricks.sliding_window_view(run.val_ids[:-1], config.seq_length)
        if len(run.val_ids) > config.seq_length
        else None
    )
    title = f"{config.cell} {config.layers}x{config.units}, " + (
        f"stateful, chunks of {config.seq_length}"
        if run.sequence
        else f"window {config.seq_length}"
    )
    return export(
        model,
        chars=run.corpus.chars,
        seq_length=config.seq_length,
        out_dir=config.out_dir,
        windows=parity,
        prompt=run.corpus.sample_prompt(config.seq_length),
        architecture={
            "cell": config.cell,
            "layers": config.layers,
            "units": config.units,
            "activation": config.resolved_activation(),
        },
        training=training,
        force=True,  # checked above, before training
        quantize=config.quantize,
        eval_windows=held_out if held_out is not None else parity[-max(1, len(parity) // 10) :],
        eval_source="held-out validation windows"
        if held_out is not None
        else "the last 10% of the training windows",
        extras={
            "history.json": history_json(history, training),
            "training.png": training_plot(history, title),
        },
        mode=config.mode,
        drop=(STATE_DIR,),  # the finished run's checkpoints go in the same atomic step
    )


def _final_facts(history: dict[str, list[float]], best: int) -> dict[str, Any]:
    def at(key: str) -> float | None:
        values = history.get(key) or []
        return round(float(values[best]), 6) if 0 <= best < len(values) else None

    facts = {
        "loss": at("loss"),
        "accuracy": at("accuracy"),
        "bits_per_char": None if at("loss") is None else round(bits_per_char(at("loss")), 6),
    }
    if history.get("val_loss"):
        facts |= {
            "val_loss": at("val_loss"),
            "val_accuracy": at("val_accuracy"),
            "val_bits_per_char": round(bits_per_char(at("val_loss")), 6),
        }
    return facts
