"""The one atomic file writer of the repository (standard library only; the research code imports it too).

Every file is written to a fresh temp file in the target's folder, flushed and fsynced, then
``os.replace``-d over the target: a reader sees the old file or the whole new one, never a part.
A write that fails (an exception in the writer, a full disk, Ctrl-C) removes its temp file and
leaves the old target as it was; a target that is a folder or a device (``/dev/full``) is refused
with an OSError before anything is written, never replaced.

    atomic_write_text(path, text)                      # also _bytes, _json
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True, prefix=".tmp_npz_")
    atomic_write_file(path, lambda tmp: h5py.File(tmp, "w")...)   # writers that need a file name
    with StagedWrites() as stage:                      # several files, all or nothing
        stage.text(a, "..."); stage.file(b, render)

Temp files are ``<prefix><random><suffix>`` beside the target (default ``.<name>.<random>.tmp``:
hidden, and never matching the target's own extension); a site whose leftovers a cleaner looks for
passes its own ``prefix``. The final file has the permissions a plain ``open()`` would give it
(``0o666 & ~umask``) unless ``mode`` says otherwise.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by setting it and back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def not_regular(path: str | os.PathLike, follow: bool = True) -> Optional[str]:
    """What ``path`` is when it exists but is not a regular file: ``"a folder"``, ``"a device or
    other special file"``, or (``follow=False``: the link itself) ``"a symbolic link"``; None
    when it is absent (a dangling link too, when followed) or a regular file."""
    try:
        mode = os.stat(path).st_mode if follow else os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a folder" if stat.S_ISDIR(mode) else "a device or other special file"


def _refuse_special(path: Path) -> None:
    """An OSError when ``path`` exists but is not a regular file: a folder, or a device such as
    ``/dev/full`` that a rename would replace (and so never report its write error)."""
    what = not_regular(path)
    if what is not None:
        raise OSError(errno.EISDIR if what == "a folder" else errno.EEXIST,
                      f"is {what}, not a file (left as it is)", str(path))


def _temp_beside(path: Path, prefix: Optional[str], suffix: str, mode: Optional[int]) -> tuple[int, str]:
    """A new temp file (fd, name) in ``path``'s folder (created if missing), with the final mode;
    an OSError, before anything is written, if ``path`` is a folder or a special file."""
    _refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix,
                               dir=path.parent)
    try:
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[IO], object], *, binary: bool = False,
                 prefix: Optional[str] = None, suffix: str = ".tmp", mode: Optional[int] = None) -> Path:
    """Replace ``path`` with what ``write(f)`` writes to the open temp file ``f`` (UTF-8 text, or
    bytes with ``binary``). Returns ``path``."""
    path = Path(path)
    fd, tmp = _temp_beside(path, prefix, suffix, mode)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_file(path: Path | str, write: Callable[[Path], object], *, prefix: Optional[str] = None,
                      suffix: str = ".tmp", mode: Optional[int] = None) -> Path:
    """Replace ``path`` with the file ``write(tmp)`` writes at the temp path ``tmp`` (for writers
    that take a file name: h5py, matplotlib, shutil.copy2). Returns ``path``."""
    path = Path(path)
    fd, tmp = _temp_beside(path, prefix, suffix, mode)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes, **kw: Any) -> Path:
    """Write ``data`` to ``path`` atomically (``kw``: prefix, suffix, mode)."""
    return atomic_write(path, lambda fh: fh.write(data), binary=True, **kw)


def atomic_write_text(path: Path | str, text: str, **kw: Any) -> Path:
    """Write ``text`` to ``path`` atomically in UTF-8 (``kw``: prefix, suffix, mode)."""
    return atomic_write(path, lambda fh: fh.write(text), **kw)


def atomic_write_json(path: Path | str, obj: Any, *, indent: Optional[int] = 2, sort_keys: bool = True,
                      default: Optional[Callable[[Any], Any]] = str, allow_nan: bool = True, **kw: Any) -> Path:
    """Write ``obj`` as JSON and a final newline, atomically. The defaults (indented, key-sorted,
    ``str()`` of what JSON cannot hold) give the engine's deterministic bytes; the research side's
    files keep their insertion order and refuse NaN (:func:`benchmark.envelope.dump_json`)."""
    def dump(fh: IO) -> None:
        json.dump(obj, fh, indent=indent, sort_keys=sort_keys, default=default, allow_nan=allow_nan)
        fh.write("\n")
    return atomic_write(path, dump, **kw)


class StagedWrites:
    """Several files written all or nothing. Each :meth:`file` / :meth:`text` writes its temp file
    in full at once; leaving the ``with`` block without an error renames every temp file over its
    target, an error removes them all (no target touched).

        with StagedWrites() as stage:
            stage.text(out / "a.md", markdown)
            stage.file(out / "a.png", lambda tmp: fig.savefig(tmp, format="png"))
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, Path]] = []  # (temp file, target)

    def file(self, path: Path | str, write: Callable[[Path], object], *, suffix: Optional[str] = None) -> Path:
        """Stage ``path`` with what ``write(tmp)`` writes at the temp path (suffix default
        ``.tmp<target's extension>``, for writers that read the format from the name)."""
        path = Path(path)
        fd, tmp = _temp_beside(path, None, ".tmp" + path.suffix if suffix is None else suffix, None)
        os.close(fd)
        self._staged.append((tmp, path))
        write(Path(tmp))
        _fsync_file(tmp)
        return path

    def text(self, path: Path | str, text: str) -> Path:
        """Stage ``path`` with ``text`` in UTF-8."""
        return self.file(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))

    def __enter__(self) -> "StagedWrites":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for tmp, _ in self._staged:
                _discard(tmp)
            return
        for tmp, target in self._staged:
            os.replace(tmp, target)
