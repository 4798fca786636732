"""Publishing where users really point --out: a symlink to a directory, and a mount point.

Both used to lose the model: a symlink was replaced by a real directory (the target kept
the old model), and a mount point failed at the very end with EXDEV, because the staging
directory was created in the parent, on another filesystem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime import Generator
from runtime.artifact import MODEL_FILE, VOCAB_FILE
from trainer.export import reexport


def _leftovers(*dirs: Path) -> list[str]:
    return [p.name for d in dirs for p in d.iterdir() if "staging" in p.name or ".tmp" in p.name]


def test_symlinked_out_is_followed_and_kept(tmp_path: Path, tiny_model: Path) -> None:
    real = tmp_path / "volumes" / "model"
    real.mkdir(parents=True)
    (real / "notes.txt").write_text("mine")
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)
    for force in (False, True):  # a fresh target, then replacing the model it holds
        spec = reexport(tiny_model, link, force=force)
        assert link.is_symlink() and Path(os.readlink(link)) == real
        assert (real / MODEL_FILE).is_file() and (real / VOCAB_FILE).is_file()
        assert (real / "notes.txt").read_text() == "mine"
        assert Generator.load(link).spec.model_sha256 == spec.model_sha256
        assert _leftovers(tmp_path, real.parent, real) == []


@pytest.mark.parametrize("kind", ["missing target", "missing parent", "loop"])
def test_a_link_that_leads_nowhere_is_refused(tmp_path: Path, tiny_model: Path, kind: str) -> None:
    # Following a link to a missing directory would create it: with a link to an unmounted
    # drive the model would land on the root filesystem, hidden once the drive is mounted.
    from click.testing import CliRunner

    from trainer.cli import main

    gone = tmp_path / "usb" / "models"
    link = tmp_path / "models"
    out = link
    if kind == "loop":
        (tmp_path / "other").symlink_to(link)
        link.symlink_to(tmp_path / "other")
        needle = "loops back on itself"
    else:
        link.symlink_to(gone, target_is_directory=True)
        needle = f"models is a symbolic link to {gone}, which does not exist"
        out = link / "kjv" if kind == "missing parent" else link
    for args in (
        ["train", "--out", str(out), "--epochs", "1"],
        ["export", "--model-dir", str(tiny_model), "--out", str(out)],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "usb").exists()
    gone.mkdir(parents=True)  # the drive is mounted: the same command writes through the link
    if kind != "loop":
        reexport(tiny_model, out)
        assert Generator.load(out).spec.model_sha256
        assert (gone / ("kjv" if kind == "missing parent" else "") / MODEL_FILE).is_file()


@pytest.mark.parametrize("record", [{"new": [], "remove": ["../victim"]}, {"new": ["../x"]}])
def test_a_crafted_commit_record_touches_nothing_outside_out(
    tmp_path: Path, tiny_model: Path, record: dict
) -> None:
    # An interrupted publish leaves a staging directory with a commit record that the next
    # export into that directory finishes. A crafted one in a model directory from
    # elsewhere deleted "../victim" beside it, or moved its own file over "../x".
    import json

    from trainer.publish import COMMIT_FILE, INSIDE_PREFIX

    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.txt").write_text("mine")
    (tmp_path / "x").write_text("mine too")
    (out / "x").write_text("theirs")
    crafted = out / f"{INSIDE_PREFIX}abc"
    crafted.mkdir()
    (crafted / COMMIT_FILE).write_text(json.dumps(record))
    reexport(out, force=True)
    assert (tmp_path / "victim" / "thesis.txt").read_text() == "mine"
    assert (tmp_path / "x").read_text() == "mine too"
    assert not crafted.exists() and Generator.load(out).spec.model_sha256


def test_a_linked_training_state_directory_is_refused(tmp_path: Path, corpus_file: Path) -> None:
    # Checkpoints went wherever out/.train-state pointed, and older ones (epoch-NNNN) there
    # were deleted: a model directory from elsewhere could aim it at any folder.
    from click.testing import CliRunner

    from trainer.cli import main

    elsewhere = tmp_path / "photos"
    (elsewhere / "epoch-0007").mkdir(parents=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".train-state").symlink_to(elsewhere, target_is_directory=True)
    for extra in ([], ["--force"], ["--resume"]):
        args = ["train", "--corpus", str(corpus_file), "--out", str(out), "--epochs", "2", *extra]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert ".train-state is a symbolic link" in result.output, result.output
    assert [p.name for p in elsewhere.iterdir()] == ["epoch-0007"]


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_lock_file_that_is_not_ours_is_refused(
    tmp_path: Path, tiny_model: Path, kind: str
) -> None:
    # The lock's PID was written through a link: a model directory from elsewhere holding
    # `.textgen-train.lock -> ~/.bashrc` had the next export into it truncate that file.
    from trainer.errors import OutputDirError
    from trainer.publish import LOCK_FILE

    out = tmp_path / "received"
    shutil.copytree(tiny_model, out)
    victim = tmp_path / "bashrc"
    victim.write_text("precious")
    if kind == "link":
        (out / LOCK_FILE).symlink_to(victim)
    else:
        os.mkfifo(out / LOCK_FILE)
    what = "a symbolic link" if kind == "link" else "not a regular file"
    with pytest.raises(OutputDirError, match=f"{LOCK_FILE} is {what}, not textgen-train's lock"):
        reexport(out, force=True)
    assert victim.read_text() == "precious"


def test_out_keeps_its_mode_and_group(tmp_path: Path, tiny_model: Path) -> None:
    # The swapped-in directory was mkdtemp's: 0700 in the user's group, with every export.
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o2775)
    group = 1 if os.geteuid() == 0 else os.getgroups()[-1]  # root: daemon; else one of ours
    os.chown(out, -1, group)
    reexport(tiny_model, out)
    assert out.stat().st_mode & 0o7777 == 0o2775
    assert out.stat().st_gid == group
    assert Generator.load(out).spec.chars == Generator.load(tiny_model).spec.chars


@pytest.fixture
def mount_point(tmp_path: Path):
    """A tmpfs mounted inside tmp_path: another filesystem than its parent."""
    where = tmp_path / "volume"
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        # Only where mounting is not permitted (no root); .ci/run runs as root and mounts.
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_mount_point_out_publishes(tmp_path: Path, tiny_model: Path, mount_point: Path) -> None:
    assert os.path.ismount(mount_point)
    for force in (False, True):
        spec = reexport(tiny_model, mount_point, force=force)
        assert Generator.load(mount_point).spec.model_sha256 == spec.model_sha256
        assert _leftovers(tmp_path, mount_point) == []


def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path, tiny_model: Path) -> None:
    from click.testing import CliRunner

    from trainer.cli import main
    from trainer.publish import out_dir_lock

    out = tmp_path / "busy"
    with out_dir_lock(out):  # this process plays the first trainer
        for args in (
            ["train", "--out", str(out), "--epochs", "1"],
            ["export", "--model-dir", str(tiny_model), "--out", str(out)],
        ):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1, result.output
            assert f"another textgen-train (PID {os.getpid()})" in result.output
            assert "Traceback" not in result.output
    assert not (out / "model.onnx").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path, tiny_model: Path) -> None:
    from trainer.publish import LOCK_FILE

    out = tmp_path / "after-crash"
    out.mkdir()
    (out / LOCK_FILE).write_text("999999\n")  # a dead holder: the file, but no flock
    reexport(tiny_model, out)
    assert (out / MODEL_FILE).is_file() and not (out / LOCK_FILE).exists()
