"""Training on several hosts (MultiWorkerMirroredStrategy), with two workers on this machine.

Each worker is a separate `textgen-train` process with its own TF_CONFIG, as on real hosts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import Generator
from runtime.artifact import ModelSpec
from trainer.state import latest_checkpoint
from trainer.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 4


def settings(corpus: Path, *extra: str) -> list[str]:
    return [
        "--corpus", str(corpus), "--seq-length", "6", "--units", "12", "--batch-size", "64",
        "--epochs", str(EPOCHS), "--seed", "5", "--strategy", "multiworker", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(long_corpus, tmp_path_factory) -> dict:
    """The same run in one process with the default strategy: the reference history."""
    out = tmp_path_factory.mktemp("ref") / "m"
    train(TrainConfig(out_dir=out, corpus=long_corpus, seq_length=6, units=12, batch_size=64,
                      epochs=EPOCHS, seed=5))  # fmt: skip
    return json.loads((out / "history.json").read_text())


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(outs: list[Path], args: list[list[str]]) -> list[subprocess.Popen]:
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(len(outs))]}
    procs = []
    for i, (out, extra) in enumerate(zip(outs, args, strict=True)):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "trainer.cli", "train", "--out", str(out), *extra],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    return procs


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        results.append((proc.returncode, output))
    return results


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def assert_same_history(got: dict, want: dict) -> None:
    # Same math as one process: every window once per epoch, the mean gradient over each
    # global batch. Only float summation order differs.
    assert got["epochs"] == want["epochs"] == list(range(1, EPOCHS + 1))
    for key in ("loss", "accuracy", "val_loss", "val_bpc"):
        mine, reference = got["metrics"][key], want["metrics"][key]
        assert mine == pytest.approx(reference, rel=1e-4, abs=1e-4), key


def test_two_workers_train_like_one_process(tmp_path, long_corpus, one_process) -> None:
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    results = finish(start_workers([chief, worker], [settings(long_corpus)] * 2))
    assert [rc for rc, _ in results] == [0, 0], results
    assert "worker finished; the chief worker wrote the model" in results[1][1]
    assert not worker.exists()  # only the chief writes
    spec = ModelSpec.read(chief)
    assert spec.training["strategy"] == "multiworker" and spec.training["epochs_run"] == EPOCHS
    assert spec.training["parity_max_abs_diff"] <= 1e-5
    assert_same_history(json.loads((chief / "history.json").read_text()), one_process)
    assert len(Generator.load(chief).generate("river stone", 20)) == len("river stone") + 20


def test_killed_workers_resume_from_the_chiefs_checkpoint(
    tmp_path, long_corpus, one_process
) -> None:
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    procs = start_workers([chief, worker], [settings(long_corpus)] * 2)
    deadline = time.monotonic() + 240
    while latest_checkpoint(chief) is None or latest_checkpoint(chief).name < "epoch-0002":
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stdout.read()
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    finish(procs)
    done = int(latest_checkpoint(chief).name.split("-")[1])
    assert 2 <= done < EPOCHS and not worker.exists()

    # Every worker reruns its command with --resume; the chief's checkpoint is shared.
    results = finish(start_workers([chief, worker], [settings(long_corpus, "--resume")] * 2))
    assert [rc for rc, _ in results] == [0, 0], results
    assert f"epoch {done + 1}/{EPOCHS}" in results[1][1]  # the worker started there too
    assert_same_history(json.loads((chief / "history.json").read_text()), one_process)


def test_workers_that_disagree_all_stop_with_the_reason(tmp_path, long_corpus) -> None:
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    results = finish(
        start_workers(
            [chief, worker], [settings(long_corpus), settings(long_corpus, "--units", "13")]
        )
    )
    for rc, output in results:
        assert rc == 1 and errors(output) == [
            "Error: the workers' settings differ from the chief's: run the same textgen-train "
            "command on every worker (only TF_CONFIG, --out and --time-limit may differ)"
        ], output
    assert not (chief / "model.onnx").exists() and not worker.exists()


def test_a_worker_that_stops_early_stops_the_others_with_a_message(tmp_path, long_corpus) -> None:
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    chief.mkdir()
    (chief / "model.onnx").write_bytes(b"keep me")  # the chief refuses: no --force
    results = finish(start_workers([chief, worker], [settings(long_corpus)] * 2))
    assert results[0][0] == 1 and "already holds a model" in errors(results[0][1])[0]
    assert results[1][0] == 1 and "lost the other workers" in errors(results[1][1])[0]
    assert "Traceback" not in results[1][1]
    assert (chief / "model.onnx").read_bytes() == b"keep me"


def test_a_pool_left_open_by_a_failed_reduce_is_closed() -> None:
    """What TensorFlow's eager all-reduce does when a collective fails: the pool stays open
    in the failed frame, and close_abandoned_pools finds it through the exception chain."""
    from multiprocessing.pool import CLOSE, RUN, ThreadPool

    from trainer.loop import close_abandoned_pools

    def failing_reduce() -> None:
        pool = ThreadPool(1)
        pool.map(lambda _: 1 / 0, [0])
        pool.close()  # never reached, as in cross_device_ops

    try:
        try:
            failing_reduce()
        except ZeroDivisionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        frame = exc.__cause__.__traceback__.tb_next.tb_frame  # failing_reduce's
        pools = [v for v in frame.f_locals.values() if isinstance(v, ThreadPool)]
        assert [p._state for p in pools] == [RUN]
        close_abandoned_pools(exc)
        assert [p._state for p in pools] == [CLOSE]
        pools[0].join()


def test_tf_config_that_is_not_json_is_refused(tmp_path, long_corpus) -> None:
    env = {**os.environ, "TF_CONFIG": '{"cluster": '}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "train", "--out", str(tmp_path / "m"), "--resume",
         *settings(long_corpus)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and errors(proc.stdout + proc.stderr) == [
        errors(proc.stdout + proc.stderr)[0]
    ]
    assert "TF_CONFIG is not a valid cluster description" in proc.stderr


def test_one_workers_time_limit_stops_every_worker_after_the_same_epoch(
    tmp_path, long_corpus
) -> None:
    """--time-limit may differ per worker: the first worker out of time stops them all."""
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    many = [*settings(long_corpus), "--epochs", "30"]  # the later --epochs wins
    results = finish(start_workers([chief, worker], [many, [*many, "--time-limit", "0.005"]]))
    assert [rc for rc, _ in results] == [0, 0], results
    assert ModelSpec.read(chief).training["epochs_run"] == 1
    assert "epoch 1/30" in results[1][1] and "epoch 2/30" not in results[1][1]
