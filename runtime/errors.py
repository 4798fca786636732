"""Exceptions raised by the runtime; the CLIs turn them into one-line messages."""

from __future__ import annotations


class TextgenError(Exception):
    """Base class of every error the runtime (and the trainer) raises on purpose.

    The message is one line that says what is wrong and what to do about it.
    """


class ModelNotFoundError(TextgenError):
    """The model directory, model.onnx or vocab.json does not exist."""


class ArtifactError(TextgenError):
    """An artifact exists but cannot be used: corrupt, truncated, malformed or mismatched."""


class UnsupportedVersionError(ArtifactError):
    """vocab.json declares a format version this runtime does not understand."""


class PromptError(TextgenError, ValueError):
    """The prompt cannot be fed to the model (empty, too short, unknown characters)."""


class GenerationSettingsError(TextgenError, ValueError):
    """A generation setting is out of range (for example a length of zero)."""


class ContextError(TextgenError):
    """Saved context data that this model cannot restore (another model's, or damaged)."""


class WebSiteError(TextgenError):
    """`textgen web` cannot write the site (an existing SITE, an incomplete dist folder)."""
