"""The trainer: corpus checks, determinism, verified export, atomic publish, re-export."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE, ModelSpec
from trainer import export as export_mod
from trainer.cli import main
from trainer.config import check_exportable
from trainer.corpus import DEFAULT_TEXT, Corpus
from trainer.errors import CorpusError, ExportError, OutputDirError, TrainingError
from trainer.export import KERAS_FILE, keras_greedy, reexport
from trainer.model import load_keras
from trainer.train import TrainConfig, train

TINY = {"seq_length": 4, "units": 8, "epochs": 2}


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def snapshot(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# --- corpus -------------------------------------------------------------------------------


def test_builtin_corpus_is_the_notebooks_sentence() -> None:
    c = Corpus.read(None)
    assert c.text == DEFAULT_TEXT
    assert c.chars == tuple(sorted(set(DEFAULT_TEXT)))
    x, y = c.windows(3)
    # The notebook: every window of 3 characters, labelled with the character after it.
    assert len(x) == len(DEFAULT_TEXT) - 3
    for i in (0, 10, len(x) - 1):
        assert "".join(c.chars[j] for j in x[i]) == DEFAULT_TEXT[i : i + 3]
        assert c.chars[y[i]] == DEFAULT_TEXT[i + 3]


def test_utf8_with_bom_and_non_ascii(tmp_path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeffnaïve café ñ".encode())
    c = Corpus.read(p)
    assert c.text == "naïve café ñ" and "ï" in c.chars and "\ufeff" not in c.chars


def test_line_endings_stay_as_they_are(tmp_path) -> None:
    """No newline translation (the README says so): a CRLF file's \\r is learned, and a
    lone \\r or LF reads as written."""
    p = tmp_path / "c.txt"
    p.write_bytes(b"one\r\ntwo\nthree\rfour\r\n")
    c = Corpus.read(p)
    assert c.text == "one\r\ntwo\nthree\rfour\r\n" and {"\r", "\n"} <= set(c.chars)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"abc\xff\xfedef", r"not UTF-8 \(bad byte at offset 3\)"),
        ("text\n".encode("utf-16"), r"is UTF-16 .*iconv -f UTF-16 -t UTF-8"),
        (gzip.compress(b"text " * 50), r"is gzip-compressed, not text; .*<\(zcat .*corpus.txt\)"),
        (bz2.compress(b"text " * 50), r"is bzip2-compressed, .*<\(bzcat "),
        (lzma.compress(b"text " * 50), r"is xz-compressed, .*<\(xzcat "),
    ],
)
def test_bad_corpus(tmp_path, content, message) -> None:
    p = tmp_path / "corpus.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        Corpus.read(p)


def test_corpus_directory(tmp_path) -> None:
    with pytest.raises(CorpusError, match="is a directory"):
        Corpus.read(tmp_path)


def test_corpus_device_is_refused_and_a_fifo_is_read(tmp_path) -> None:
    # /dev/zero would be read until memory ran out; a FIFO ends, as `<(zcat c.gz)` does.
    with pytest.raises(CorpusError, match="is a device or socket, not a text file"):
        Corpus.read(Path("/dev/zero"))
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("ab ba ab",))
    writer.start()
    assert Corpus.read(fifo).chars == (" ", "a", "b")
    writer.join()


def test_corpus_shorter_than_a_window(tmp_path) -> None:
    p = tmp_path / "short.txt"
    p.write_text("abc")
    with pytest.raises(CorpusError, match="needs at least seq_length \\+ 1 = 4"):
        Corpus.read(p).windows(3)
    Corpus.read(p).windows(2)  # exactly seq_length + 1 characters is enough


# --- output directory ---------------------------------------------------------------------


def test_unwritable_out_fails_before_training(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="cannot write to output directory"):
        train(TrainConfig(out_dir=blocker / "sub", **TINY))


def test_existing_model_needs_force(tmp_path, tiny_model) -> None:
    with pytest.raises(OutputDirError, match="--force"):
        train(TrainConfig(out_dir=tiny_model, **TINY))


# --- training and export ------------------------------------------------------------------


def test_same_seed_same_weights(tmp_path, corpus_file) -> None:

    weights = []
    for name in ("a", "b"):
        train(TrainConfig(out_dir=tmp_path / name, corpus=corpus_file, seed=3, **TINY))
        weights.append(load_keras(tmp_path / name / KERAS_FILE).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    spec_a = ModelSpec.read(tmp_path / "a")
    spec_b = ModelSpec.read(tmp_path / "b")
    assert spec_a.training["loss"] == spec_b.training["loss"]


def test_end_to_end_train_export_generate(tiny_model, corpus_file) -> None:

    spec = ModelSpec.read(tiny_model)
    corpus = Corpus.read(corpus_file)
    assert spec.chars == corpus.chars and spec.seq_length == 5
    assert spec.training["parity_max_abs_diff"] <= 1e-5
    # A corpus file holds out its last 10% by default; windows never straddle the cut.
    assert spec.training["val_fraction"] == 0.1
    assert spec.training["train_windows"] + spec.training["val_windows"] == len(corpus.text) - 10
    assert spec.training["command"].startswith("textgen-train train --corpus")
    gen = Generator.load(tiny_model)
    prompt = spec.training["sample_prompt"]
    model = load_keras(tiny_model / KERAS_FILE)
    expected = keras_greedy(model, gen.encode(prompt), 5, 40)
    assert gen.generate(prompt, 40) == prompt + "".join(spec.chars[i] for i in expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_other_cells_export_with_parity(tmp_path, corpus_file, cell) -> None:
    spec = train(
        TrainConfig(out_dir=tmp_path / cell, corpus=corpus_file, cell=cell, seed=1, **TINY)
    )
    assert spec.architecture["cell"] == cell and spec.architecture["activation"] == "tanh"
    assert spec.training["parity_max_abs_diff"] <= 1e-5
    assert len(Generator.load(tmp_path / cell).generate("The quick", 10)) == 19


def test_failed_verification_publishes_nothing(tmp_path, tiny_model, monkeypatch) -> None:
    before = snapshot(tiny_model)
    # Force the parity check to fail: no tolerance can be met below zero.
    monkeypatch.setattr(export_mod, "PARITY_ATOL", -1.0)
    with pytest.raises(ExportError, match="nothing was published"):
        reexport(tiny_model, force=True)
    assert snapshot(tiny_model) == before  # no partial file, no staging directory left


def test_reexport_reproduces_the_same_model(tmp_path, tiny_model) -> None:
    out = tmp_path / "again"
    spec = reexport(tiny_model, out)
    old = ModelSpec.read(tiny_model)
    assert (spec.chars, spec.seq_length, spec.architecture) == (
        old.chars,
        old.seq_length,
        old.architecture,
    )
    assert spec.training["seed"] == old.training["seed"]
    a, b = Generator.load(tiny_model), Generator.load(out)
    prompt = old.training["sample_prompt"]
    assert a.generate(prompt, 50) == b.generate(prompt, 50)
    assert sorted(p.name for p in out.iterdir()) == sorted([KERAS_FILE, MODEL_FILE, VOCAB_FILE])


def test_reexport_refuses_to_clobber_another_dir_without_force(tmp_path, tiny_model) -> None:
    out = tmp_path / "taken"
    reexport(tiny_model, out)
    with pytest.raises(OutputDirError, match="--force"):
        reexport(tiny_model, out)


# --- the CLI ------------------------------------------------------------------------------


def test_cli_train_then_generate(tmp_path, corpus_file) -> None:
    out = tmp_path / "m"
    result = cli(
        "train",
        "--corpus",
        str(corpus_file),
        "--out",
        str(out),
        "--seq-length",
        "4",
        "--units",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "0.01",
        "--seed",
        "5",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert f"textgen generate --model {out}" in result.output
    doc = json.loads((out / VOCAB_FILE).read_text())
    assert doc["training"]["batch_size"] == 16 and doc["training"]["learning_rate"] == 0.01
    assert "--batch-size 16" in doc["training"]["command"]


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("units", 0, "units must be a whole number from 1 to 8,192, got 0"),
        ("epochs", -1, "epochs must be a whole number from 1 to 100,000"),
        ("epochs", 1.5, "epochs must be a whole number"),
        ("learning_rate", float("nan"), "learning_rate must be a number above 0 and at most 10"),
        ("batch_size", "32", "batch_size must be a whole number"),
        ("layers", True, "layers must be a whole number"),
        ("dropout", 1.0, "dropout must be a number at least 0 and below 1"),
    ],
)
def test_library_settings_have_the_clis_ranges(tmp_path, setting, value, fragment) -> None:
    # The CLI's click ranges came from TrainConfig; the library took anything: units=0 or
    # seq_length=0 reached Keras, epochs=-1 trained nothing and published it.
    config = TrainConfig(out_dir=tmp_path / "m", **{setting: value})
    with pytest.raises(TrainingError, match=re.escape(fragment)):
        train(config)
    assert not (tmp_path / "m").exists()


def test_divergence_stops_at_the_first_epoch_that_is_not_finite(tmp_path, corpus_file) -> None:
    result = cli(
        "train", "--corpus", str(corpus_file), "--out", str(tmp_path / "m"), "--units", "256",
        "--mode", "stateful", "--seq-length", "20", "--learning-rate", "5", "--no-clip",
        "--epochs", "40", "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0], result.output
    first = int(re.search(r"not finite from epoch (\d+)", errors[0]).group(1))
    epochs = [ln for ln in result.output.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == first < 40 and " nan " in epochs[-1]  # no epoch after it ran


def test_vocabulary_too_large_to_load_is_refused_before_training(tmp_path) -> None:
    # A model.onnx over what the runtime loads was learned only at the export, after all
    # the run's epochs. (From ONE_HOT_OP_CHARS characters the graph one-hot encodes with an
    # OneHot node: 12,000 characters once made a 577 MB identity table, now nothing.)
    corpus = tmp_path / "plane2.txt"
    corpus.write_text("".join(chr(0x20000 + i) for i in range(60_000)) * 2, encoding="utf-8")
    out = tmp_path / "m"
    result = cli(
        "train", "--corpus", str(corpus), "--out", str(out), "--cell", "lstm", "--units", "512"
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "Error: the corpus has 60,000 distinct characters: with 1 x 512 units model.onnx "
        "would be about 619 MB"
    )
    assert "use fewer --units" in result.output and not out.exists()
    check_exportable(TrainConfig(out_dir=out, units=8), 12_000)  # 0.8 MB
    check_exportable(TrainConfig(out_dir=out, units=512, cell="lstm"), 30_000)  # 312 MB


def test_a_corpus_with_nul_and_escape_characters_exports(tmp_path) -> None:
    # Its sample prompt (the corpus' start) went to the export's fresh-process check as a
    # command-line argument, which cannot hold a NUL: the finished run lost its export.
    corpus = tmp_path / "dump.txt"
    corpus.write_text("a\x00b\x00c\x00d\x1b[31m red \x1b[0m" * 40, encoding="utf-8")
    out = tmp_path / "m"
    result = cli("train", "--corpus", str(corpus), "--out", str(out), "--epochs", "2")
    assert result.exit_code == 0, result.output
    gen = Generator.load(out)
    assert gen.spec.sample_prompt.startswith("a\x00b") and "\x00" in gen.spec.chars
    assert gen.generate(gen.spec.sample_prompt, 20).startswith(gen.spec.sample_prompt)


def test_file_names_that_are_not_utf8_or_hold_spaces(tmp_path, corpus_file) -> None:
    # Linux names are bytes: a corpus named in Latin-1 put a lone surrogate into vocab.json,
    # which the runtime refuses, so the finished run's export was lost.
    where = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9 texts"))
    where.mkdir()
    corpus = where / "b\udcfck one.txt"  # the byte 0xfc
    corpus.write_bytes(corpus_file.read_bytes())
    out = where / "my model"
    result = cli(
        "train", "--corpus", str(corpus), "--out", str(out), "--seq-length", "4",
        "--units", "8", "--epochs", "1", "--seed", "5", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    training = Generator.load(out).spec.training
    assert training["corpus"] == "b\ufffdk one.txt"
    command = training["command"]
    assert "--corpus '" in command and "/caf\ufffd texts/my model'" in command
    # Quoted (it holds a space) and printable: a UTF-8 terminal failed on the lone surrogate.
    assert f"--model '{str(out).replace(chr(0xDCE9), chr(0xFFFD))}'" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--corpus", "/no/such/file.txt"], "not found"),
        (["--seq-length", "0"], "--seq-length"),
        (["--epochs", "0"], "--epochs"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--cell", "transformer"], "--cell"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, args, fragment) -> None:
    result = cli("train", "--out", str(tmp_path / "m"), *args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert not (tmp_path / "m" / MODEL_FILE).exists()


def test_cli_corpus_errors(tmp_path) -> None:
    cases = {"empty.txt": b"", "latin1.txt": "caf\xe9".encode("latin-1"), "short.txt": b"ab"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = cli("train", "--corpus", str(tmp_path / name), "--out", str(tmp_path / "m"))
        assert result.exit_code == 1, (name, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("Error"), name


def test_cli_unwritable_out_and_existing_model(tmp_path, tiny_model) -> None:
    (tmp_path / "file").write_text("x")
    result = cli("train", "--out", str(tmp_path / "file" / "m"))
    assert result.exit_code == 1 and "cannot write" in result.output
    before = snapshot(tiny_model)
    result = cli("train", "--out", str(tiny_model), "--epochs", "1")
    assert result.exit_code == 1 and "--force" in result.output
    assert snapshot(tiny_model) == before


def test_cli_export(tmp_path, tiny_model) -> None:
    result = cli("export", "--model-dir", str(tiny_model), "--out", str(tmp_path / "x"))
    assert result.exit_code == 0, result.output
    assert Generator.load(tmp_path / "x").spec.chars == ModelSpec.read(tiny_model).chars
    result = cli("export", "--model-dir", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "not found" in result.output


# --- int8 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lstm_int8(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("int8") / "m"
    spec = train(
        TrainConfig(
            out_dir=out,
            corpus=corpus_file,
            cell="lstm",
            units=32,
            seq_length=6,
            epochs=2,
            seed=2,
            quantize="int8",
        )
    )
    return out, spec


def test_int8_variant_is_written_verified_and_loadable(lstm_int8) -> None:
    import onnx

    out, spec = lstm_int8
    v = spec.variants["int8"]
    data = (out / "model.int8.onnx").read_bytes()
    assert v["bytes"] == len(data) and v["sha256"] == hashlib.sha256(data).hexdigest()
    assert v["bytes"] < (out / MODEL_FILE).stat().st_size
    assert 0.0 <= v["greedy_agreement"] <= 1.0 and v["agreement_windows"] > 0
    ops = {n.op_type for n in onnx.load(out / "model.int8.onnx").graph.node}
    assert "DynamicQuantizeLSTM" in ops and "MatMulInteger" in ops
    int8 = Generator.load(out, precision="int8")
    assert int8.precision == "int8"
    text = int8.generate("The quick", 30)
    assert text.startswith("The quick") and len(text) == 39


def test_int8_agreement_is_what_the_runtime_sees(lstm_int8, corpus_file) -> None:
    out, spec = lstm_int8
    fp32, int8 = Generator.load(out), Generator.load(out, precision="int8")
    windows = Corpus.read(corpus_file).windows_in(spec.chars, spec.seq_length)[-len(spec.chars) :]
    a = fp32.session.run(["next"], {"char_ids": np.ascontiguousarray(windows)})[0]
    b = int8.session.run(["next"], {"char_ids": np.ascontiguousarray(windows)})[0]
    assert a.shape == b.shape == (len(windows),)


def test_reexport_without_quantize_drops_the_stale_int8_file(tmp_path, lstm_int8) -> None:
    import shutil

    src, _ = lstm_int8
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    spec = reexport(copy)
    assert spec.variants == {} and not (copy / "model.int8.onnx").exists()
    with pytest.raises(Exception, match="no int8 variant"):
        Generator.load(copy, precision="int8")


def test_reexport_int8_with_held_out_corpus(tmp_path, lstm_int8) -> None:
    src, _ = lstm_int8
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("the lazy fox sleeps. the quick dog runs over the brown fox.\n")
    result = cli(
        "export",
        "--model-dir",
        str(src),
        "--out",
        str(tmp_path / "q"),
        "--quantize",
        "int8",
        "--corpus",
        str(held_out),
    )
    assert result.exit_code == 0, result.output
    assert "int8:" in result.output and "held_out.txt" in result.output
    bad = tmp_path / "alien.txt"
    bad.write_text("ÆØÅ?! ÆØÅ?! ÆØÅ?!")
    result = cli(
        "export",
        "--model-dir",
        str(src),
        "--out",
        str(tmp_path / "r"),
        "--quantize",
        "int8",
        "--corpus",
        str(bad),
    )
    assert result.exit_code == 1 and "does not know" in result.output
    assert not (tmp_path / "r" / MODEL_FILE).exists()


def test_cli_prints_no_tensorflow_start_up_chatter(tmp_path, corpus_file) -> None:
    """TensorFlow's C++ start-up lines (absl banner, oneDNN, CUDA probing) are dropped; the
    trainer's own progress on stderr still shows."""
    import subprocess
    import sys

    from trainer import _START_UP_NOISE

    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "train", "--corpus", str(corpus_file),
         "--out", str(tmp_path / "m"), "--epochs", "1", "--seed", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stderr and "wrote" in proc.stdout
    assert not any(noise in proc.stderr + proc.stdout for noise in _START_UP_NOISE)


@pytest.mark.parametrize(("cell", "mode"), [("gru", "window"), ("simple", "stateful")])
def test_int8_for_cells_without_integer_kernels(tmp_path, long_corpus, cell, mode) -> None:
    """GRU and SimpleRNN keep int8 weights dequantized once at load: the file shrinks to
    under 40% of fp32, the greedy choices agree, and a step runs the float kernel."""
    import onnx

    out = tmp_path / "m"
    spec = train(
        TrainConfig(
            out_dir=out,
            corpus=long_corpus,
            cell=cell,
            units=96,
            seq_length=12,
            epochs=2,
            batch_size=64,
            mode=mode,
            seed=3,
            quantize="int8",
        )
    )
    v = spec.variants["int8"]
    assert v["size_vs_fp32"] <= 0.40
    assert v["greedy_agreement"] >= 0.97  # measured on held-out windows; 2 epochs only
    graph = onnx.load(out / "model.int8.onnx").graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") == 3 and "MatMulInteger" in ops
    fp32, int8 = Generator.load(out), Generator.load(out, precision="int8")
    prompt = "river stone light garden"
    assert int8.generate(prompt, 40)[:30] == fp32.generate(prompt, 40)[:30]
