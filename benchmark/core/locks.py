"""The cache lock: one ``flock`` file per key directory, exclusive or shared.

A lone writer, and a shard while it finishes, hold it exclusively; the shards of one sharded extraction share it
while they write their chunks.

``flock`` locks belong to the open file, so they vanish with a killed process: a stale lock never blocks a rerun.
Every attempt is non-blocking: a writer that cannot have the lock says who has it instead of waiting for hours.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import IO

from benchmark.core.errors import UserError

# Shards of a job array may start at the same instant; one of them holds the lock exclusively for the moment it
# takes to lay out the partial folder, so the others retry this long before giving up.
JOIN_SECONDS = 30.0


class CacheLock:
    """A non-blocking ``flock`` on ``path`` that can be taken exclusively or shared, and converted.

    Args:
        path: The lock file (created if missing; never deleted, so every process locks the same inode).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.mode: str | None = None  # "exclusive", "shared" or None

    def try_acquire(self, exclusive: bool) -> bool:
        """Take (or convert to) the lock without waiting; False when another process holds a conflicting one.

        A failed conversion may leave this process without any lock (Linux drops the old one first).
        """
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a")
        try:
            fcntl.flock(self._fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            self.mode = None
            return False
        self.mode = "exclusive" if exclusive else "shared"
        return True

    def acquire_exclusive(self) -> None:
        """Take the lock exclusively now, or raise naming the directory being written."""
        if not self.try_acquire(exclusive=True):
            raise UserError(f"another process is writing {self.path.with_suffix('')}; wait for it to finish")

    def wait_shared_or_exclusive(self) -> bool:
        """Take the lock exclusively if nobody holds it, else shared beside other shards; True when exclusive.

        Raises:
            UserError: when a lone (unsharded) writer or a finishing shard keeps it exclusively for
                ``JOIN_SECONDS``.
        """
        deadline = time.monotonic() + JOIN_SECONDS
        while True:
            if self.try_acquire(exclusive=True):
                return True
            if self.try_acquire(exclusive=False):
                return False
            if time.monotonic() > deadline:
                raise UserError(
                    f"another process is writing {self.path.with_suffix('')} on its own (not as a shard of this "
                    "extraction); wait for it to finish"
                )
            time.sleep(0.2)

    def release(self) -> None:
        """Drop the lock (a no-op when none is held)."""
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        self.mode = None
