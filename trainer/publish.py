"""Publishing a model directory atomically: readers and crashes see the old set or the new.

The new files are written into a sibling staging directory, everything else already in the
output directory is hard-linked alongside them, and the two directories are swapped in one
step with Linux's renameat2(RENAME_EXCHANGE). A kill at any moment leaves either the
complete old set or the complete new one. Where the exchange is unavailable (another OS,
a mount point), files are renamed into place one by one, vocab.json last; vocab.json holds
the graphs' sha256, so the runtime refuses a half-published set rather than run it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.staging-"


def make_staging(out_dir: Path) -> Path:
    """A fresh staging directory beside out_dir (same filesystem), or inside it if the
    parent is not writable. Leftovers of killed exports are removed first."""
    out_dir = Path(out_dir)
    parent = out_dir.resolve().parent
    for old in parent.glob(staging_prefix(out_dir) + "*"):
        shutil.rmtree(old, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir), dir=parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EXDEV, errno.EBUSY, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _carry(src: Path, dst: Path) -> None:
    """Hard-link (or copy) a file or tree that the new model keeps unchanged."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, copy_function=_link_or_copy, symlinks=True)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, out_dir: Path, new: Iterable[str], remove: Iterable[str] = ()) -> None:
    """Make out_dir hold staging's `new` files, keep its other entries, drop `remove`.

    `new` must list vocab.json last (the commit point when the fallback path is used).
    """
    staging, out_dir = Path(staging), Path(out_dir)
    new, remove = list(new), set(remove)
    for name in new:  # the new files are on disk before any rename makes them visible
        fsync_path(staging / name)
    if staging.parent == out_dir:  # staged inside: only the one-by-one path is possible
        _replace_one_by_one(staging, out_dir, new, remove)
        return
    for entry in out_dir.iterdir():
        if entry.name not in new and entry.name not in remove:
            _carry(entry, staging / entry.name)
    fsync_path(staging)
    if _exchange(staging, out_dir):
        fsync_path(out_dir.resolve().parent)
        shutil.rmtree(staging, ignore_errors=True)  # now the previous set
        return
    log.debug("atomic directory exchange unavailable; renaming files one by one")
    _replace_one_by_one(staging, out_dir, new, remove)
    shutil.rmtree(staging, ignore_errors=True)


def _replace_one_by_one(staging: Path, out_dir: Path, new: list[str], remove: set[str]) -> None:
    for name in new:
        os.replace(staging / name, out_dir / name)
    fsync_path(out_dir)
    for name in remove:  # only after the commit, so the old vocab.json never lacks a file
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
