"""rnn-textgen runtime: load an exported model and generate text with onnxruntime and NumPy."""

from .artifact import ModelSpec, StateSpec, TensorSpec, default_model_dir
from .decoding import GenerationOptions, GenerationResult
from .errors import (
    ArtifactError,
    ContextError,
    GenerationSettingsError,
    ModelNotFoundError,
    PromptError,
    TextgenError,
    UnsupportedVersionError,
)
from .generator import MAX_LENGTH, Generator

__all__ = [
    "MAX_LENGTH",
    "ArtifactError",
    "ContextError",
    "GenerationSettingsError",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "ModelNotFoundError",
    "ModelSpec",
    "PromptError",
    "StateSpec",
    "TensorSpec",
    "TextgenError",
    "UnsupportedVersionError",
    "default_model_dir",
]
