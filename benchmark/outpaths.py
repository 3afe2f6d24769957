"""Output locations of the command line, checked before anything runs or is written (standard
library and the atomic writer only).

:func:`dir_problem` / :func:`file_problem` say in one line why a path the user named cannot take
the folder / file a command would write there: a file where a folder is needed (the path or one
of its parents), a folder or a device where a file would be replaced. :func:`os_error_line` is the
one line for an ``OSError`` a command meets while it runs (a full disk, a read-only folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .atomic import not_regular


def _file_in_the_way(folder: Path) -> Optional[Path]:
    """The first of ``folder`` and its parents that exists but is not a folder, or None."""
    for p in (folder, *folder.parents):
        if p.is_dir():
            return None
        if os.path.lexists(p):
            return p
    return None


def dir_problem(flag: str, path: str | os.PathLike) -> Optional[str]:
    """Why folder ``path`` (the value of ``flag``) cannot hold outputs, else None."""
    if not str(path):
        return f"{flag}: expected a folder; got an empty path"
    blocker = _file_in_the_way(Path(path))
    if blocker is None:
        return None
    return f"{flag} {path}: {blocker} is a file, not a folder"


def file_problem(flag: str, path: str | os.PathLike) -> Optional[str]:
    """Why file ``path`` (the value of ``flag``) cannot be written (replaced atomically), else None."""
    if not str(path):
        return f"{flag}: expected a file path; got an empty path"
    what = not_regular(path)
    if what is not None:
        return f"{flag} {path}: is {what}, not a file"
    blocker = _file_in_the_way(Path(os.path.abspath(path)).parent)
    if blocker is None:
        return None
    return f"{flag} {path}: {blocker} is a file, not a folder"


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` met while running: ``<file>: <cause>`` (the cause in lower case)."""
    cause = exc.strerror.lower() if exc.strerror else (" ".join(str(exc).split()) or type(exc).__name__)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {cause}" if names else cause
