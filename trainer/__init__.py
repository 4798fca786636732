"""rnn-textgen trainer: fit character RNNs with Keras and export them for the runtime."""

from __future__ import annotations

import os
import sys
import tempfile

# TensorFlow's C++ logging prints harmless optimizer chatter at every conversion; users who
# want it back can set TF_CPP_MIN_LOG_LEVEL themselves before running.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# What `import tensorflow` writes from C++ on every start (measured with TF 2.21), before
# TF_CPP_MIN_LOG_LEVEL is read: absl's pre-init banner, oneDNN and CUDA probing, CPU flags.
_START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines dropped; anything else it writes is kept.

    They are written straight to file descriptor 2, so the import runs with fd 2 pointed at
    a temporary file, which is filtered and passed on afterwards (also when the import
    fails, so its reasons still show).
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _START_UP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
