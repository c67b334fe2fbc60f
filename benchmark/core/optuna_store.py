"""Optuna storage from a URL (an RDB or a journal file), trial heartbeats, and the study lock.

Heartbeats: RDB storages (SQLite, PostgreSQL, MySQL) use Optuna's own. Optuna has none for journal files, so
``HeartbeatJournalStorage`` adds it: the heartbeat is a trial system attribute written every interval (its
clock is the writer's, so the hosts sharing a journal file need synchronised clocks). Either way a RUNNING
trial silent for the grace period (three intervals) is failed by ``optuna.storages.fail_stale_trials``.

``StudyLock`` serialises the decisions that workers and hosts sharing a storage must not take twice: opening
it (a fresh database's tables), a study's set-up (fingerprint, parent MLflow run, best layers) and "start one
more trial?", whose count and the ``ask`` that creates the trial happen under the lock, so a study ends with
exactly its target. It is a file lock beside a SQLite database or journal file (their workers share one file
system) and a server-side advisory lock for PostgreSQL and MySQL (released by the server when a killed
worker's connection drops).
"""

from __future__ import annotations

import fcntl
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the interface fail_stale_trials and optimize() check for
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from benchmark.core.stores import RDB_PREFIXES, journal_path, storage_file, unsupported_storage

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "layerfuse:heartbeat"  # journal trials: unix time of the last heartbeat
LOCK_KEY = zlib.crc32(b"layerfuse")  # PostgreSQL advisory lock id (per database)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal-file storage with trial heartbeats (Optuna's journal storage has none).

    Args:
        backend: The journal file.
        heartbeat_interval: Seconds between heartbeats.
        grace_period: Seconds of silence after which a RUNNING trial is stale.
        on_stale: Called with each trial ``fail_stale_trials`` has just failed.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int,
        grace_period: int,
        on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period, self.on_stale = heartbeat_interval, grace_period, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        """Stamp the trial with the current time."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # A trial killed before its first beat is judged by its start time.
            beat = t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp() if t.datetime_start else None)
            if beat is not None and now - beat > self.grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats."""
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """The callback for trials found stale."""
        return self.on_stale


def make_storage(
    url: str, heartbeat_s: float, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> optuna.storages.BaseStorage:
    """Storage for ``url``, with heartbeats.

    Args:
        url: ``sqlite:///mlruns/optuna.db``, ``postgresql://user:pw@host/db``, ``mysql://...``, or
            ``journal:path/to/study.log`` (also any path ending in ``.log`` or ``.journal``).
        heartbeat_s: Heartbeat interval; the grace period is three intervals.
        on_stale: Called with each stale (killed) trial once it is marked FAIL (``retry_failed`` retries it).

    Raises:
        UserError: an unsupported URL.
    """
    interval = max(1, int(heartbeat_s))
    grace = max(3, int(3 * heartbeat_s))
    if url.startswith(RDB_PREFIXES):
        engine_kwargs = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}  # several local workers share one file
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=on_stale,
        )
    path = journal_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(path), interval, grace, on_stale)
    raise unsupported_storage(url)


class StudyLock:
    """An inter-process lock on a study storage, shared by every worker and host using it.

    ``release`` may be called inside the ``with`` block (the runner releases it as a trial starts);
    leaving the block releases it only if still held. Taken before the storage is first opened, it also
    keeps two processes from creating the tables of a fresh database at once (Optuna and MLflow both fail
    then).

    Args:
        url: The storage URL.
    """

    def __init__(self, url: str) -> None:
        self.held = False
        self._file: Any = None
        self._conn: Any = None
        self._mysql = url.startswith("mysql")
        path = storage_file(url)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Not "<path>.lock": Optuna's journal backend owns that name (a symlink lock it removes when stale).
            self._file = Path(f"{path}.study-lock").open("a")  # noqa: SIM115 - kept open for the lock's lifetime
        elif url.startswith(("postgresql", "mysql")):
            import sqlalchemy

            self._conn = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool).connect()

    def _sql(self, mysql: str, postgres: str) -> None:
        import sqlalchemy

        statement, value = (mysql, "layerfuse") if self._mysql else (postgres, LOCK_KEY)
        self._conn.execute(sqlalchemy.text(statement), {"v": value})
        self._conn.commit()  # session-level locks outlive the transaction; do not sit idle in one

    def acquire(self) -> None:
        """Block until this process holds the lock."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._conn is not None:
            self._sql("SELECT GET_LOCK(:v, -1)", "SELECT pg_advisory_lock(:v)")
        self.held = True

    def release(self) -> None:
        """Let the next process in."""
        if not self.held:
            return
        self.held = False
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        elif self._conn is not None:
            self._sql("SELECT RELEASE_LOCK(:v)", "SELECT pg_advisory_unlock(:v)")

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
