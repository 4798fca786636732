"""The trainer's files where they break: a full disk, damaged checkpoints.

Each case ends with one `Error:` line (exit 1) that says what to do, no traceback, and no
temporary file or directory left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import main
from trainer.publish import LOCK_FILE
from trainer.state import STATE_DIR
from trainer.train import TrainConfig


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_error(result, fragment: str) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    assert fragment in lines[0], result.output
    return lines[0]


def _temporaries(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith((".tmp-", ".staging-", LOCK_FILE)) or ".staging-" in p.name
    ]


@pytest.fixture
def small_volume(tmp_path: Path):
    """Mount a tiny tmpfs; the size is set per test through the returned function."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"volume-{size}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:  # only where mounting is not permitted; CI runs as root
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize(
    ("size", "fragment"),
    [("96k", "cannot save the checkpoint of epoch 1"), ("300k", "cannot write the model")],
)
def test_full_disk_is_one_error_and_leaves_nothing(
    small_volume, corpus_file: Path, size: str, fragment: str
) -> None:
    out = small_volume(size)
    result = _cli(
        "train", "--corpus", str(corpus_file), "--out", str(out), "--units", "64",
        "--epochs", "2", "--seq-length", "5", "--seed", "1", "--quiet",
    )  # fmt: skip
    line = _one_error(result, fragment)
    assert "No space left on device" in line and "MB" in line
    assert _temporaries(out) == []
    assert not (out / "model.onnx").exists()


def _interrupted_run(out: Path, corpus: Path, tiny_model: Path) -> Path:
    """A checkpoint as an interrupted run leaves it (epoch 1 of 3)."""
    config = TrainConfig(out_dir=out, corpus=corpus, seq_length=5, units=16, epochs=3, seed=7)
    checkpoint = out / STATE_DIR / "epoch-0001"
    checkpoint.mkdir(parents=True)
    shutil.copy(tiny_model / "model.keras", checkpoint / "model.keras")
    sha = hashlib.sha256(corpus.read_text(encoding="utf-8").encode()).hexdigest()
    progress = {"epoch": 1, "config": config.to_json(), "history": {}, "corpus_sha256": sha}
    (checkpoint / "progress.json").write_text(json.dumps(progress))
    return checkpoint


def _fifo(path: Path) -> None:
    """`path` replaced by a FIFO, whose read would wait for a writer forever."""
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda c: (c / "progress.json").write_text('{"epoch": 1, "con'), "cannot be read"),
        (lambda c: (c / "progress.json").unlink(), "progress.json is missing"),
        (lambda c: (c / "progress.json").write_text('{"epoch": 1}'), "lacks the epoch"),
        (lambda c: (c / "model.keras").write_bytes(b"garbage" * 100), "model.keras cannot"),
        (lambda c: _fifo(c / "progress.json"), "progress.json is not a regular file"),
        (lambda c: _fifo(c / "model.keras"), "model.keras is not a regular file"),
        (lambda c: (c / "progress.json").write_text("[" * 200_000), "nests too deeply"),
        (lambda c: os.truncate(c / "progress.json", (64 << 20) + 1), "is over 67,108,864"),
    ],
)
def test_damaged_checkpoint_is_one_error(
    tmp_path: Path, corpus_file: Path, tiny_model: Path, damage, fragment: str
) -> None:
    out = tmp_path / "run"
    damage(_interrupted_run(out, corpus_file, tiny_model))
    resumed = _cli("train", "--out", str(out), "--resume", "--quiet")
    line = _one_error(resumed, fragment)
    assert "--force" in line and "damaged" in line
    if "model.keras" not in fragment:  # without --resume, the run is looked at too
        again = _cli(
            "train", "--corpus", str(corpus_file), "--out", str(out), "--seq-length", "5",
            "--units", "16", "--epochs", "3", "--quiet",
        )  # fmt: skip
        _one_error(again, "damaged")
    fresh = _cli(
        "train", "--corpus", str(corpus_file), "--out", str(out), "--seq-length", "5",
        "--units", "16", "--epochs", "1", "--quiet", "--force",
    )  # fmt: skip
    assert fresh.exit_code == 0, fresh.output
    assert _temporaries(out) == [] and not (out / STATE_DIR).exists()


def _rewrite_archive(path: Path, edit) -> None:
    """`path` (a model.keras) with its config.json passed through `edit`, or with `edit`'s
    extra members when it returns a dict of them."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    extra = edit(config)
    members["config.json"] = json.dumps(config).encode()
    members.update(extra or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _lookup_layer(config: dict) -> None:
    # CVE-2025-12058's shape: a lookup layer whose vocabulary is a local file to read.
    layer = {"module": "keras.layers", "class_name": "StringLookup", "config": {}}
    layer["config"]["vocabulary"] = "/etc/passwd"
    config["config"]["layers"].insert(1, layer)


def _function(config: dict) -> None:
    config["compile_config"]["metrics"][1]["config"] = "os>system"


def _module(config: dict) -> None:
    config["compile_config"]["optimizer"]["module"] = "subprocess"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_lookup_layer, "names 'keras.layers.StringLookup'"),
        (_function, "names 'builtins.function'"),
        (_module, "names 'subprocess.Adam'"),
        (lambda c: {"../../outside.txt": b"x"}, "holds '../../outside.txt'"),
    ],
)
def test_a_keras_archive_we_do_not_write_is_refused_before_keras_reads_it(
    tmp_path: Path, corpus_file: Path, tiny_model: Path, edit, fragment: str
) -> None:
    # Keras rebuilds whatever config.json names, and its safe_mode has been bypassed
    # repeatedly: model.keras from another machine is checked against what we write.
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    _rewrite_archive(model_dir / "model.keras", edit)
    exported = _cli("export", "--model-dir", str(model_dir), "--out", str(tmp_path / "o"))
    line = _one_error(exported, "not a model textgen-train writes")
    assert fragment in line and not (tmp_path / "o").exists()
    out = tmp_path / "run"
    checkpoint = _interrupted_run(out, corpus_file, tiny_model)
    _rewrite_archive(checkpoint / "model.keras", edit)
    resumed = _cli("train", "--out", str(out), "--resume", "--quiet")
    assert fragment in _one_error(resumed, "not a model textgen-train writes")


def _weights_reading(original: bytes, secret: Path, how: str) -> bytes:
    """`original` (a model.weights.h5) with its first weight's bytes kept in `secret`
    (external storage), or that weight a link into it."""
    import io

    import h5py

    buf = io.BytesIO(original)
    with h5py.File(buf, "r+") as weights:
        names: list[str] = []
        weights.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        first = weights[names[0]]
        shape, dtype = first.shape, first.dtype
        del weights[names[0]]
        if how == "external":
            size = int(np.prod(shape)) * dtype.itemsize
            secret.write_bytes(b"SECRET" * (size // 6 + 1))
            where = [(str(secret), 0, size)]
            weights.create_dataset(names[0], shape=shape, dtype=dtype, external=where)
        else:
            weights[names[0]] = h5py.ExternalLink(str(secret), "/w")
    return buf.getvalue()


@pytest.mark.parametrize("how", ["external", "link"])
def test_weights_that_read_another_file_are_refused(
    tmp_path: Path, tiny_model: Path, how: str
) -> None:
    # An HDF5 dataset can keep its bytes in any local file: Keras would load them as a
    # weight and the export would publish them in model.onnx.
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    with zipfile.ZipFile(model_dir / "model.keras") as archive:
        weights = _weights_reading(archive.read("model.weights.h5"), tmp_path / "id_rsa", how)
    _rewrite_archive(model_dir / "model.keras", lambda config: {"model.weights.h5": weights})
    exported = _cli("export", "--model-dir", str(model_dir), "--out", str(tmp_path / "o"))
    line = _one_error(exported, "not a model textgen-train writes")
    assert ("is read from another file" if how == "external" else "elsewhere") in line
    assert not (tmp_path / "o").exists()


def test_one_character_corpus_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "a.txt"
    corpus.write_text("a" * 500)
    result = _cli("train", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--quiet")
    _one_error(result, "repeats one character ('a')")


def test_eta_respects_the_time_limit() -> None:
    import io

    from trainer.state import EpochLine

    stream = io.StringIO()
    line = EpochLine(10_000, stream=stream, time_limit=30.0)
    line.on_epoch_begin(0)
    time.sleep(0.05)  # 10,000 epochs of this would be 8 minutes
    line.on_epoch_end(0, {"loss": 1.0})
    eta = stream.getvalue().split("ETA ")[1].strip()
    assert eta.endswith("s") and "m" not in eta  # at most the 30 s left
