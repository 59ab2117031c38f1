"""Write files so that a reader sees either the complete new file or nothing.

Results of long runs must never be left half-written by Ctrl-C or a kill: everything is
written to a temporary name in the same directory and renamed into place (``os.replace`` is
atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); results are ordinary files, so honour the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def unwritable_folder(folder: str | os.PathLike[str]) -> str | None:
    """Why no file can be written in ``folder``, in a few words, or ``None`` where one can.
    The folder is made if missing, as writing there would make it, and a file is opened in it:
    the OS is the judge (a path under a file, no permission, a read-only or virtual file
    system). The command-line tools ask before their work, which can be long, so that an
    output location that cannot be written is one line at once, not an OS error's stack trace
    at the end."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        return f"{blocker} is a file, not a directory" if blocker is not None else exc.strerror or str(exc)
    return None


def unwritable_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written as a file, or ``None`` where it can (see
    :func:`unwritable_folder`)."""
    if Path(path).is_dir():
        return "it is a directory; give a file name"
    return unwritable_folder(Path(path).parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
