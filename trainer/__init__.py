"""rnn-textgen trainer: fit character RNNs with Keras and export them for the runtime."""

import os

# TensorFlow's C++ logging prints harmless optimizer chatter at every conversion; users who
# want it back can set TF_CPP_MIN_LOG_LEVEL themselves before running.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
