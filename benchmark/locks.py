"""Per-job lock files, created with ``O_CREAT | O_EXCL`` and holding pid + host, with a heartbeat.

Two runners of the same suite (same machine or a shared filesystem) each run a job exactly once:
the one that creates ``<id>.lock`` runs it, the other skips it.

Heartbeat: the lock file's mtime. While a process holds locks, one daemon thread of that process
renews their mtime every :func:`renew_period` seconds. A lock whose heartbeat is older than
:func:`stale_limit` is stale on any host (its holder died or hangs); a lock left by a dead process
on this host (pid gone, or pid reused by a process with another start time) is stale at once.
A stale lock is broken by the next process that wants it (or by ``python -m benchmark unlock``).
Both periods come from one constant each, overridable through ``$BENCHMARK_LOCK_RENEW_S`` and
``$BENCHMARK_LOCK_STALE_S`` (tests) or the ``stale_s`` arguments.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .errors import SuiteError
from .atomic import not_regular

#: A lock file that exists but is still empty (being written) counts as live for this long.
EMPTY_LOCK_GRACE_S = 30.0
#: The holder renews its locks' heartbeat (their mtime) this often.
HEARTBEAT_RENEW_S = 30.0
#: A lock whose heartbeat is older than this is stale, whatever host holds it.
HEARTBEAT_STALE_S = 600.0
RENEW_ENV = "BENCHMARK_LOCK_RENEW_S"
STALE_ENV = "BENCHMARK_LOCK_STALE_S"


def _seconds_from_env(var: str, default: float) -> float:
    text = os.environ.get(var)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise SuiteError(f"${var}: expected a number of seconds > 0; got {text!r}")
    return value


def renew_period() -> float:
    """Seconds between two heartbeats of a held lock (``$BENCHMARK_LOCK_RENEW_S`` or the constant)."""
    return _seconds_from_env(RENEW_ENV, HEARTBEAT_RENEW_S)


def stale_limit() -> float:
    """Heartbeat age beyond which a lock is stale (``$BENCHMARK_LOCK_STALE_S`` or the constant)."""
    return _seconds_from_env(STALE_ENV, HEARTBEAT_STALE_S)


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
    """False only if ``holder``'s process is provably dead (same host, pid gone or reused); a
    holder on another host cannot be probed (its heartbeat tells: see :func:`inspect_lock`)."""
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


@dataclass(frozen=True)
class LockCheck:
    """What a lock file says now: its holder (None: empty or unreadable file), the age of its
    heartbeat, whether it is live, and why (one phrase)."""

    holder: Optional[LockInfo]
    age_s: float
    live: bool
    why: str

    def describe(self) -> str:
        who = self.holder.describe() if self.holder else "no holder recorded"
        return f"{who} ({self.why})"


def _fmt_age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def inspect_lock(path: Path, stale_s: Optional[float] = None) -> Optional[LockCheck]:
    """The state of the lock file ``path`` (None if there is none): live, or stale because its
    heartbeat is older than ``stale_s`` (default :func:`stale_limit`) or its holder's pid is gone
    on this host. A SuiteError when ``path`` is a folder, a symbolic link or a special file: no
    runner writes one, and no command removes what it did not write."""
    what = not_regular(path, follow=False)
    if what is not None:
        raise SuiteError(f"{path}: is {what}, not a lock file (a job lock is a small JSON file); "
                         "move it away, then re-run")
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    limit = stale_limit() if stale_s is None else stale_s
    age = max(0.0, time.time() - mtime)
    holder = read_lock(path)
    if holder is None:
        if age < EMPTY_LOCK_GRACE_S:
            return LockCheck(None, age, True, "lock being written")
        return LockCheck(None, age, False, f"empty or unreadable for {_fmt_age(age)}")
    if age > limit:
        return LockCheck(holder, age, False, f"heartbeat {_fmt_age(age)} old, stale after {_fmt_age(limit)}")
    if not is_alive(holder):
        return LockCheck(holder, age, False, f"pid {holder.pid} is gone on this host")
    return LockCheck(holder, age, True, f"heartbeat {_fmt_age(age)} ago")


def break_lock(path: Path, seen: Optional[LockInfo]) -> bool:
    """Remove the lock ``path`` if it still holds ``seen`` (the holder judged stale, or None for an
    empty file), without clobbering a lock another process took meanwhile. True if removed."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # someone else broke it first
    if read_lock(aside) == seen:
        aside.unlink(missing_ok=True)
        return True
    # we moved a lock that was re-taken in between: put it back unless a newer one exists
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    aside.unlink(missing_ok=True)
    return False


class _Renewer:
    """One daemon thread per process that renews the heartbeat of every lock the process holds, at
    least every ``period`` seconds (the shortest of the held locks'); it starts with the first
    held lock and ends when none is left."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._locks: dict[JobLock, float] = {}
        self._thread: Optional[threading.Thread] = None

    def add(self, lock: "JobLock", period: float) -> None:
        with self._cond:
            self._locks[lock] = period
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lock-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, lock: "JobLock") -> None:
        with self._cond:
            self._locks.pop(lock, None)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._locks:
                    self._thread = None
                    return
                self._cond.wait(min(self._locks.values()))  # woken early by add / discard: renews early
                held = list(self._locks)
            for lock in held:
                lock.renew()


_RENEWER = _Renewer()


class JobLock:
    """``with``-free lock object: ``acquire()`` then ``release()`` in a ``finally``. While held,
    its heartbeat is renewed by this process (see the module docstring)."""

    def __init__(self, path: Path | str, stale_s: Optional[float] = None) -> None:
        self.path = Path(path)
        self.stale_s = stale_s
        self.held = False
        self.lost = False  # another process broke it while we held it (we were judged stale)
        self._info: Optional[LockInfo] = None

    def acquire(self) -> Optional[LockInfo]:
        """Take the lock. Returns None on success, else the live holder (lock not taken)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        period = renew_period()
        check: Optional[LockCheck] = None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                check = inspect_lock(self.path, self.stale_s)
                if check is None:
                    continue  # released in between
                if check.live:
                    return check.holder or LockInfo(pid=0, host="?", started="(lock being written)")
                break_lock(self.path, check.holder)
                continue
            info = this_holder()
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(info), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._info, self.held, self.lost = info, True, False
            _RENEWER.add(self, period)
            return None
        return (check.holder if check else None) or LockInfo(pid=0, host="?", started="(lock contended)")

    def renew(self) -> bool:
        """Refresh the heartbeat if the file is still ours; False (and ``lost``) if it is not."""
        if not self.held or self.lost:
            return False
        if read_lock(self.path) != self._info:
            self.lost = True
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True

    def release(self) -> None:
        """Remove the lock file if it is still ours (a lock re-taken by another process after ours
        was broken is left alone)."""
        if self.held:
            _RENEWER.discard(self)
            if read_lock(self.path) == self._info:
                self.path.unlink(missing_ok=True)
            self.held = False
