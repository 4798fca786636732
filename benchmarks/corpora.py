"""Public-domain corpora for benchmarks, fetched from the Debian archive (no other network).

The King James Version of the Bible (about 4.2 MB of English) ships in Debian's bible-kjv-text
package, together with the small `bible` program that prints it. Both are downloaded with
`apt-get download` (no root, nothing installed), unpacked into .cache/, and the text is dumped
once with verse numbers removed.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "corpora"


def wide_text(repeats: int = 20) -> str:
    """A synthetic text of 1,100 distinct CJK ideographs (past
    runtime.artifact.ONE_HOT_OP_CHARS, so its models one-hot encode with OneHot), each
    `repeats` times, in a fixed stride a model can learn."""
    from runtime.artifact import ONE_HOT_OP_CHARS

    chars = [chr(0x4E00 + i) for i in range(ONE_HOT_OP_CHARS + 76)]
    return "".join(chars[(i * 7919) % len(chars)] for i in range(repeats * len(chars)))


def kjv() -> Path:
    """Path to kjv.txt, fetching it on first use."""
    dest = CACHE / "kjv.txt"
    if dest.exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            ["apt-get", "download", "-q", "bible-kjv", "bible-kjv-text"],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        raw = subprocess.run(
            [
                str(root / "usr" / "bin" / "bible"),
                "-p",
                str(root / "usr" / "lib"),
                "gen1:1-rev22:21",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    lines = [re.sub(r"^\s*\d+ ", "", line.rstrip()) for line in raw.splitlines()]
    text = "\n".join(lines).strip() + "\n"
    tmp_dest = dest.with_suffix(".tmp")
    tmp_dest.write_text(text, encoding="utf-8")
    tmp_dest.replace(dest)
    return dest


if __name__ == "__main__":
    path = kjv()
    print(f"{path}: {path.stat().st_size:,} bytes")
