"""Training on real corpora: streamed windows, depth, validation, early stopping, resume
after Ctrl-C and kill -9, history and plot, tf.distribute."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import default_sigint

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE, ModelSpec
from trainer.cli import main
from trainer.data import windows_dataset
from trainer.errors import OutputDirError, TrainingError
from trainer.state import STATE_DIR, latest_checkpoint
from trainer.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
SMALL = {"seq_length": 6, "units": 12, "batch_size": 64, "seed": 4}


def test_streamed_windows_are_exactly_the_notebooks() -> None:
    ids = np.arange(50, dtype=np.int32) % 7
    xs, ys = [], []
    for x, y in windows_dataset(ids, 4, 8, shuffle=False):
        xs.append(x.numpy())
        ys.append(y.numpy())
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert len(x) == 46
    for i in range(46):
        assert list(x[i]) == list(ids[i : i + 4]) and y[i] == ids[i + 4]
    shuffled = np.concatenate(
        [b[0].numpy() for b in windows_dataset(ids, 4, 8, shuffle=True, seed=1)]
    )
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, x))
    assert not np.array_equal(shuffled, x)


@pytest.mark.parametrize("cell", ["simple", "lstm", "gru"])
def test_two_layers_with_dropout_export_with_parity(tmp_path, long_corpus, cell) -> None:
    spec = train(
        TrainConfig(
            out_dir=tmp_path / cell,
            corpus=long_corpus,
            cell=cell,
            layers=2,
            dropout=0.2,
            epochs=1,
            **SMALL,
        )
    )
    assert spec.architecture["layers"] == 2
    assert spec.training["parity_max_abs_diff"] <= 1e-5
    assert spec.graph_builder == "native"  # vocab.json records a builder for stateful models
    import onnx

    ops = [n.op_type for n in onnx.load(tmp_path / cell / MODEL_FILE).graph.node]
    assert ops.count({"simple": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]) == 2
    assert len(Generator.load(tmp_path / cell).generate("river stone", 20)) == 31


def test_validation_metrics_history_and_plot(tmp_path, long_corpus) -> None:
    out = tmp_path / "m"
    spec = train(TrainConfig(out_dir=out, corpus=long_corpus, epochs=3, val_fraction=0.2, **SMALL))
    t = spec.training
    assert t["val_fraction"] == 0.2 and t["val_windows"] > 0
    assert math.isclose(t["val_bits_per_char"], t["val_loss"] / math.log(2), rel_tol=1e-5)
    assert math.isclose(t["bits_per_char"], t["loss"] / math.log(2), rel_tol=1e-5)
    history = json.loads((out / "history.json").read_text())
    m = history["metrics"]
    assert history["epochs"] == [1, 2, 3]
    for key in ("loss", "accuracy", "bpc", "val_loss", "val_accuracy", "val_bpc", "seconds"):
        assert len(m[key]) == 3, key
    assert math.isclose(m["val_loss"][-1], t["val_loss"], rel_tol=1e-5)
    assert math.isclose(m["val_bpc"][-1], m["val_loss"][-1] / math.log(2), rel_tol=1e-4)
    png = (out / "training.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert not (out / STATE_DIR).exists()  # checkpoints go once the model is published
    card = (
        CliRunner()
        .invoke(__import__("runtime.cli", fromlist=["main"]).main, ["info", "--model", str(out)])
        .output
    )
    assert "val_bits_per_char" in card


def test_early_stopping_keeps_the_best_epoch(tmp_path, long_corpus) -> None:
    # A learning rate this high makes validation loss bounce, so patience runs out.
    spec = train(
        TrainConfig(
            out_dir=tmp_path / "m",
            corpus=long_corpus,
            epochs=12,
            learning_rate=0.3,
            early_stopping=1,
            **SMALL,
        )
    )
    t = spec.training
    m = json.loads((tmp_path / "m" / "history.json").read_text())["metrics"]
    best = int(np.argmin(m["val_loss"]))
    assert t["epochs_run"] == len(m["val_loss"]) < 12
    assert t["best_epoch"] == best + 1
    assert t["val_loss"] == round(m["val_loss"][best], 6)


def test_settings_that_cannot_work(tmp_path, long_corpus) -> None:
    with pytest.raises(TrainingError, match="early stopping watches validation loss"):
        train(
            TrainConfig(
                out_dir=tmp_path / "a",
                corpus=long_corpus,
                val_fraction=0.0,
                early_stopping=2,
                **SMALL,
            )
        )
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abcdefghij")
    from trainer.errors import CorpusError

    with pytest.raises(CorpusError, match="too few to hold out"):
        train(TrainConfig(out_dir=tmp_path / "b", corpus=tiny, seq_length=3, units=4))


# --- interruption and resume --------------------------------------------------------------

TRAIN_CMD = [sys.executable, "-m", "trainer.cli", "train"]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        TRAIN_CMD + args,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )


def long_run(corpus: Path, out: Path) -> list[str]:
    """A run long enough (40 epochs) to be interrupted after a checkpoint or two."""
    return [
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--seq-length",
        "6",
        "--units",
        "12",
        "--epochs",
        "40",
        "--batch-size",
        "64",
        "--seed",
        "3",
    ]


def _wait_for_checkpoint(out: Path, epoch: int, proc: subprocess.Popen, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ckpt = latest_checkpoint(out)
        if ckpt is not None and int(ckpt.name.split("-")[1]) >= epoch:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_to_the_same_layout(tmp_path, long_corpus, sig) -> None:
    out = tmp_path / "m"
    args = long_run(long_corpus, out)
    proc = _start(args)
    _wait_for_checkpoint(out, 2, proc)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "Traceback" not in output and "--resume" in output.splitlines()[-1]
    else:
        assert proc.returncode == -signal.SIGKILL
    done = int(latest_checkpoint(out).name.split("-")[1])
    assert 2 <= done < 40 and not (out / VOCAB_FILE).exists()

    # Without --resume the interrupted run is not thrown away silently.
    again = CliRunner().invoke(main, ["train", *args])
    assert again.exit_code == 1 and "--resume" in again.output

    resumed = CliRunner().invoke(
        main, ["train", "--out", str(out), "--resume", "--epochs", str(done + 2), "--quiet"]
    )
    assert resumed.exit_code == 0, resumed.output
    spec = ModelSpec.read(out)
    assert spec.training["epochs_run"] == done + 2 and spec.training["seed"] == 3
    history = json.loads((out / "history.json").read_text())
    assert history["epochs"] == list(range(1, done + 3))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["history.json", "model.keras", "model.onnx", "training.png", "vocab.json"]
    Generator.load(out).generate("river stone", 10)


def test_resume_refusals(tmp_path, long_corpus) -> None:
    with pytest.raises(OutputDirError, match="nothing to resume"):
        train(TrainConfig(out_dir=tmp_path / "none", corpus=long_corpus, resume=True, **SMALL))
    out = tmp_path / "m"
    proc = _start(long_run(long_corpus, out))
    _wait_for_checkpoint(out, 1, proc)
    proc.kill()
    proc.communicate()
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--units", "99"])
    assert result.exit_code == 1 and "units 12 -> 99" in result.output
    other = tmp_path / "other.txt"
    other.write_text(long_corpus.read_text()[::-1])
    result = CliRunner().invoke(
        main, ["train", "--out", str(out), "--resume", "--corpus", str(other)]
    )
    assert result.exit_code == 1 and "corpus" in result.output
    # --force starts over instead.
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--corpus",
            str(long_corpus),
            "--out",
            str(out),
            "--seq-length",
            "6",
            "--units",
            "8",
            "--epochs",
            "1",
            "--force",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output


def test_clip_options() -> None:
    result = CliRunner().invoke(main, ["train", "--out", "/tmp/x", "--no-clip", "--clipnorm", "1"])
    assert result.exit_code == 2 and "not both" in result.output


# --- tf.distribute ------------------------------------------------------------------------


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, long_corpus) -> None:
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from trainer.train import TrainConfig, make_strategy, train
        strategy = make_strategy("mirrored")
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        spec = train(TrainConfig(out_dir={str(tmp_path / "m")!r}, corpus={str(long_corpus)!r},
                                 strategy="mirrored", seq_length=6, units=12, epochs=2,
                                 batch_size=64, seed=1))
        print("replicas", strategy.num_replicas_in_sync, "strategy", spec.training["strategy"])
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2 strategy mirrored" in proc.stdout
    assert Generator.load(tmp_path / "m").spec.training["parity_max_abs_diff"] <= 1e-5
