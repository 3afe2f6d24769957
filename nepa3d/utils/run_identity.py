"""Is the state left in a run folder this run's? Argument comparison and cheap input fingerprints.

A training CLI that reuses (fine-tuning) or resumes (pretraining) what an earlier invocation left
in its ``--save_dir`` must first check that the earlier invocation was the same run: same
arguments, apart from those that cannot change the outcome, and the same inputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping

_UNSET = "<unset>"


def first_differing_arg(saved: Mapping, current: Mapping, neutral: Iterable[str] = ()) -> str | None:
    """The first argument name (``current``'s order, then names only ``saved`` has) whose value
    differs between the two argument dicts, skipping ``neutral`` names; None if all agree. A
    name present in one dict only differs."""
    skip = set(neutral)
    names = list(current) + [k for k in saved if k not in current]
    for name in names:
        if name not in skip and saved.get(name, _UNSET) != current.get(name, _UNSET):
            return name
    return None


def describe_difference(saved: Mapping, current: Mapping, name: str) -> str:
    """``--lr 0.001 (now 0.002)``: one argument's saved and current value."""
    return f"--{name} {saved.get(name, _UNSET)} (now {current.get(name, _UNSET)})"


def tree_listing_sha256(root: str | os.PathLike) -> str | None:
    """sha256 of the sorted listing of every file under ``root`` (symlinks followed): relative
    path, size and mtime (ns) per file. Cheap (no contents are read) and changes whenever a file
    is added, removed or rewritten; None when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            try:
                st = f.stat()
            except OSError:  # a dangling link
                continue
            h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
