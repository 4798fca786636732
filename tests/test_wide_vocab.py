"""Vocabularies of ONE_HOT_OP_CHARS characters or more (a CJK corpus): the graph one-hot
encodes with an OneHot node instead of a [vocabulary, vocabulary] identity table, which
made a 5,000-character model.onnx 102 MB (100 MB of it the table) and its process 360 MB.
"""

from __future__ import annotations

import ast
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import edit_vocab, reseal
from onnx import helper, numpy_helper

from runtime import GenerationOptions, Generator
from runtime.artifact import MODEL_FILE, ONE_HOT_OP_CHARS, VOCAB_FILE
from runtime.cli import VOCAB_LINE_CHARS, main
from runtime.errors import ArtifactError

WIDE = ONE_HOT_OP_CHARS + 76  # conftest's wide_models


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_the_graph_one_hot_encodes_with_onehot_and_says_version_3(wide_models, mode: str) -> None:
    model = onnx.load(wide_models[mode] / MODEL_FILE)
    ops = [n.op_type for n in model.graph.node]
    assert "OneHot" in ops and "Gather" not in ops
    assert all(t.name != "one_hot_table" for t in model.graph.initializer)
    # The whole file is under a quarter of what the identity table alone would be (4.8 MB).
    assert (wide_models[mode] / MODEL_FILE).stat().st_size < WIDE * WIDE * 4 / 4
    doc = json.loads((wide_models[mode] / VOCAB_FILE).read_text())
    assert doc["version"] == 3 and len(doc["chars"]) == WIDE


@pytest.mark.parametrize("mode", ["window", "stateful"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_way_of_running_it_gives_the_same_text(
    wide_models, mode: str, precision: str
) -> None:
    prompt = wide_models["prompt"]
    ours = Generator.load(wide_models[mode], precision=precision)
    native = Generator.load(wide_models[mode], precision=precision, graph_builder="native")
    if mode == "stateful":  # the decomposed step graphs fold the OneHot into their tables
        assert ours.graph_builder == "decomposed"
    sampled = GenerationOptions(temperature=0.8, seed=1)
    assert ours.generate(prompt, 300) == native.generate(prompt, 300)
    assert ours.generate(prompt, 50, sampled) == native.generate(prompt, 50, sampled)
    batch = [prompt, prompt[::-1]]
    assert ours.generate_batch(batch, 40) == [native.generate(p, 40) for p in batch]


def test_a_wide_model_written_with_a_table_still_loads(wide_models, tmp_path) -> None:
    # Files written before version 3 one-hot encoded every vocabulary with an identity
    # table: the runtime reads them as they are, whatever their size.
    old = tmp_path / "old"
    shutil.copytree(wide_models["stateful"], old)
    model = onnx.load(old / MODEL_FILE)
    i, node = next((i, n) for i, n in enumerate(model.graph.node) if n.op_type == "OneHot")
    model.graph.node.remove(node)
    model.graph.node.insert(i, helper.make_node("Gather", ["one_hot_table", node.input[0]], ["x0"]))
    for t in [t for t in model.graph.initializer if t.name.startswith("one_hot_")]:
        model.graph.initializer.remove(t)
    model.graph.initializer.append(
        numpy_helper.from_array(np.eye(WIDE, dtype=np.float32), "one_hot_table")
    )
    onnx.save(model, old / MODEL_FILE)
    edit_vocab(old, lambda d: (d.__setitem__("version", 2), d.__setitem__("variants", {})))
    reseal(old)
    prompt = wide_models["prompt"]
    for builder in ("decomposed", "native"):
        then = Generator.load(old, graph_builder=builder)
        assert then.generate(prompt, 200) == Generator.load(wide_models["stateful"]).generate(
            prompt, 200
        )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.CopyFrom(numpy_helper.from_array(np.array(WIDE - 1, np.int32), t.name)), ""),
        (lambda t: t.CopyFrom(numpy_helper.from_array(np.array(1 << 30, np.int32), t.name)), ""),
        (lambda t: t.CopyFrom(numpy_helper.from_array(np.array(-1, np.int32), t.name)), "depth"),
    ],
)
def test_a_onehot_that_is_not_ours_is_refused(wide_models, tmp_path, change, needle: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(wide_models["window"], bad)
    model = onnx.load(bad / MODEL_FILE)
    change(next(t for t in model.graph.initializer if t.name == "one_hot_depth"))
    onnx.save(model, bad / MODEL_FILE)
    edit_vocab(bad, lambda d: d.__setitem__("variants", {}))
    reseal(bad)
    with pytest.raises(ArtifactError, match=f"not a graph textgen-train writes.*{needle}"):
        Generator.load(bad)


def test_onehot_below_the_threshold_is_refused(tmp_path, model_copy) -> None:
    # The trainer writes OneHot only from ONE_HOT_OP_CHARS characters: a small vocabulary's
    # graph with one is not a graph it wrote.
    model = onnx.load(model_copy / MODEL_FILE)
    i, node = next((i, n) for i, n in enumerate(model.graph.node) if n.op_type == "Gather")
    model.graph.node.remove(node)
    onehot = helper.make_node("OneHot", [node.input[1], "depth", "values"], ["x0"], axis=-1)
    model.graph.node.insert(i, onehot)
    vocab = len(json.loads((model_copy / VOCAB_FILE).read_text())["chars"])
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(vocab, np.int32), "depth"),
            numpy_helper.from_array(np.array([0, 1], np.float32), "values"),
        ]
    )
    onnx.save(model, model_copy / MODEL_FILE)
    reseal(model_copy)
    with pytest.raises(ArtifactError, match=f"writes OneHot from {ONE_HOT_OP_CHARS}"):
        Generator.load(model_copy)


def test_info_prints_a_wide_vocabulary_in_lines_that_hold_every_character(wide_models) -> None:
    # One line of 1,100 characters (15 KB for a 5,000-character model) was the model card.
    result = CliRunner().invoke(main, ["info", "--model", str(wide_models["window"])])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("vocabulary:"))
    assert lines[at] == f"vocabulary:  {WIDE:,} characters:"
    rows = []
    for line in lines[at + 1 :]:
        if not line.startswith(" " * 13):
            break
        rows.append(ast.literal_eval(line.strip()))  # each line a Python string literal
    chars = json.loads((wide_models["window"] / VOCAB_FILE).read_text(encoding="utf-8"))["chars"]
    assert "".join(rows) == "".join(chars)
    assert len(rows) == -(-WIDE // VOCAB_LINE_CHARS)
    assert all(len(row) <= VOCAB_LINE_CHARS for row in rows)
