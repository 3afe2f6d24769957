"""Edge checks of the evaluator and analysis CLIs that a single argparse ``type=`` cannot make:
output locations (checked before anything is computed), the voxel settings, and a write that
fails, each as one stderr line.

    blocked = out_file_problem("--out_json", args.out_json)
    if blocked:
        sys.exit(fail(PROG, blocked))          # exit 2, nothing computed or written
    ...
    emit_or_fail(PROG, result, args.out_json)  # a refused write: one line, exit 1

    @interruptible(PROG, "nothing was written")  # SIGINT/SIGTERM: one line, exit 130/143
    def main(argv=None): ...

Exit status: :data:`~nepa3d.cli.args.USAGE_EXIT` (2) for a flag or a file the user gave
that cannot be used; :data:`RUN_FAILURE` (1) when a sound command fails while it runs (the disk
refuses a write); 128 + N when signal N (SIGINT, SIGTERM) stopped it (:func:`interruptible`).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from nepa3d.data.cache import file_in_the_way
from nepa3d.cli.args import fail, one_line, usage_error
from nepa3d.cli.groups import VoxelArgs
from nepa3d.utils.results import emit_result

#: Exit status of a command whose arguments were fine but whose run failed (e.g. disk full).
RUN_FAILURE = 1


def out_dir_problem(flag: str, path: str | os.PathLike) -> str | None:
    """Why folder ``path`` (the value of ``flag``) cannot hold outputs: it or one of its parents
    is a file. None when it can (or when no path was given)."""
    if not str(path):
        return None
    blocker = file_in_the_way(path)
    return None if blocker is None else f"{flag} {path}: {blocker} is a file, not a folder"


def out_file_problem(flag: str, path: str | os.PathLike) -> str | None:
    """Why file ``path`` (the value of ``flag``) cannot be written: it is a folder, or one of its
    parents is a file. None when it can (or when no path was given)."""
    if not str(path):
        return None
    if os.path.isdir(path):
        return f"{flag} {path}: is a folder, not a file"
    blocker = file_in_the_way(os.path.dirname(os.path.abspath(path)))
    return None if blocker is None else f"{flag} {path}: {blocker} is a file, not a folder"


def os_error_text(e: OSError) -> str:
    """The system's text for ``e``'s error number in lower case ("no space left on device"),
    also for ``OSError(errno.ENOSPC)`` (number in args only); else ``e`` as one line."""
    code = e.errno
    if code is None and e.args and isinstance(e.args[0], int):
        code = e.args[0]
    return os.strerror(code).lower() if code else one_line(e)


def write_failure(path: str | os.PathLike, e: OSError) -> str:
    """One line: ``<path>: cannot write (<cause>)``."""
    return f"{path}: cannot write ({os_error_text(e)})"


class WriteFailure(Exception):
    """A write of ``path`` the system refused (disk full, read-only): the message is
    :func:`write_failure`'s one line; a CLI reports it and exits :data:`RUN_FAILURE`."""

    def __init__(self, path: str | os.PathLike, e: OSError):
        self.path = str(path)
        super().__init__(write_failure(path, e))


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Within: an OSError (of writing ``path``) becomes a :class:`WriteFailure` naming it."""
    try:
        yield
    except OSError as e:
        raise WriteFailure(path, e) from e


def emit_or_fail(prog: str, result: dict, out_json: str | os.PathLike | None) -> None:
    """:func:`~nepa3d.utils.results.emit_result`; a refused write (the atomic writer leaves no
    partial file) exits :data:`RUN_FAILURE` with one line naming ``out_json``."""
    try:
        emit_result(result, out_json)
    except OSError as e:
        sys.exit(fail(prog, write_failure(out_json, e), code=RUN_FAILURE))


def check_voxel(args: VoxelArgs) -> None:
    """``--voxel_grid / --voxel_dilate / --voxel_max_steps`` of a CLI configuration as
    :class:`~nepa3d.backends.VoxelConfig` accepts them, else a usage error (one line naming the
    setting, exit 2)."""
    try:
        args.voxel_config()
    except ValueError as e:
        usage_error(str(e))


def interrupt_exit(signum: int) -> int:
    """Exit status of a command stopped by signal ``signum``: 128 + N, as a shell reports it
    (130 for SIGINT, 143 for SIGTERM; the engine counts those as interrupted, not failed)."""
    return 128 + int(signum)


def interruptible(prog: str, after: str) -> Callable:
    """Decorator of a CLI's ``main``: while it runs, SIGTERM (kill, schedulers) interrupts like
    Ctrl-C does, and an interrupt ends the command with one stderr line, ``[prog] error:
    interrupted by SIGTERM; <after>``, and :func:`interrupt_exit` instead of a traceback (or of
    a silent death that leaves temp files). The atomic writers have removed their temp files by
    then, so no partial result exists. ``after``: what the interrupted run leaves behind."""
    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(*args, **kwargs):
            got: list[int] = []

            def on_term(signum, frame):  # noqa: ARG001
                got.append(signum)
                raise KeyboardInterrupt

            previous = None
            if threading.current_thread() is threading.main_thread():
                previous = signal.signal(signal.SIGTERM, on_term)
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                signum = got[-1] if got else signal.SIGINT
                name = signal.Signals(signum).name
                sys.exit(fail(prog, f"interrupted by {name}; {after}", code=interrupt_exit(signum)))
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        return run
    return wrap
