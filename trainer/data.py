"""Streamed training data: windows cut on the fly from the integer-encoded corpus (tf.data).

Memory is the corpus as int32 (4 bytes a character) plus a shuffle buffer of window start
offsets, never windows x seq_length x vocabulary as the notebook's one-hot arrays.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def windows_dataset(
    ids: np.ndarray,
    seq_length: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (windows [B, seq_length], next character [B]) over every window of `ids`."""
    n = len(ids) - seq_length
    if n < 1:
        raise ValueError(f"{len(ids)} characters make no window of {seq_length} plus a target")
    text = tf.constant(np.asarray(ids, dtype=np.int32))
    offsets = tf.range(seq_length, dtype=tf.int32)
    starts = tf.data.Dataset.range(n)
    if shuffle:
        # A full shuffle of the start offsets (8 bytes per window), fresh each epoch.
        starts = starts.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        starts = starts.repeat()

    def cut(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.cast(batch, tf.int32)
        return tf.gather(text, batch[:, None] + offsets), tf.gather(text, batch + seq_length)

    ds = starts.batch(batch_size).map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Shard by element when several workers read it: there are no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_in(ids_len: int, seq_length: int, batch_size: int) -> int:
    """Batches in one pass over every window."""
    return -(-(ids_len - seq_length) // batch_size)
