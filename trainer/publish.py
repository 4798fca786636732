"""Publishing a model directory atomically: readers and crashes see the old set or the new.

The new files are written into a sibling staging directory, everything else already in the
output directory is hard-linked alongside them, and the two directories are swapped in one
step with Linux's renameat2(RENAME_EXCHANGE). A kill at any moment leaves either the
complete old set or the complete new one. Where the exchange is unavailable (another OS,
an output directory that is a mount point, whose parent is another filesystem), the files
are staged inside the output directory and renamed into place one by one, vocab.json last;
vocab.json holds the graphs' sha256, so the runtime refuses a half-published set rather
than run it. A symlinked output directory is followed: the model goes where it points.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from runtime.artifact import take_mode

from .errors import OutputDirError

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


INSIDE_PREFIX = ".staging-"
LOCK_FILE = ".textgen-train.lock"


@contextlib.contextmanager
def out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive right to write out_dir for as long as the block runs.

    A second trainer or export on the same directory is refused with the holder's PID. The
    lock is flock(2) on a file inside the directory, so the kernel drops it when its holder
    dies, however it dies: a lock left by a killed run is simply taken over. Publishing
    carries the file into the new directory by hard link, so the lock survives the swap.
    """
    broken = _broken_link(out_dir)
    if broken is not None:
        raise OutputDirError(
            f"cannot write to output directory {out_dir}: {broken}; fix or remove the link, "
            "or choose another --out"
        )
    real = real_dir(out_dir)
    made = not real.exists()
    lock = real / LOCK_FILE
    try:
        real.mkdir(parents=True, exist_ok=True)
        # Never through a link, and only a regular file: the PID written into it truncated
        # whatever a crafted lock link pointed at (a model directory from elsewhere).
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_our_lock(out_dir, "a symbolic link") from None
        raise OutputDirError(
            f"cannot write to output directory {out_dir}: {exc.strerror or exc}; "
            "choose another --out"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_our_lock(out_dir, "not a regular file")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise OutputDirError(
            f"{out_dir} is being written by another textgen-train (PID {holder}); wait for "
            "it to finish or choose another --out"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        if made:  # a run that failed before writing anything leaves no empty --out behind
            with contextlib.suppress(OSError):
                real.rmdir()  # only if empty


def _broken_link(out_dir: Path) -> str | None:
    """What is wrong with a symbolic link on the way to out_dir, if one leads nowhere.

    Following a link to a missing directory would create it, parents and all: with a link
    to an unmounted drive (/mnt/usb/models), the model would land on the root filesystem
    and vanish under the drive once it is mounted."""
    for path in [Path(out_dir), *Path(out_dir).parents]:
        if not path.is_symlink():
            continue
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{path} is a symbolic link that loops back on itself"
            return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
    return None


def _not_our_lock(out_dir: Path, what: str) -> OutputDirError:
    return OutputDirError(
        f"{Path(out_dir) / LOCK_FILE} is {what}, not textgen-train's lock file; remove it "
        "and run again"
    )


def staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.staging-"


def real_dir(out_dir: Path) -> Path:
    """The directory a (possibly symlinked) --out names: the model goes there, the link
    stays a link."""
    return Path(os.path.realpath(out_dir))


def make_staging(out_dir: Path) -> Path:
    """A fresh staging directory on out_dir's own filesystem: beside it, where the two can
    be swapped in one step, or inside it when out_dir is a mount point (a Docker volume, a
    USB stick: its parent is another filesystem) or the parent is not writable.
    Leftovers of killed exports are removed first."""
    real = real_dir(out_dir)
    parent = real.parent
    for old in real.glob(INSIDE_PREFIX + "*"):
        _roll_forward(old, real)
    for old in [*parent.glob(staging_prefix(real) + "*"), *real.glob(INSIDE_PREFIX + "*")]:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    if not os.path.ismount(real) and _same_filesystem(real, parent):
        try:
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(real), dir=parent))
        except OSError:
            pass
        else:
            take_mode(staging, real)
            return staging
    return Path(tempfile.mkdtemp(prefix=INSIDE_PREFIX, dir=real))


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


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
    staging, out_dir = Path(staging), real_dir(out_dir)
    new, remove = list(new), set(remove)
    for name in new:  # the new files are on disk before any rename makes them visible
        fsync_path(staging / name)
    if staging.parent == out_dir:  # staged inside: only the one-by-one path is possible
        _replace_one_by_one(staging, out_dir, new, remove)
        return
    for entry in out_dir.iterdir():
        if entry.name.startswith(INSIDE_PREFIX):
            continue
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


# Written into a staging directory inside out_dir once every new file is on disk: the
# renames that follow may be cut short by a kill, and the next export finishes them.
COMMIT_FILE = ".commit"


def _roll_forward(staging: Path, out_dir: Path) -> None:
    """Finish the one-by-one publish a kill interrupted (the commit file lists the names
    in rename order); a staging directory without one was never committed: dropped."""
    if staging.is_symlink():  # ours are real directories: a link leads somewhere else
        return
    try:
        names = json.loads((staging / COMMIT_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return
    if not isinstance(names, dict):
        return
    new, remove = names.get("new", []), names.get("remove", [])
    # Only names of entries of out_dir itself: a crafted record in a directory from
    # elsewhere ("../../x") would otherwise move or delete files outside it.
    if not (_plain_names(new) and _plain_names(remove)):
        log.warning("ignoring %s: its commit record is not one textgen-train wrote", staging)
        return
    log.info("finishing an interrupted publish into %s", out_dir)
    _replace_one_by_one(staging, out_dir, new, set(remove))


def _plain_names(names: object) -> bool:
    """A list of names of entries directly inside a directory (no separator, no . or ..)."""
    return isinstance(names, list) and all(
        isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\0" not in n
        for n in names
    )


def _replace_one_by_one(staging: Path, out_dir: Path, new: list[str], remove: set[str]) -> None:
    """Rename the staged files into out_dir, vocab.json last. Within one directory this is
    the best a filesystem offers (no multi-file atomicity): a kill between two renames
    leaves a set that the runtime refuses (vocab.json holds the sha256 of the graphs) and
    that the next export finishes from the committed staging directory."""
    if staging.parent == out_dir and not (staging / COMMIT_FILE).exists():
        commit = staging / COMMIT_FILE
        commit.write_text(json.dumps({"new": new, "remove": sorted(remove)}))
        fsync_path(commit)
        fsync_path(staging)
    for name in new:
        if (staging / name).exists():  # a rolled-forward publish may have moved it already
            os.replace(staging / name, out_dir / name)
    fsync_path(out_dir)
    for name in remove:  # only after the commit, so the old vocab.json never lacks a file
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
