"""Clients that are not onnxruntime: every exported file is valid ONNX by the `onnx`
package's own checker (full check: types and shapes inferred strictly), and onnx's
reference implementation of the operator specifications, plain NumPy written from the spec,
computes the same probabilities, choices and states as onnxruntime on our fp32 graphs. A
client written from the ONNX specification alone reads our files as we do.

The reference implementation lacks two things our files use, so those files get the checker
only: a relu `RNN` (its RNN implements Tanh alone) and opset 17's `DequantizeLinear` (it
implements opset 19 and later), and it has no `com.microsoft` operators (int8 LSTM).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from runtime.artifact import MODEL_FILES, VOCAB_FILE, default_model_dir


def _models(stateful_models: dict, wide_models: dict) -> dict[str, Path]:
    return {
        "default (relu SimpleRNN window)": default_model_dir(),
        "stateful LSTM": stateful_models["lstm"],
        "stateful GRU": stateful_models["gru"],
        "window LSTM, OneHot": wide_models["window"],
        "stateful GRU, OneHot": wide_models["stateful"],
    }


def _feeds(session: ort.InferenceSession, spec: dict, rng: np.random.Generator) -> dict:
    """Three rows of the model's own character ids (a stateful model: 7 characters and
    random states; a window model: one window each)."""
    feeds = {}
    for i in session.get_inputs():
        if i.type.startswith("tensor(int"):
            length = spec["seq_length"] if spec["mode"] == "window" else 7
            ids = rng.integers(0, len(spec["chars"]), (3, length))
            feeds[i.name] = ids.astype(np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = rng.uniform(-0.5, 0.5, (3, i.shape[1])).astype(np.float32)
    return feeds


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_exported_file_passes_the_onnx_checker(stateful_models, wide_models, precision):
    checked = 0
    for name, path in _models(stateful_models, wide_models).items():
        file = path / MODEL_FILES[precision]
        if not file.exists():  # the shipped model has no int8 variant
            assert precision == "int8" and name.startswith("default"), name
            continue
        model = onnx.load(file)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        outputs = {o.name: o for o in inferred.graph.output}
        assert outputs["probs"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, name
        assert outputs["next"].type.tensor_type.elem_type == onnx.TensorProto.INT64, name
        checked += 1
    assert checked == (5 if precision == "fp32" else 4)


def test_the_onnx_reference_implementation_agrees_with_onnxruntime(stateful_models, wide_models):
    rng = np.random.default_rng(0)
    compared = []
    for name, path in _models(stateful_models, wide_models).items():
        if name.startswith("default"):  # relu RNN: see the module docstring
            continue
        spec = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
        model = onnx.load(path / MODEL_FILES["fp32"])
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        feeds = _feeds(session, spec, rng)
        ours = dict(zip(names, session.run(names, feeds), strict=True))
        reference = dict(zip(names, ReferenceEvaluator(model).run(names, feeds), strict=True))
        np.testing.assert_allclose(reference["probs"], ours["probs"], atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(reference["next"], ours["next"], err_msg=name)
        for state in spec["graph"].get("states", []):
            out = state["output"]
            np.testing.assert_allclose(reference[out], ours[out], atol=1e-5, err_msg=name)
        compared.append(name)
    assert len(compared) == 4
