"""Per-job lock files, created with ``O_CREAT | O_EXCL`` and holding pid + host.

Two runners of the same suite (same machine or a shared filesystem) each run a job exactly once:
the one that creates ``<id>.lock`` runs it, the other skips it. A lock left by a dead process on
this host (pid gone, or pid reused by a process with another start time) is stale and is broken.
A lock held from another host cannot be probed and is treated as live.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

#: A lock file that exists but is still empty (being written) counts as live for this long.
EMPTY_LOCK_GRACE_S = 30.0


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock."""

    pid: int
    host: str
    started: str = ""
    proc_start: Optional[str] = None  # /proc/<pid>/stat start time, guards against pid reuse

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" + (f" since {self.started}" if self.started else "")


def _proc_start(pid: int) -> Optional[str]:
    """Kernel start time of ``pid`` (Linux), or None where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; fields after the closing paren are plain
    return stat.rsplit(")", 1)[-1].split()[19]


def this_holder() -> LockInfo:
    pid = os.getpid()
    return LockInfo(pid=pid, host=socket.gethostname(),
                    started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    proc_start=_proc_start(pid))


def read_lock(path: Path) -> Optional[LockInfo]:
    """Holder recorded in ``path``; None if absent, empty or unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        data = json.loads(text)
        return LockInfo(pid=int(data["pid"]), host=str(data["host"]), started=str(data.get("started", "")),
                        proc_start=data.get("proc_start"))
    except (ValueError, KeyError, TypeError):
        return None


def is_alive(holder: LockInfo) -> bool:
    """False only if ``holder`` is provably dead (same host, pid gone or reused)."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if holder.proc_start is not None:
        current = _proc_start(holder.pid)
        if current is not None and current != holder.proc_start:
            return False
    return True


def lock_state(path: Path) -> Optional[str]:
    """``None`` (no lock), ``"live"`` or ``"stale"``: for status displays."""
    if not path.exists():
        return None
    holder = read_lock(path)
    if holder is None:
        return "live" if _age(path) < EMPTY_LOCK_GRACE_S else "stale"
    return "live" if is_alive(holder) else "stale"


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


class JobLock:
    """``with``-free lock object: ``acquire()`` then ``release()`` in a ``finally``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.held = False

    def acquire(self) -> Optional[LockInfo]:
        """Take the lock. Returns None on success, else the live holder (lock not taken)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder: Optional[LockInfo] = None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if holder is None:
                    if _age(self.path) < EMPTY_LOCK_GRACE_S:
                        return LockInfo(pid=0, host="?", started="(lock being written)")
                elif is_alive(holder):
                    return holder
                self._break_stale(holder)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(this_holder()), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return None
        return holder or LockInfo(pid=0, host="?")

    def _break_stale(self, seen: Optional[LockInfo]) -> None:
        """Remove a stale lock without clobbering a fresh one another process took meanwhile."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        if read_lock(aside) == seen:
            aside.unlink(missing_ok=True)
            return
        # we moved a lock that was re-taken in between: put it back unless a newer one exists
        try:
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
