"""Exceptions raised by the trainer; like the runtime's, each message is one actionable line."""

from __future__ import annotations

from runtime.errors import TextgenError


class CorpusError(TextgenError):
    """The training corpus is missing, unreadable, not UTF-8 or too short."""


class OutputDirError(TextgenError):
    """The output directory cannot be written, or holds a model and --force was not given."""


class ExportError(TextgenError):
    """The exported graph failed its own verification; nothing was published."""


class TrainingError(TextgenError):
    """Training settings that cannot work together, or a --resume that does not fit."""
