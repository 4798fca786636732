"""`textgen web` in a real browser: the site served from 127.0.0.1 and loaded in headless
Chromium (Debian's package) with onnxruntime-web's WASM build (npm); `make test` installs
both (`make web-tools`)."""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from helpers import REPO, edit_vocab

sys.path.insert(0, str(REPO / "benchmarks"))
from browser import CHROMIUM, chromium  # noqa: E402

from runtime import Generator  # noqa: E402
from runtime.cli import main  # noqa: E402
from runtime.errors import ArtifactError, WebSiteError  # noqa: E402
from runtime.web import write_site  # noqa: E402

ORT_DIST = REPO / ".cache" / "ort-web" / "node_modules" / "onnxruntime-web" / "dist"
OUTPUT = re.compile(r'<pre id="output" data-state="(\w+)"[^>]*>(.*?)</pre>', re.S)


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [p for p in (Path(CHROMIUM), ORT_DIST / "ort.wasm.min.js") if not p.exists()]
    assert not missing, f"run `make web-tools` first: {missing} missing"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A static file server on 127.0.0.1 over a folder of sites."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
    }

    def log_message(self, *args) -> None:
        pass


def _page(url: str, profile: Path) -> tuple[str, str]:
    """(data-state, text) of the page's output element once its scripts have run."""
    proc = subprocess.run(
        chromium(profile, "--virtual-time-budget=120000", "--dump-dom", url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    match = OUTPUT.search(proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    return match.group(1), html.unescape(match.group(2))


def _site(server, name: str, model_dir: Path | None) -> str:
    root, base = server
    write_site(model_dir, root / name, ORT_DIST)
    return f"{base}/{name}/index.html"


def _run(url: str, tmp_path: Path, **params) -> tuple[str, str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return _page(f"{url}?{urlencode({'autorun': 1, **params})}", profile)


def test_default_model_gives_the_runtimes_greedy_text(tools, server, tmp_path) -> None:
    url = _site(server, "default", None)
    state, text = _run(url, tmp_path, prompt="This is Z", length=60)
    assert state == "done"
    assert text == Generator.load().generate("This is Z", 60)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_stateful_models_give_the_runtimes_greedy_text(
    tools, server, tmp_path, stateful_models, cell, precision
) -> None:
    model = stateful_models[cell]
    url = _site(server, f"{cell}-{precision}", model)
    prompt = "The quick brown fox"
    state, text = _run(url, tmp_path, prompt=prompt, length=80, precision=precision)
    assert state == "done", text
    # The page runs model.onnx for every step, as the Python runtime does with the native
    # builder (its decomposed int8 steps round differently, see README "Graph builders").
    native = Generator.load(model, precision=precision, graph_builder="native")
    assert text == native.generate(prompt, 80)
    if precision == "fp32":
        assert text == Generator.load(model).generate(prompt, 80)


@pytest.mark.parametrize(("mode", "precision"), [("window", "fp32"), ("stateful", "int8")])
def test_a_wide_vocabulary_runs_in_the_page(
    tools, server, tmp_path, wide_models, mode, precision
) -> None:
    # 1,100 characters: the graph one-hot encodes with an OneHot node (format version 3).
    model, prompt = wide_models[mode], wide_models["prompt"]
    url = _site(server, f"wide-{mode}-{precision}", model)
    state, text = _run(url, tmp_path, prompt=prompt, length=60, precision=precision)
    assert state == "done", text
    native = Generator.load(model, precision=precision, graph_builder="native")
    assert text == native.generate(prompt, 60)


def test_sampled_text_respects_the_settings(tools, server, tmp_path) -> None:
    url = _site(server, "sampling", None)
    greedy = Generator.load().generate("This is Z", 50)
    _, top1 = _run(url, tmp_path, prompt="This is Z", length=50, temperature=0.7, top_k=1)
    assert top1 == greedy  # only the most likely character is left to draw
    runs = [
        _run(url, tmp_path, prompt="This is Z", length=50, temperature=1.5, seed=7)[1]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]  # the same seed, the same text
    vocab = set(Generator.load().spec.chars)
    assert set(runs[0]) <= vocab and len(runs[0]) == 59
    _, stopped = _run(url, tmp_path, prompt="This is Z", length=50, stop="a")
    assert stopped.endswith("a") and stopped == greedy[: greedy.index("a", 9) + 1]


def test_tampered_model_is_refused_in_the_page(tools, server, tmp_path) -> None:
    root, base = server
    url = _site(server, "tampered", None)
    model = root / "tampered" / "model" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    model.write_bytes(bytes(data))
    state, text = _run(url, tmp_path, prompt="This is Z", length=10)
    assert state == "error"
    assert text.startswith("Error: model.onnx does not match the sha256 in vocab.json")
    edit_vocab(root / "tampered" / "model", lambda d: d.__setitem__("version", 99))
    state, text = _run(url, tmp_path, prompt="This is Z", length=10)
    assert state == "error" and "format version 99" in text
    # As the Python runtime: one value per key (JSON.parse would keep the last), UTF-8 only.
    vocab = root / "tampered" / "model" / "vocab.json"
    edit_vocab(root / "tampered" / "model", lambda d: d.__setitem__("version", 1))
    good = vocab.read_text()
    vocab.write_text(
        good.replace('"graph": {', '"graph": {"x": 1, "y": {"x": [1, "x"]}, "x": 2, ', 1)
    )
    state, text = _run(url, tmp_path, prompt="This is Z", length=10)
    assert state == "error" and 'key "x" appears twice in one object' in text, text
    vocab.write_text(good, encoding="utf-16")
    state, text = _run(url, tmp_path, prompt="This is Z", length=10)
    assert state == "error" and "not valid JSON" in text, text


def test_the_page_names_a_combining_mark_and_the_normal_form_that_reads(
    tools, server, tmp_path
) -> None:
    root, _ = server
    url = _site(server, "accents", None)
    edit_vocab(root / "accents" / "model", lambda d: d["chars"].__setitem__(3, "é"))  # for Z
    state, text = _run(url, tmp_path, prompt="The\u0301 is", length=5)
    assert state == "error", text
    assert "U+0301" in text and "its Unicode NFC form has none: normalize it to NFC" in text
    state, text = _run(url, tmp_path, prompt="Thé is", length=5)
    assert state == "done" and text.startswith("Thé is"), text


def test_web_command_refuses_to_overwrite_and_checks_the_dist(tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["web", "--out", str(site)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (site / "keep.txt").read_text() == "mine"
    result = CliRunner().invoke(
        main, ["web", "--out", str(tmp_path / "s2"), "--ort-web", str(tmp_path)]
    )
    assert result.exit_code == 1 and "lacks ort.wasm.min.js" in result.output
    assert not (tmp_path / "s2").exists()
    result = CliRunner().invoke(main, ["web", "--out", str(tmp_path / "s3")])  # CDN version
    assert result.exit_code == 0, result.output
    page = (tmp_path / "s3" / "index.html").read_text()
    assert 'integrity="sha384-' in page and "cdn.jsdelivr.net/npm/onnxruntime-web@" in page
    assert json.loads((tmp_path / "s3" / "model" / "vocab.json").read_text())["format"]
    (tmp_path / "s4").symlink_to(tmp_path / "unmounted" / "www")
    result = CliRunner().invoke(main, ["web", "--out", str(tmp_path / "s4")])
    assert result.exit_code == 1 and "symbolic link that leads nowhere" in result.output
    assert not (tmp_path / "unmounted").exists()
    (tmp_path / "a-file").write_text("mine")
    result = CliRunner().invoke(main, ["web", "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 1 and "exists and is not a directory" in result.output
    assert (tmp_path / "a-file").read_text() == "mine"
    # A link to an empty directory (a web server's root) is followed, as textgen-train's
    # --out is: the site goes where it points, and the link stays.
    (tmp_path / "www").mkdir()
    (tmp_path / "s5").symlink_to(tmp_path / "www")
    result = CliRunner().invoke(main, ["web", "--out", str(tmp_path / "s5")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s5").is_symlink() and (tmp_path / "www" / "index.html").is_file()
    assert json.loads((tmp_path / "s5" / "model" / "vocab.json").read_text())["format"]


def test_site_gets_the_directorys_own_mode_and_every_precision_is_checked(
    tmp_path, stateful_models
) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()  # the mode a new directory gets under this process' umask
    write_site(None, tmp_path / "new")
    assert (tmp_path / "new").stat().st_mode == probe.stat().st_mode  # not mkdtemp's 0700
    (tmp_path / "mine").mkdir(mode=0o750)
    before = sorted(p.name for p in tmp_path.iterdir()), tmp_path.stat().st_mtime_ns
    write_site(None, tmp_path / "mine")
    assert (tmp_path / "mine").stat().st_mode & 0o7777 == 0o750
    # An existing directory is filled in place: nothing was created (or removed) beside
    # it, so its parent (a web root's, often not the user's to write) was never written.
    assert (sorted(p.name for p in tmp_path.iterdir()), tmp_path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [
        "index.html", "model", "textgen.js"
    ]  # fmt: skip
    # Where nothing can be written, one line and no traceback.
    with pytest.raises(WebSiteError, match="cannot write /proc/textgen-site"):
        write_site(None, Path("/proc/textgen-site"))
    # Published are the bytes checked: every precision's, not only the one that loaded.
    site = write_site(stateful_models["gru"], tmp_path / "gru")
    for name in ("vocab.json", "model.onnx", "model.int8.onnx"):
        assert (site / "model" / name).read_bytes() == (stateful_models["gru"] / name).read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(stateful_models["gru"], broken)
    with (broken / "model.int8.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="model.int8.onnx does not match the sha256"):
        write_site(broken, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
