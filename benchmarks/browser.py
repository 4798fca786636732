"""Headless Chromium as the browser tests and benchmarks start it (Debian's package)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(profile: Path, *extra: str) -> list[str]:
    """The command line: headless, a fresh profile, and none of the background traffic that
    this machine's closed network would refuse (update checks, sync, metrics)."""
    return [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *extra,
    ]
