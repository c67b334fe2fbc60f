"""Faults of the machine rather than of the code: a full disk, a folder we may not write, a dead process's leftovers.

``fault_line`` turns such an error (also when a library wrapped it, e.g. SQLAlchemy around SQLite) into the one
line the CLI prints; anything else is a bug and keeps its traceback. ``pid_alive`` and ``remove_stale`` let a
later command clean what a killed one left (``.tmp-<pid>`` folders and files), never what a live one writes.
``interrupt_on_sigterm`` makes SIGTERM stop a command the way Ctrl-C does, closing what it opened.
"""

from __future__ import annotations

import _thread
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)
MOVE_ASIDE = "move the file aside (the next command creates a fresh store there) or point the setting elsewhere"
# SQLite's own words for the same faults, and for a database file that is not one: what it means, and the fix.
SQLITE_FAULTS = {
    "database or disk is full": ("no space left for the database", "free some space"),
    "attempt to write a readonly database": ("the database is read-only", "make it and its folder writable"),
    "unable to open database file": ("the database file cannot be opened or created", "check its path and folder"),
    "database disk image is malformed": ("the database file is corrupt (truncated or overwritten)", MOVE_ASIDE),
    "file is not a database": ("the file is not a SQLite database", MOVE_ASIDE),
}
HOST = socket.gethostname()


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "orig", None)
    return seen


def fault_line(err: BaseException) -> str | None:
    """One line naming the fault behind ``err`` and the fix, or None when ``err`` is not a fault of the machine."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return f"no space left on the device of {e.filename or 'a file being written'}: {RERUN_AFTER_SPACE}"
        if isinstance(e, OSError) and e.errno in NO_WRITE:
            where = e.filename or "a file"
            return (
                f"cannot write {where} ({e.strerror}): the folder is read-only, immutable or not yours; make it "
                "writable or point the setting (paths.cache_dir, tracking.uri, --out, ...) at another folder, then "
                "rerun the same command"
            )
        text = str(e).lower()
        for needle, (what, fix) in SQLITE_FAULTS.items():
            if needle in text and type(e).__module__.split(".")[0] in ("sqlite3", "sqlalchemy", "mlflow", "optuna"):
                return f"{what} ({needle}; tracking.uri or study.storage): {fix}, then rerun the same command"
    return None


RERUN_AFTER_SPACE = (
    "free some space (or point the setting at another disk) and rerun the same command; work already finished is "
    "kept and resumed"
)


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_pid(name: str, marker: str = ".tmp-") -> bool:
    """True when ``name`` ends in ``<marker><pid>`` and that process is gone (on this machine)."""
    head, sep, tail = name.rpartition(marker)
    return bool(sep) and bool(head) and tail.isdigit() and int(tail) != os.getpid() and not pid_alive(int(tail))


def remove_stale(folder: Path, pattern: str = "*.tmp-*") -> list[Path]:
    """Delete the entries of ``folder`` matching ``pattern`` whose ``.tmp-<pid>`` process is dead; return them.

    A folder that cannot be listed or an entry that cannot be deleted is left (the command does not need it).
    """
    removed = []
    try:
        candidates = sorted(folder.glob(pattern))
    except OSError:
        return []
    for path in candidates:
        if not stale_pid(path.name):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
        log.info("removed %s, left by a killed process", path)
    return removed


def free_bytes(path: Path) -> int | None:
    """Bytes free for this user on the file system of ``path`` (its first existing parent), or None if unknown."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                st = os.statvfs(folder)
            except OSError:
                return None
            return st.f_bavail * st.f_frsize
    return None


def human(n: float) -> str:
    """``n`` bytes as ``12.3 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether ``err`` is an interrupt (Ctrl-C, SIGTERM) or was raised while one was handled.

    A signal lands anywhere: raised inside a library's clean-up (``torch.func.vmap`` restoring its layer stack), the
    interrupt comes back as that library's error, with the ``KeyboardInterrupt`` as its context.
    """
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _unraisable(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``sys.unraisablehook`` that re-raises an interrupt which landed in a place that cannot raise.

    A signal's ``KeyboardInterrupt`` raised while Python runs a garbage-collector or weakref callback (SQLAlchemy
    has many) is printed as "Exception ignored" and lost: the command would go on. Re-signalling the main thread
    raises it again at the next ordinary line.
    """

    def rehook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            signum = signal.SIGTERM if "SIGTERM" in str(unraisable.exc_value) else signal.SIGINT
            # From another thread, a moment later: the main thread has left the callback by then.
            threading.Timer(0.05, _thread.interrupt_main, args=(signum,)).start()
            return
        hook(unraisable)

    return rehook


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's stop) raises ``KeyboardInterrupt`` as Ctrl-C does.

    So a terminated command closes its MLflow runs (KILLED) and releases its locks, exactly as an interrupted one;
    an interrupt that lands in a callback which cannot raise is raised again. A no-op outside the main thread,
    where signal handlers cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, hook = signal.signal(signal.SIGTERM, _interrupt), sys.unraisablehook
    sys.unraisablehook = _unraisable(hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        sys.unraisablehook = hook
