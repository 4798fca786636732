"""Streamed training data: windows cut on the fly from the integer-encoded corpus (tf.data).

Memory is the corpus as int32 (4 bytes a character) plus one epoch's permutation of window
start offsets (4 bytes a window), never windows x seq_length x vocabulary as the notebook's
one-hot arrays. (tf.data's own shuffle buffer was measured at several hundred bytes per
element: 3.5 GB for a 4 MB corpus.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # Shard by element when several workers read it: there are no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _cutter(ids: np.ndarray, seq_length: int, sequence: bool):
    text = tf.constant(np.asarray(ids, dtype=np.int32))
    offsets = tf.range(seq_length, dtype=tf.int32)

    def cut(starts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        window = starts[:, None] + offsets
        if sequence:  # many-to-many: the target at every position is the next character
            return tf.gather(text, window), tf.gather(text, window + 1)
        return tf.gather(text, window), tf.gather(text, starts + seq_length)

    return cut


def windows_dataset(
    ids: np.ndarray,
    seq_length: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epochs: tuple[int, int] = (0, 1),
    max_windows: int | None = None,
    skip_batches: int = 0,
    sequence: bool = False,
) -> tf.data.Dataset:
    """Batches of (windows [B, seq_length], next character [B]) over the windows of `ids`.

    With `shuffle`, each epoch in range(*epochs) visits every window once in its own order,
    a stateless function of (seed, epoch): the same run gives the same batches, and a
    resumed run picks up with the order the interrupted one would have used.
    `max_windows` keeps an evenly strided subset (for validation on long texts).
    `skip_batches` drops batches before any window is cut (to resume mid-pass cheaply).

    `sequence` (stateful models) cuts chunks instead: seq_length characters and the
    seq_length characters one position later, every seq_length-th start (no overlap), so an
    epoch sees each character once as a target, as char-rnn and the TF tutorial do.
    """
    n = len(ids) - seq_length
    if n < 1:
        raise ValueError(f"{len(ids)} characters make no window of {seq_length} plus a target")
    step = seq_length if sequence else 1
    count = -(-n // step)
    stride = step * (1 if max_windows is None else max(1, -(-count // max_windows)))
    cut = _cutter(ids, seq_length, sequence)
    if not shuffle:
        starts = tf.data.Dataset.range(0, n, stride).map(lambda s: tf.cast(s, tf.int32))
        ds = starts.batch(batch_size)
    else:

        def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(0, n, stride, dtype=tf.int32),
                seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
            )
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        ds = tf.data.Dataset.range(*epochs).flat_map(one_epoch)
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)


def samples_in(ids_len: int, seq_length: int, sequence: bool = False) -> int:
    """Windows (or, for sequence models, non-overlapping chunks) in one pass."""
    n = ids_len - seq_length
    return -(-n // seq_length) if sequence else n


def steps_in(ids_len: int, seq_length: int, batch_size: int, sequence: bool = False) -> int:
    """Batches in one pass over every window (or chunk)."""
    return -(-samples_in(ids_len, seq_length, sequence) // batch_size)
