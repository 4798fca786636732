"""Training state that survives Ctrl-C and kill -9: one complete checkpoint per epoch.

Each checkpoint is a directory `epoch-NNNN/` (model.keras with optimizer state, and
progress.json with the run's config, history and early-stopping state) written under a
temporary name and renamed into place, so a kill at any moment leaves the previous
checkpoint whole. `--resume` continues from the newest one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .errors import OutputDirError
from .publish import fsync_path

log = logging.getLogger(__name__)

STATE_DIR = ".train-state"
_CHECKPOINT = re.compile(r"^epoch-(\d{4,})$")
# progress.json holds the settings and every epoch's metrics: 100,000 epochs are a few MB.
MAX_PROGRESS_BYTES = 64 << 20


def state_dir(out_dir: Path) -> Path:
    """out_dir's training-state directory; OutputDirError if that name is a symbolic link:
    checkpoints would be written, and older ones deleted, wherever it points (a model
    directory from elsewhere could aim it at any folder of the user's)."""
    root = Path(out_dir) / STATE_DIR
    if root.is_symlink():
        raise OutputDirError(
            f"{root} is a symbolic link; textgen-train keeps its training state in a directory "
            "of its own there: remove the link"
        )
    return root


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    root = state_dir(out_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


def read_progress(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's progress.json, with the fields resuming reads; OutputDirError naming
    the way out if it is damaged (truncated, missing, not this program's)."""
    path = _checkpoint_file(checkpoint, "progress.json")
    try:
        if path.stat().st_size > MAX_PROGRESS_BYTES:
            raise damaged(checkpoint, f"progress.json is over {MAX_PROGRESS_BYTES:,} bytes")
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise damaged(checkpoint, "progress.json is missing") from None
    except RecursionError:  # brackets nested deeper than Python recurses
        raise damaged(checkpoint, "progress.json nests too deeply") from None
    except (OSError, ValueError) as exc:
        raise damaged(checkpoint, f"progress.json cannot be read: {exc}") from None
    ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("epoch"), int)
        and isinstance(doc.get("config"), dict)
        and isinstance(doc.get("history", {}), dict)
    )
    if not ok:
        raise damaged(checkpoint, "progress.json lacks the epoch, config or history")
    return doc


def _checkpoint_file(checkpoint: Path, name: str) -> Path:
    """checkpoint/name, refused as damaged when it is there but not a regular file (a FIFO
    would block the read forever); a missing one is left to the reader's own message."""
    path = checkpoint / name
    if path.exists() and not path.is_file():
        raise damaged(checkpoint, f"{name} is not a regular file")
    return path


def damaged(checkpoint: Path, problem: str) -> OutputDirError:
    root = checkpoint.parent
    return OutputDirError(
        f"the saved training state in {root} is damaged ({problem}); pass --force to start "
        f"over, or delete {root}"
    )


def load_checkpoint_model(checkpoint: Path) -> keras.Model:
    """The Keras model (with optimizer state) of a checkpoint, or OutputDirError."""
    from .model import load_keras

    path = _checkpoint_file(checkpoint, "model.keras")
    try:
        return load_keras(path)
    except Exception as exc:  # Keras raises many types for a damaged archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise damaged(checkpoint, f"model.keras cannot be loaded: {first}") from None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping (keeping the best weights) whose state a checkpoint can carry."""

    def __init__(self, patience: int, monitor: str = "val_loss") -> None:
        super().__init__(monitor=monitor, patience=patience, restore_best_weights=True)
        self._restored: dict[str, Any] | None = None

    def restore(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        self._restored = {**state, "best_weights": best_weights}

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored:
            self.wait = self._restored["wait"]
            self.best = self._restored["best"]
            self.best_epoch = self._restored["best_epoch"]
            self.best_weights = self._restored["best_weights"]

    def state(self) -> dict[str, Any]:
        best = None if self.best is None else float(self.best)
        return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: append to the history and write a complete checkpoint atomically."""

    def __init__(
        self,
        out_dir: Path,
        config: dict[str, Any],
        history: dict[str, list[float]],
        early_stopping: ResumableEarlyStopping | None = None,
        write: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.root = state_dir(out_dir)
        self.config = config
        self.history = history
        self.early_stopping = early_stopping
        self.write = write  # False on non-chief workers of a multi-worker run
        self.extra = extra or {}
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("seconds", []).append(time.perf_counter() - self._started)
        if not self.write:
            return
        final = self.root / f"epoch-{epoch + 1:04d}"
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        try:
            self._save(final, tmp, epoch)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # only if no earlier checkpoint is there
            then = "continue with --resume" if self.root.is_dir() else "train again"
            # Weights, plus Adam's two moments: about what one checkpoint takes.
            need = 3 * sum(int(np.prod(w.shape)) * 4 for w in self.model.weights)
            raise OutputDirError(
                f"cannot save the checkpoint of epoch {epoch + 1} in {self.root}: "
                f"{exc.strerror or exc} (a checkpoint needs about {need / 2**20:.1f} MB); "
                f"free some space, then {then}"
            ) from None

    def _save(self, final: Path, tmp: Path, epoch: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save(tmp / "model.keras")
        progress = {
            "epoch": epoch + 1,
            "config": self.config,
            "history": self.history,
            **self.extra,
        }
        if self.early_stopping is not None:
            progress["early_stopping"] = self.early_stopping.state()
            if self.early_stopping.best_weights is not None:
                np.savez(tmp / "best_weights.npz", *self.early_stopping.best_weights)
        (tmp / "progress.json").write_text(json.dumps(progress))
        for name in os.listdir(tmp):
            fsync_path(tmp / name)
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(self.root)
        # Older checkpoints go only once the new one is in place.
        for old in self.root.iterdir():
            m = _CHECKPOINT.match(old.name)
            if old != final and (m or old.name.startswith(".tmp-")):
                shutil.rmtree(old, ignore_errors=True)


def load_best_weights(checkpoint: Path) -> list[np.ndarray] | None:
    path = checkpoint / "best_weights.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


class EpochLine(keras.callbacks.Callback):
    """One line per epoch with the metrics that matter and an ETA for the whole run."""

    def __init__(self, epochs: int, stream=None, time_limit: float | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.time_limit = time_limit  # seconds of training (--time-limit), or None
        self._run_start = time.perf_counter()
        self._first_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first_epoch is None:
            self._first_epoch = epoch
            self._run_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        done = epoch + 1 - (self._first_epoch or 0)
        elapsed = time.perf_counter() - self._run_start
        eta = elapsed / max(done, 1) * (self.epochs - epoch - 1)
        if self.time_limit is not None:  # the run ends at the limit if that comes first
            eta = min(eta, max(0.0, self.time_limit - elapsed))
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "bpc", "val_loss", "val_accuracy", "val_bpc"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"{elapsed / max(done, 1):.1f}s/epoch, ETA {_duration(eta)}")
        print("  ".join(parts), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch that would leave too little time for another one."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._start = time.perf_counter()
        self._longest = 0.0
        self._epoch_start = self._start

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self._longest = max(self._longest, now - self._epoch_start)
        if now - self._start + self._longest > self.seconds:
            log.info("time limit: stopping after epoch %d", epoch + 1)
            self.model.stop_training = True


class StopOnDivergence(keras.callbacks.Callback):
    """Stop after the first epoch whose training or validation loss is not finite: the
    weights do not come back from NaN, and every epoch after it was time spent for nothing
    (the run then ends with the divergence error, or exports early stopping's best epoch)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        losses = [v for k, v in (logs or {}).items() if k in ("loss", "val_loss")]
        if not all(np.isfinite(float(v)) for v in losses):
            log.info("loss is not finite: stopping after epoch %d", epoch + 1)
            self.model.stop_training = True
