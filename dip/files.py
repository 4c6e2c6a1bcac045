"""Files written whole or not at all: a reader, or a run resumed after a crash mid-write, never sees half of one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from dip.errors import DipError, one_line


def _process_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# read once, at import: setting it to read it is process-wide, so a thread reading it while another had
# it set to 0 would restore 0, and every later file would be world-writable (the benchmark's baseline threads)
_UMASK = _process_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary file's name beside ``path`` (its folders made) to write; renamed to ``path`` when the
    block ends, with the permissions of any new file (not ``mkstemp``'s private 0600), or removed if
    the block raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``path`` written by ``write(handle)``, whole or not at all (``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def unwritable(folder: Path) -> str | None:
    """Why no run could write into ``folder`` (made where missing), or None: a file in the way (it, or one
    above it), or a place where the file system refuses a new file (read-only, a name too long)."""
    try:
        existing = existing_ancestor(folder)
        if not existing.exists():
            return f"{existing} is a symbolic link to {os.readlink(existing)}, which does not exist"
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as error:
        return f"cannot write there ({error.strerror or one_line(error)})"
    return None


def existing_ancestor(path: Path) -> Path:
    """``path`` (made absolute) if it exists, else the nearest folder above it that does: where making it
    would start, and what stands in its way if that is a file or a symbolic link to nothing."""
    return next(folder for folder in [path.absolute(), *path.absolute().parents]
                if folder.exists() or folder.is_symlink())


_HELD: dict[Path, int] = {}  # the folders this process holds (resolved), each open until let go of


def hold_folder(folder: Path) -> bool:
    """Hold ``folder`` (made if missing) for this process until it ends or lets go of it (``let_go``); ``DipError``
    when another process holds it: two runs writing into one folder would leave outputs of one beside the
    other's record. The lock is the kernel's (``flock``): a process that dies lets go of it. False where this
    process held it already."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() in _HELD:
        return False
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise DipError(f"{folder} is in use by another run that is still going: wait for it to end, or run into "
                       f"another folder") from None
    _HELD[folder.resolve()] = descriptor
    return True


def let_go(folder: Path) -> None:
    """Let go of ``folder``, which ``hold_folder`` held: another process may write there now."""
    if (descriptor := _HELD.pop(folder.resolve(), None)) is not None:
        os.close(descriptor)


@contextlib.contextmanager
def folder_held(folder: Path) -> Iterator[None]:
    """``folder`` held for the block (``hold_folder``) and let go of after it, unless this process held it before;
    made for it if missing (with the folders above it), and those removed after it if still empty (a run that
    failed before writing)."""
    made = [path for path in [folder, *folder.parents] if not path.exists()]  # the deepest first
    taken = hold_folder(folder)
    try:
        yield
    finally:
        if taken:
            let_go(folder)
        for path in made:
            if not path.is_dir() or any(path.iterdir()):
                break
            path.rmdir()
