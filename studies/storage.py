"""Optuna storage from a URL: an RDB (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal file.

RDB storages get a heartbeat, so a trial whose worker was killed is marked FAIL once its heartbeat is older
than the grace period and is then retried by ``RetryHeartbeatStaleTrialCallback`` (the retry keeps the same params).
Journal files have no heartbeat in Optuna: a killed worker's trial stays RUNNING there (documented trade-off).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.errors import UserError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

RDB_PREFIXES = ("sqlite:", "postgresql", "mysql")
JOURNAL_PREFIX = "journal:"


def make_storage(url: str, heartbeat_s: float, on_failed: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 max_retry: int = 2) -> optuna.storages.BaseStorage:
    """Storage for ``url``.

    Args:
        url: ``sqlite:///mlruns/optuna.db``, ``postgresql://user:pw@host/db``, or ``journal:path/to/study.log``
            (also any path ending in ``.log`` or ``.journal``).
        heartbeat_s: Heartbeat interval of RDB storages; the grace period is three intervals.
        on_failed: Called with each stale (killed) trial before it is retried.
        max_retry: Retries of one killed trial.

    Raises:
        UserError: an unsupported URL.
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if url.startswith(RDB_PREFIXES):
        engine_kwargs = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}  # several local workers share one file
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

        def failed(study: optuna.Study, trial: FrozenTrial) -> None:
            if on_failed is not None:
                on_failed(study, trial)
            retry(study, trial)

        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=max(1, int(heartbeat_s)),
                                          grace_period=max(3, int(3 * heartbeat_s)),
                                          heartbeat_stale_trial_callback=failed)
    path = url.removeprefix(JOURNAL_PREFIX) if url.startswith(JOURNAL_PREFIX) else url
    if url.startswith(JOURNAL_PREFIX) or path.endswith((".log", ".journal")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    raise UserError(f"study.storage={url!r} is not supported: use sqlite:///path.db, postgresql://user:pw@host/db, "
                    "mysql://..., or journal:path/to/study.log")
