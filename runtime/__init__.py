"""rnn-textgen runtime: load an exported model and generate text with onnxruntime and NumPy."""

from .artifact import ModelSpec, TensorSpec, default_model_dir
from .decoding import GenerationOptions
from .errors import (
    ArtifactError,
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
    "GenerationSettingsError",
    "GenerationOptions",
    "Generator",
    "ModelNotFoundError",
    "ModelSpec",
    "PromptError",
    "TensorSpec",
    "TextgenError",
    "UnsupportedVersionError",
    "default_model_dir",
]
