"""Helpers the tests share (imported as `from helpers import ...`; fixtures stay in conftest)."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.artifact import MODEL_FILE, VOCAB_FILE

REPO = Path(__file__).resolve().parent.parent


def edit_vocab(model_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply `edit` to model_dir/vocab.json in place."""
    path = model_dir / VOCAB_FILE
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def reseal(model_dir: Path) -> None:
    """Make vocab.json's sha256 match whatever model.onnx now holds."""
    digest = hashlib.sha256((model_dir / MODEL_FILE).read_bytes()).hexdigest()
    edit_vocab(model_dir, lambda d: d.__setitem__("model_sha256", digest))


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT: a shell without job control
    starts background jobs with SIGINT ignored and children inherit that, so a Ctrl-C test
    run from such a job would test nothing; give the child a terminal user's disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
