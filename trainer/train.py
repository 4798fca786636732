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
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import ModelSpec, bits_per_char

from .config import (
    PER_WORKER,
    RESUME_MAY_CHANGE,
    TrainConfig,
    check_config,
    command_line,
)
from .corpus import Corpus
from .errors import CorpusError, OutputDirError, TrainingError
from .export import export, prepare_out_dir
from .publish import out_dir_lock

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
    from .loop import broadcast_any, broadcast_from_chief

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
    from .state import latest_checkpoint, read_progress, state_dir

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


def resume_config(out_dir: Path, **overrides: Any) -> TrainConfig:
    """The interrupted run's config from its newest checkpoint, with `overrides` applied."""
    from .state import damaged, latest_checkpoint, read_progress

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


def _train(config: TrainConfig) -> ModelSpec | None:
    corpus = Corpus.read(config.corpus)
    val_fraction = config.resolved_val_fraction()
    train_ids, val_ids = split_corpus(corpus, val_fraction, config.seq_length)
    corpus_sha = hashlib.sha256(corpus.text.encode()).hexdigest()
    multiworker = config.strategy == "multiworker"
    # Several hosts: only the chief looks at or writes its --out; the others follow it.
    strategy = make_strategy(config.strategy) if multiworker else None
    chief = strategy is None or is_chief(strategy)
    checkpoint, progress = _resume_point(config, corpus_sha) if chief else (None, {})
    if chief:
        prepare_out_dir(config.out_dir, force=config.force or config.resume)

    import keras

    from .data import samples_in, steps_in, windows_dataset
    from .history import history_json, training_plot
    from .loop import fit_distributed, sync_from_chief
    from .model import build_model, compile_model
    from .state import (
        STATE_DIR,
        EpochCheckpoint,
        EpochLine,
        ResumableEarlyStopping,
        TimeLimit,
        load_best_weights,
        load_checkpoint_model,
    )

    saved_config = progress.get("config", {})
    seed = saved_config.get("seed") if checkpoint else config.seed
    # Without --seed a seed is still drawn and recorded, so any run can be repeated.
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    initial_epoch = progress.get("epoch", 0)
    if multiworker:
        seed, initial_epoch = _agree_with_chief(
            strategy, chief, config, corpus_sha, seed, initial_epoch
        )
    seed_everything(seed)
    strategy = strategy or make_strategy(config.strategy)

    def fresh_model() -> keras.Model:
        model = build_model(
            len(corpus.chars),
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

    with strategy.scope():
        if multiworker:
            # Every worker creates the same variables in the same order (collectives pair
            # them up); the chief alone has the checkpoint, and shares it.
            model = fresh_model()
            model.optimizer.build(model.trainable_variables)
        elif checkpoint is not None:
            model = load_checkpoint_model(checkpoint)
        else:
            model = fresh_model()
    if multiworker:
        # The chief alone has the checkpoint: it loads it outside the strategy (creating
        # variables inside would start collectives the others do not join) and shares it.
        saved = load_checkpoint_model(checkpoint) if checkpoint is not None else None
        sync_from_chief(strategy, model, saved, chief)

    history: dict[str, list[float]] = {k: list(v) for k, v in progress.get("history", {}).items()}
    early = None
    callbacks: list[Any] = []
    if config.early_stopping is not None:
        early = ResumableEarlyStopping(patience=config.early_stopping)
        if checkpoint is not None and "early_stopping" in progress:
            early.restore(progress["early_stopping"], load_best_weights(checkpoint))
        callbacks.append(early)  # before the checkpoint, which saves its state
    run_config = {**config.to_json(), "seed": seed}
    callbacks.append(
        EpochCheckpoint(
            config.out_dir,
            run_config,
            history,
            early,
            write=chief,
            extra={"corpus_sha256": corpus_sha},
        )
    )
    if config.time_limit is not None:
        callbacks.append(TimeLimit(config.time_limit * 60))
    if config.verbose:
        limit = None if config.time_limit is None else config.time_limit * 60
        callbacks.append(EpochLine(config.epochs, time_limit=limit))

    sequence = config.mode == "stateful"
    per_pass = steps_in(len(train_ids), config.seq_length, config.batch_size, sequence)
    steps = config.steps_per_epoch or per_pass
    # One dataset for the whole run, one permutation per pass over the windows: with an
    # explicit steps_per_epoch Keras keeps a single iterator, so the order stays a pure
    # function of (seed, pass) and a resumed run continues exactly where it stopped.
    done_batches = initial_epoch * steps
    train_ds = windows_dataset(
        train_ids,
        config.seq_length,
        config.batch_size,
        shuffle=True,
        seed=seed,
        epochs=(done_batches // per_pass, -(-config.epochs * steps // per_pass)),
        skip_batches=done_batches % per_pass,
        sequence=sequence,
    )
    val_ds = None
    if len(val_ids):
        val_ds = windows_dataset(
            val_ids,
            config.seq_length,
            1024 if not sequence else max(1, 16384 // config.seq_length),
            shuffle=False,
            max_windows=config.max_val_windows,
            sequence=sequence,
        )
    log.info(
        "training %s %dx%d on %s windows of %d characters (%d distinct), %s held out, "
        "%d steps per epoch, seed %d%s",
        config.cell,
        config.layers,
        config.units,
        f"{len(train_ids) - config.seq_length:,}",
        config.seq_length,
        len(corpus.chars),
        f"{max(0, len(val_ids) - config.seq_length):,} windows" if len(val_ids) else "nothing",
        steps,
        seed,
        f", resuming after epoch {initial_epoch}" if checkpoint else "",
    )
    started = time.perf_counter()
    if initial_epoch < config.epochs and multiworker:
        fit_distributed(
            model,
            strategy,
            train_ds,
            val_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps=steps,
            callbacks=callbacks,
        )
    elif initial_epoch < config.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            shuffle=False,  # the dataset shuffles itself, with the seed
            verbose=1 if config.verbose and sys.stdout.isatty() else 0,
            callbacks=callbacks,
        )
    seconds = time.perf_counter() - started + sum(history.get("seconds", [])[:initial_epoch])

    if early is not None and early.best_weights is not None:
        best = early.best_epoch  # the weights kept are this epoch's
    else:
        best = len(history.get("loss", [])) - 1
    facts = _final_facts(history, best)
    training: dict[str, Any] = {
        "corpus": corpus.name,
        "corpus_chars": len(corpus.text),
        "corpus_sha256": corpus_sha,
        "val_fraction": val_fraction,
        "mode": config.mode,
        # samples: windows (one target each) or, stateful, chunks (seq_length targets each)
        "train_windows" if not sequence else "train_chunks": samples_in(
            len(train_ids), config.seq_length, sequence
        ),
        "val_windows" if not sequence else "val_chunks": (
            samples_in(len(val_ids), config.seq_length, sequence) if len(val_ids) else 0
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
        "seed": seed,
        **facts,
        "train_seconds": round(seconds, 2),
        "keras": keras.__version__,
        "command": command_line(config, seed),
    }
    if not all(math.isfinite(v) for v in facts.values() if isinstance(v, float)):
        raise TrainingError(
            f"training diverged (final metrics {facts}); lower --learning-rate or keep "
            "gradient clipping on"
        )
    if not chief:
        return None
    if multiworker:
        # Export outside the strategy: its predict would wait for the other workers.
        trained, model = model, fresh_model()
        model.set_weights(trained.get_weights())
    architecture = {
        "cell": config.cell,
        "layers": config.layers,
        "units": config.units,
        "activation": config.resolved_activation(),
    }
    parity = np.lib.stride_tricks.sliding_window_view(train_ids[:-1], config.seq_length)
    if sequence:  # whole chunks, as trained, spread over the text
        parity = parity[:: config.seq_length]
    held_out = (
        np.lib.stride_tricks.sliding_window_view(val_ids[:-1], config.seq_length)
        if len(val_ids) > config.seq_length
        else None
    )
    title = f"{config.cell} {config.layers}x{config.units}, " + (
        f"stateful, chunks of {config.seq_length}" if sequence else f"window {config.seq_length}"
    )
    spec = export(
        model,
        chars=corpus.chars,
        seq_length=config.seq_length,
        out_dir=config.out_dir,
        windows=parity,
        prompt=corpus.sample_prompt(config.seq_length),
        architecture=architecture,
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
    return spec


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
