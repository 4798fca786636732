"""`textgen` where shells and cron jobs really run it: closed, full and narrow streams.

Each case runs the real command in a fresh process with real file descriptors, and must end
with one `Error:` line (exit 1) or succeed, never with a traceback.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, default_sigint, edit_vocab

from runtime import Generator
from runtime.artifact import MODEL_FILE
from runtime.errors import ArtifactError

TEXTGEN = [sys.executable, "-m", "runtime.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _sh(script: str, stdin: bytes | None = None, env: dict | None = None):
    """Run a shell line with $TEXTGEN set; returns (exit status, stdout, stderr)."""
    textgen = " ".join(TEXTGEN)
    proc = subprocess.run(
        ["sh", "-c", script.replace("TEXTGEN", textgen)],
        input=stdin,
        capture_output=True,
        env={**ENV, **(env or {})},
        timeout=120,
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode()


def _one_error(rc: int, err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 1, err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], err


@pytest.mark.parametrize(
    "args",
    [
        '"This is Z"',
        '"This is Z" --json',
        "--prompts-file PROMPTS",
        "--prompts-file PROMPTS --json",
        "info",
    ],
)
def test_closed_and_full_stdout(tmp_path: Path, args: str) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("This is Z\nis Z\n")
    command = args if args == "info" else f"generate {args}"
    command = command.replace("PROMPTS", str(prompts))
    rc, _, err = _sh(f"TEXTGEN {command} >&-")
    _one_error(rc, err, "standard output is closed")
    rc, _, err = _sh(f"TEXTGEN {command} > /dev/full")
    _one_error(rc, err, "No space left on device")


def test_closed_stdin_for_dash_prompt() -> None:
    rc, _, err = _sh("TEXTGEN generate - <&-")
    _one_error(rc, err, "standard input is closed")


def test_stdin_that_is_not_utf8() -> None:
    rc, _, err = _sh("TEXTGEN generate -", stdin=b"This \xff Z")
    _one_error(rc, err, "not UTF-8 (bad byte at offset 5)")


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ("generate - < /dev/zero", "standard input holds more than 268,435,456 bytes"),
        ("generate --prompts-file /dev/zero", "/dev/zero holds more than 268,435,456 bytes"),
        # score reads its text in pieces: the first one's NUL is not in the vocabulary
        ("score - < /dev/zero", "outside the model's vocabulary: '\\x00'"),
        ("score /dev/zero", "outside the model's vocabulary: '\\x00'"),
    ],
)
def test_endless_input_is_one_error_not_all_memory(command: str, fragment: str) -> None:
    rc, _, err = _sh(f"TEXTGEN {command}")
    _one_error(rc, err, fragment)


def test_directory_names_that_are_not_utf8_print_on_a_utf8_terminal(
    model_copy: Path, tmp_path: Path
) -> None:
    # Python decodes the byte 0xff of a name to a lone surrogate, which a UTF-8 stdout cannot
    # encode: --json and `textgen web` ended in a traceback after their work was done.
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xff"))
    model_copy.rename(odd)
    env = {**ENV, "PYTHONIOENCODING": "utf-8"}
    for args in (["generate", "This is Z", "-n", "5", "--json"], ["web", "--out", f"{odd}/site"]):
        proc = subprocess.run(
            [*TEXTGEN, *args, "--model", str(odd)], capture_output=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert b"caf\\udcff" in proc.stdout
    doc = json.loads(subprocess.check_output([*TEXTGEN, "generate", "This is Z", "--json",
                                              "--model", str(odd)], env=env))  # fmt: skip
    assert doc["model"]["dir"] == str(odd)  # JSON's \u escape gives the name back


def _on_a_terminal(args: list[str]) -> bytes:
    """What `textgen ARGS` writes to a pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: textgen on the pseudo-terminal
        os.environ.update(ENV)
        os.execv(sys.executable, [*TEXTGEN, *args])
    output = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output


def test_control_characters_a_model_writes_reach_a_terminal_escaped(
    model_copy: Path, tmp_path: Path
) -> None:
    # A crafted vocabulary can make a model "write" escape sequences (retitle the window,
    # set the clipboard through OSC 52, forge output); a terminal gets them escaped, a pipe
    # the exact text. Here the character the model writes for "o" becomes ESC.
    edit_vocab(model_copy, lambda d: d.__setitem__("chars", [
        "\x1b" if c == "o" else c for c in d["chars"]
    ]))  # fmt: skip
    args = ["generate", "This is Z", "-n", "30", "--model", str(model_copy)]
    text = Generator.load(model_copy).generate("This is Z", 30)
    assert "\x1b" in text  # the model does write it
    piped = subprocess.run([*TEXTGEN, *args], capture_output=True, env=ENV, timeout=120)
    assert piped.stdout.decode() == text + "\n"
    for extra, escaped in (([], b"\\x1b"), (["--json"], b"\\u001b")):
        shown = _on_a_terminal(args + extra)
        assert b"\x1b" not in shown and escaped in shown, shown
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("This is Z\n")
    batch = _on_a_terminal(["generate", "--prompts-file", str(prompts), *args[2:]])
    assert b"\x1b" not in batch and b"\\x1b" in batch, batch


def test_crlf_stdin_drops_the_line_ending() -> None:
    rc, out, _ = _sh("TEXTGEN generate - -n 5", stdin=b"This is Z\r\n")
    assert rc == 0 and out == Generator.load().generate("This is Z", 5) + "\n"


def test_prompts_file_bom_crlf_and_only_lf_splits(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbfThis is Z\r\nis Z\n")
    rc, out, err = _sh(f"TEXTGEN generate --prompts-file {path} -n 5 --json")
    assert rc == 0, err
    assert [json.loads(line)["prompt"] for line in out.splitlines()] == ["This is Z", "is Z"]
    # \v, \f and U+2028 are characters of a prompt, not line breaks.
    path.write_text("This is Z\vis Z\u2028\n", encoding="utf-8")
    rc, _, err = _sh(f"TEXTGEN generate --prompts-file {path}")
    _one_error(rc, err, "'\\x0b'")


def test_batch_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("This is Z\n" * 5000)
    rc, out, err = _sh(f"TEXTGEN generate --prompts-file {path} -n 20 | head -1; exit $?")
    assert out.startswith("This is Z") and err == ""
    textgen = " ".join(TEXTGEN)
    script = f"{textgen} generate --prompts-file {path} -n 20 | head -1 > /dev/null"
    proc = subprocess.run(["bash", "-c", script + "; exit ${PIPESTATUS[0]}"], env=ENV)
    assert proc.returncode == 0


def test_ascii_stdout_is_refused_before_the_stream_and_escaped_in_json(tmp_path, tiny_model):
    model = tmp_path / "m"
    subprocess.run(["cp", "-r", str(tiny_model), str(model)], check=True)
    # The fox corpus is ASCII; an ASCII-only terminal and a model that writes 'é':
    edit_vocab(model, lambda d: d["chars"].__setitem__(-1, "é"))
    edit_vocab(model, lambda d: d["training"].__setitem__("sample_prompt", "The quick"))
    env = {"PYTHONIOENCODING": "ascii"}
    rc, out, err = _sh(f"TEXTGEN generate 'The quick' --model {model} -n 5", env=env)
    _one_error(rc, err, "cannot show 'é'")
    assert out == ""  # nothing half-printed
    rc, out, err = _sh(f"TEXTGEN generate 'The quick' --model {model} -n 5 --json", env=env)
    assert rc == 0 and json.loads(out)["prompt"] == "The quick", err


def test_unreadable_model_file_is_one_error(model_copy: Path) -> None:
    (model_copy / MODEL_FILE).unlink()
    # A link to itself: opening it fails with an OS error (ELOOP), even for root.
    (model_copy / MODEL_FILE).symlink_to(MODEL_FILE)
    with pytest.raises(ArtifactError, match="cannot read .*model.onnx"):
        Generator.load(model_copy)
    rc, _, err = _sh(f"TEXTGEN info --model {model_copy}")
    _one_error(rc, err, "cannot read")


def test_path_longer_than_the_os_allows() -> None:
    rc, _, err = _sh(f"TEXTGEN generate x --model /tmp/{'a' * 5000}")
    _one_error(rc, err, "not found")


def test_sample_prompt_starting_with_a_dash_in_bench(model_copy: Path) -> None:
    from runtime.bench import run

    edit_vocab(model_copy, lambda d: d["training"].__setitem__("sample_prompt", "-isZ"))
    edit_vocab(model_copy, lambda d: d["chars"].__setitem__(0, "-"))  # ' ' becomes '-'
    result = run(model_copy, chars=50, batch=2, repeats=1)
    assert result.chars_per_s > 0


def test_non_string_prompt_is_named() -> None:
    from runtime.errors import PromptError

    with pytest.raises(PromptError, match="must be a string, got int"):
        Generator.load().generate(42, 5)  # type: ignore[arg-type]


def test_huge_batch_is_refused_before_allocating() -> None:
    from runtime.errors import GenerationSettingsError

    with pytest.raises(GenerationSettingsError, match="over the 67,108,864"):
        Generator.load().generate_batch(["This is Z"] * 65_536, 100_000)


def test_tiny_temperature_tends_to_greedy() -> None:
    from runtime import GenerationOptions

    gen = Generator.load()
    options = GenerationOptions(temperature=1e-310, seed=1)
    assert gen.generate("This is Z", 20, options) == gen.generate("This is Z", 20)


@pytest.mark.parametrize("args", [["--json"], ["--prompts-file", "PROMPTS"], []])
def test_ctrl_c_is_exit_130_on_every_path(tmp_path: Path, args: list[str]) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("This is Z\n" * 600)
    args = [str(prompts) if a == "PROMPTS" else a for a in args]
    prompt = [] if "--prompts-file" in args else ["This is Z"]
    # Nobody reads stdout until the signal: the command blocks on a full pipe with more
    # output to write (wherever Ctrl-C lands, loading included, the status must be 130).
    proc = subprocess.Popen(
        [*TEXTGEN, "generate", *prompt, "-n", "100000", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        preexec_fn=default_sigint,
    )
    time.sleep(3.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"Aborted" not in err
