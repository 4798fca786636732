"""The training loop for several hosts (MultiWorkerMirroredStrategy).

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
reproduced here with two local workers), so for that strategy the trainer drives the same
epochs, metrics and callbacks itself: one `strategy.run` per batch, the gradients summed
across every replica by the Keras optimizer, and the metrics summed across workers, so every
worker sees the same numbers and takes the same decisions. Only the chief writes anything.
"""

from __future__ import annotations

import multiprocessing.pool
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from runtime.artifact import bits_per_char

SUM = tf.distribute.ReduceOp.SUM


def _sum_of_first_replicas(strategy: Any, value: np.ndarray, contribute: bool) -> np.ndarray:
    """All-reduce in which each worker adds `value` once (from its first replica) if it
    `contribute`s, and zeros otherwise; every worker gets the sum."""
    local = len(strategy.extended.worker_devices)
    value = np.asarray(value)
    zeros = np.zeros_like(value)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            value if contribute and ctx.replica_id_in_sync_group % local == 0 else zeros
        )
    )
    return strategy.reduce(SUM, per_replica, axis=None).numpy()


def close_abandoned_pools(exc: BaseException) -> None:
    """Close the thread pools a failed eager all-reduce left open in `exc`'s frames.

    TensorFlow's CollectiveAllReduce opens a ThreadPool per eager reduce and closes it only
    when the reduce succeeds. Left open, the pool is finalized at interpreter exit, where its
    `__del__` may write to an already closed pipe and print a traceback under our one-line
    error. Closing it now, while the pipe is open, makes that `__del__` a no-op.
    """
    seen: set[int] = set()
    chain: BaseException | None = exc
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        tb = chain.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, multiprocessing.pool.Pool):
                    value.close()
            tb = tb.tb_next
        chain = chain.__cause__ or chain.__context__


def broadcast_from_chief(strategy: Any, values: Sequence[np.ndarray], chief: bool) -> list:
    """The chief's `values` on every worker: only the chief contributes, so the sum is
    exactly its numbers."""
    return [_sum_of_first_replicas(strategy, v, chief) for v in values]


def broadcast_any(strategy: Any, flag: bool) -> bool:
    """True on every worker if `flag` is true on any."""
    return bool(_sum_of_first_replicas(strategy, np.float32(flag), True) > 0)


def sync_from_chief(
    strategy: Any, model: keras.Model, saved: keras.Model | None, chief: bool
) -> None:
    """Give every worker the chief's weights and optimizer state: those of `saved` (the
    checkpoint the chief resumes from) when given, else the chief's own."""

    def state(m: keras.Model) -> list[Any]:
        return [*m.variables, *m.optimizer.variables]

    targets = state(model)
    source = targets if saved is None else state(saved)
    shared = broadcast_from_chief(strategy, [v.numpy() for v in source], chief)
    for variable, value in zip(targets, shared, strict=True):
        variable.assign(value)


def _sums(y: tf.Tensor, probs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Summed cross-entropy, correct predictions and targets: they add up across replicas."""
    per_target = keras.losses.sparse_categorical_crossentropy(y, probs)
    predicted = tf.argmax(probs, axis=-1, output_type=y.dtype)
    hits = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32))
    count = tf.cast(tf.size(per_target), tf.float32)
    return tf.reduce_sum(per_target), hits, count


def _logs(totals: np.ndarray, prefix: str = "") -> dict[str, float]:
    """The metric names and values `fit` reports: loss, accuracy and bits per character."""
    loss_sum, hits, count = (float(t) for t in totals)
    loss = loss_sum / max(count, 1.0)
    return {
        f"{prefix}loss": loss,
        f"{prefix}accuracy": hits / max(count, 1.0),
        f"{prefix}bpc": bits_per_char(loss),
    }


def fit_distributed(
    model: keras.Model,
    strategy: Any,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    *,
    epochs: int,
    initial_epoch: int,
    steps: int,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`model.fit(train_ds, validation_data=val_ds, ...)` for MultiWorkerMirroredStrategy.

    The model must be compiled (its optimizer applies the gradients) and built in
    strategy.scope(); `train_ds` yields global batches and repeats for every epoch.
    """
    batches = iter(strategy.experimental_distribute_dataset(train_ds))
    val_batches = None if val_ds is None else strategy.experimental_distribute_dataset(val_ds)
    variables = model.trainable_variables

    def replica_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            total, hits, count = _sums(y, probs)
            # The mean over the whole global batch: replicas may hold unequal (even empty)
            # shares of a pass's last batch, so each divides by the global count.
            global_count = tf.distribute.get_replica_context().all_reduce(SUM, count)
            loss = total / tf.maximum(global_count, 1.0)
        grads = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(grads, variables, strict=True))  # all-reduces
        return tf.stack([total, hits, count])

    @tf.function
    def train_step(iterator: Any) -> tf.Tensor:
        return strategy.reduce(SUM, strategy.run(replica_step, args=next(iterator)), axis=None)

    @tf.function
    def val_step(batch: Any) -> tf.Tensor:
        def replica(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            return tf.stack(_sums(y, model(x, training=False)))

        return strategy.reduce(SUM, strategy.run(replica, args=batch), axis=None)

    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        totals = np.zeros(3)
        for _ in range(steps):
            totals += train_step(batches).numpy()
        logs = _logs(totals)
        if val_batches is not None:
            val_totals = np.zeros(3)
            for batch in val_batches:
                val_totals += val_step(batch).numpy()
            logs |= _logs(val_totals, "val_")
        hooks.on_epoch_end(epoch, logs)
        # A worker's time limit or early stopping stops them all, after the same epoch.
        if broadcast_any(strategy, bool(model.stop_training)):
            break
    hooks.on_train_end()
