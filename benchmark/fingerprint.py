"""Content fingerprints of folders, written to a small file a pipeline can depend on.

A DVC stage that lists a folder as a dependency walks and stats every file in it on every
`dvc repro`, even when nothing changed; twenty suite stages depending on the same source tree and
data cache made a no-op repro walk ~12,000 entries. One fingerprint stage per folder group writes
``sha256 <hex>`` of the group's contents to a file; the other stages depend on that file.

The digest covers each file's path relative to its root and the sha256 of its bytes (symlinks are
followed), in sorted order, skipping Python bytecode and numba caches: it changes exactly when
the contents change, not when files are merely rewritten with the same bytes.

    python -m benchmark fingerprint mylab benchmark --out results/fingerprints/code.txt
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from .atomic import atomic_write_text
from .errors import SuiteError
from .inputs import fingerprint_path

#: Not contents: bytecode, numba kernel caches.
SKIPPED_DIRS = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc", ".nbi", ".nbc")


def _files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if not name.endswith(SKIPPED_SUFFIXES):
                yield Path(dirpath) / name


def tree_digest(paths: list[Path | str]) -> str:
    """sha256 over ``"<root>/<relative path>\\0<sha256 of the bytes>\\n"`` for every file of
    every path (a file path counts as itself), in argument then sorted order."""
    h = hashlib.sha256()
    for root in map(Path, paths):
        if not root.exists():
            raise SuiteError(f"fingerprint: {root}: no such file or folder")
        files = [root] if root.is_file() else list(_files(root))
        for f in files:
            rel = f.name if f == root else f.relative_to(root).as_posix()
            h.update(f"{root.as_posix()}/{rel}\0{fingerprint_path(f)}\n".encode())
    return h.hexdigest()


def write_fingerprint(paths: list[Path | str], out: Path | str) -> str:
    """Write ``sha256 <hex>`` and the fingerprinted paths to ``out``; return the hex digest.
    The file's bytes are a function of the contents only."""
    digest = tree_digest(paths)
    atomic_write_text(out, f"sha256 {digest}\n" + "".join(f"path {p}\n" for p in paths))
    return digest
