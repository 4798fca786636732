"""SIGKILL during fit and export: the output directory is always a complete set (old or new),
and --resume finishes what a kill interrupted. benchmarks/kill_trials.py runs 25 trials."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from kill_trials import mounted_tmpfs, run_trials  # noqa: E402


def test_random_kills_never_lose_or_mix_artifacts(tmp_path) -> None:
    r = run_trials(6, tmp_path, seed=7)
    assert r["trials"] == 6
    assert r["lost_or_mixed"] == 0 and r["resume_failures"] == 0, r["problems"]
    assert r["old_set"] + r["new_set"] == 6


def test_random_kills_on_a_symlinked_out(tmp_path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    r = run_trials(3, tmp_path, seed=8, out=tmp_path / "link")
    assert r["lost_or_mixed"] == 0 and r["resume_failures"] == 0, r["problems"]
    assert (tmp_path / "link").is_symlink()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_random_kills_on_a_mount_point(tmp_path) -> None:
    with mounted_tmpfs(tmp_path / "volume") as volume:
        if volume is None:  # only where mounting is not permitted; .ci/run runs as root
            pytest.skip("cannot mount a tmpfs here")
        r = run_trials(3, tmp_path, seed=9, out=volume)
        assert r["lost_or_mixed"] == 0 and r["resume_failures"] == 0, r["problems"]


def test_publish_keeps_unrelated_files_and_swaps_atomically(tmp_path) -> None:
    from trainer.publish import make_staging, publish

    out = tmp_path / "m"
    out.mkdir()
    (out / "vocab.json").write_text("old")
    (out / "model.int8.onnx").write_text("stale")
    (out / "NOTES.txt").write_text("mine")
    (out / "keep").mkdir()
    (out / "keep" / "a").write_text("tree")
    staging = make_staging(out)
    assert staging.parent == out.parent  # a sibling, so the swap is one rename
    (staging / "model.onnx").write_text("new model")
    (staging / "vocab.json").write_text("new")
    publish(staging, out, new=["model.onnx", "vocab.json"], remove={"model.int8.onnx"})
    assert (out / "vocab.json").read_text() == "new"
    assert (out / "model.onnx").read_text() == "new model"
    assert (out / "NOTES.txt").read_text() == "mine" and (out / "keep" / "a").read_text() == "tree"
    assert not (out / "model.int8.onnx").exists() and not staging.exists()
    assert not list(tmp_path.glob(".m.staging-*"))
