"""`textgen web`: a static site that runs a model in the browser with onnxruntime-web.

The site is `index.html` (prompt, settings, streamed output, model card), `textgen.js`
(an ES module apps can import on their own pages), the model files under `model/`, and
onnxruntime-web's WASM build under `ort/`, copied from the npm package's `dist/` folder;
without one, the page loads a pinned release from a public CDN, checked by its
subresource-integrity hash. A new SITE is written beside it and renamed into place; an
existing (empty) one is written inside itself and moved in, the page last. Either way a
failure leaves nothing half-written, and nothing in an existing SITE is overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path

from .artifact import MAX_VOCAB_BYTES, VOCAB_FILE, ModelSpec, read_capped, take_mode
from .errors import WebSiteError
from .generator import Generator
from .loading import MAX_MODEL_BYTES

WEB_DIR = Path(__file__).parent / "web"
# The onnxruntime-web release the page was tested with, its WASM-only build (no WebGPU /
# JSEP: half the size) and the files that build loads.
ORT_WEB_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
# sha384 of ORT_CDN + "ort.wasm.min.js" (the npm package's own file).
ORT_SRI = "sha384-Bw6URI+Gvoadw0do7/QrSHUC9D1vCYYK5OSqChFyhyV5mzPL4oe2rOAFljAnS8Sq"


def _ort_script(local: bool) -> str:
    base = "ort/" if local else ORT_CDN
    integrity = "" if local else f' integrity="{ORT_SRI}" crossorigin="anonymous"'
    failed = f"could not load onnxruntime-web from {base}"
    return (
        f'<script src="{base}ort.wasm.min.js"{integrity} '
        f"onerror=\"globalThis.ortError = '{failed}'\"></script>\n"
        f'<script>globalThis.ortBase = "{base}";</script>'
    )


def write_site(model_dir: Path | None, site: Path, ort_dist: Path | None = None) -> Path:
    """Write the static site for `model_dir` (None: the default model) into `site`, a new
    or empty directory, or a link to an empty one (the site goes there; the link stays)."""
    site = Path(site)
    if site.is_symlink() and not site.exists():
        raise WebSiteError(
            f"{site} is a symbolic link that leads nowhere (a missing target or a loop); "
            "remove it or choose another directory"
        )
    existing = site.exists()
    if existing and not site.is_dir():
        raise WebSiteError(f"{site} exists and is not a directory; choose a new directory")
    if existing and any(site.iterdir()):
        raise WebSiteError(f"{site} already exists and is not empty; choose a new directory")
    # Only a model that loads is published, in every precision it lists.
    gen = Generator.load(model_dir, warmup_threads=1)
    for precision in gen.spec.precisions[1:]:
        Generator.load(model_dir, precision=precision, warmup_threads=1)
    if ort_dist is not None:
        missing = [f for f in ORT_FILES if not (Path(ort_dist) / f).is_file()]
        if missing:
            raise WebSiteError(
                f"{ort_dist} lacks {', '.join(missing)}; pass the dist/ folder of the "
                f"onnxruntime-web npm package (npm install onnxruntime-web@{ORT_WEB_VERSION})"
            )
    # An existing (empty) directory, or a link to one, is filled in place, staged inside
    # itself, so that only it need be writable: a web server's root is often the one
    # directory a user may write to. A new one is staged beside it and renamed into place.
    try:
        if not existing:
            site.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(
                prefix=".textgen-staging-" if existing else f".{site.name}.staging-",
                dir=site if existing else site.parent,
            )
        )
    except OSError as exc:
        raise WebSiteError(f"cannot write {site}: {exc.strerror or exc}") from None
    moved: list[Path] = []
    try:
        page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
        page = page.replace("<!-- ORT_SCRIPT -->", _ort_script(ort_dist is not None))
        (staging / "index.html").write_text(page, encoding="utf-8")
        shutil.copy(WEB_DIR / "textgen.js", staging / "textgen.js")
        (staging / "model").mkdir()
        for name, data in _model_files(gen).items():
            (staging / "model" / name).write_bytes(data)
        if ort_dist is not None:
            (staging / "ort").mkdir()
            for name in ORT_FILES:
                shutil.copy(Path(ort_dist) / name, staging / "ort" / name)
        if existing:  # the page last, once everything it loads is there
            if any(entry.name != staging.name for entry in site.iterdir()):
                raise WebSiteError(f"{site} is no longer empty; choose a new directory")
            for entry in sorted(staging.iterdir(), key=lambda e: e.name == "index.html"):
                entry.rename(site / entry.name)
                moved.append(site / entry.name)
        else:
            site.mkdir()  # the mode a new directory gets here, which the site takes
            take_mode(staging, site)
            site.rmdir()
            staging.rename(site)
    except OSError as exc:
        for path in moved:  # the directory was empty: it is again
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise WebSiteError(f"cannot write {site}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return site


def _model_files(gen: Generator) -> dict[str, bytes]:
    """The bytes of the files the site publishes, read once each and checked to be the
    files `gen` loaded (a file replaced since is refused, not published)."""
    changed = "changed since it was loaded; run textgen web again"
    vocab = read_capped(gen.model_dir / VOCAB_FILE, MAX_VOCAB_BYTES, "it is not a vocabulary file")
    if ModelSpec.from_json(vocab, source=VOCAB_FILE) != gen.spec:
        raise WebSiteError(f"{gen.model_dir / VOCAB_FILE} {changed}")
    files = {VOCAB_FILE: vocab}
    for precision in gen.spec.precisions:
        name, sha256 = gen.spec.model_file(precision)
        data = read_capped(gen.model_dir / name, MAX_MODEL_BYTES, "it is not the file loaded")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise WebSiteError(f"{gen.model_dir / name} {changed}")
        files[name] = data
    return files
