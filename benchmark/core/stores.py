"""Early checks of the places a command will write to or read from: store URIs, output folders, ports.

Every command checks its stores here before it creates or changes anything, so a typo'd scheme, a path under a
regular file or a database server that is down ends in one line naming the value and the fix, not in a
traceback after an MLflow store, an experiment or a folder was half created.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from benchmark.core.config_sections import TrackingConfig
from benchmark.core.errors import UserError

RDB_PREFIXES = ("sqlite:", "postgresql", "mysql")  # Optuna storages of a database
JOURNAL_PREFIX = "journal:"

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks")
SERVER_SCHEMES = ("postgresql", "mysql")  # databases reached over the network: checked by connecting
CONNECT_TIMEOUT_S = 5


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def check_folder_path(path: str | Path, what: str) -> None:
    """Refuse a folder path that cannot be created: it, or one of its parents, is an existing regular file.

    Args:
        path: The folder that will be created (or used).
        what: The setting it came from, named in the message (e.g. ``tracking.uri``, ``--out``).

    Raises:
        UserError: naming the file in the way.
    """
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"{what}: {path} cannot be a folder because {folder} is a file; choose another path")
            return


def check_writable(path: str | Path, what: str) -> None:
    """Refuse a folder (or the first existing parent of one to be created) where this process cannot create files.

    ``access(2)`` also reports read-only mounts and immutable folders, which stop root as well, and it writes
    nothing. Without this check SQLite retries an unwritable store for minutes before failing.

    Raises:
        UserError: naming the setting, the folder and the fix.
    """
    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"{what}: cannot write in {folder} (read-only, immutable or not yours); make it writable, or choose a "
            "folder you can write"
        )


SQLITE_HEADER = b"SQLite format 3\x00"
# A table that every store of the kind has, telling its database from another program's.
STORE_TABLES = {"tracking.uri": "experiments", "study.storage": "studies"}


def _sqlite_problem(db: Path, table: str | None) -> str | None:
    """Why the existing file ``db`` is not a usable store (None when it is, or is empty and will be set up)."""
    with db.open("rb") as fh:
        head = fh.read(100)
    if not head:
        return None
    if not head.startswith(SQLITE_HEADER):
        return "it is not a SQLite database"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and len(head) == 100 and pages * page_size > db.stat().st_size:
        return f"it is truncated ({db.stat().st_size} of {pages * page_size} bytes)"
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        return f"it is corrupt ({err})"
    if table is not None and tables and table not in tables:
        return f"it is another program's database (tables {', '.join(sorted(tables)[:5])}; no '{table}')"
    return None


def check_sqlite_url(url: str, what: str) -> None:
    """Refuse a ``sqlite:///`` URL whose database file cannot be created or written, is a folder, or is corrupt.

    Raises:
        UserError: naming the URL, the obstacle and the setting.
    """
    path = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or not path:
        raise UserError(f"{what}={url!r}: a SQLite URL looks like sqlite:///path/to/file.db")
    db = Path(path)
    if db.is_dir():
        raise UserError(f"{what}={url!r}: {db} is a folder, not a database file; name a file, e.g. {db}/store.db")
    check_folder_path(db.parent, f"{what}={url!r}")
    check_writable(db.parent, f"{what}={url!r}")
    if db.is_file():
        problem = _sqlite_problem(db, STORE_TABLES.get(what))
        if problem is not None:
            raise UserError(
                f"{what}={url!r}: {db} is not a usable store: {problem}; move it aside (the next command creates a "
                f"fresh store there) or point {what} at another file"
            )
        if not os.access(db, os.W_OK):
            raise UserError(f"{what}={url!r}: cannot write {db} (read-only or immutable); make it writable")


def check_server(url: str, what: str) -> None:
    """Connect once to a database server URL (PostgreSQL, MySQL) and disconnect; nothing is written.

    Raises:
        UserError: a malformed URL, a missing driver, or a server that refuses or does not answer.
    """
    import sqlalchemy

    shown = redact(url)
    try:
        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as err:
        raise UserError(f"{what}={shown!r} is not a usable database URL ({type(err).__name__}: {err})") from None
    try:
        with engine.connect():
            pass
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as err:
        reason = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{what}={shown!r}: cannot connect ({reason}); check that the server runs and the host, port, user, "
            "password and database are right"
        ) from None
    finally:
        engine.dispose()


def _check_http(url: str, what: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(
            f"{what}={redact(url)!r}: no tracking server answers at {parts.hostname}:{port} ({err.strerror or err}); "
            "start it or use the default sqlite:///mlruns/mlflow.db"
        ) from None


def check_tracking_uri(uri: str, must_exist: bool = False) -> None:
    """Refuse an MLflow tracking URI that MLflow would fail on, before anything is written.

    Args:
        uri: ``tracking.uri``.
        must_exist: For commands that only read (reports): a local store that does not exist yet is refused
            instead of being created empty.

    Raises:
        UserError: an unknown scheme (listing the known ones), a path that cannot be created, a server that
            cannot be reached, or (``must_exist``) a local store that does not exist.
    """
    what = "tracking.uri"
    if uri.startswith("databricks"):  # "databricks" or "databricks://profile": MLflow's own checks apply
        return
    scheme = urlsplit(uri).scheme.split("+")[0] if "://" in uri else ""
    if scheme and scheme not in TRACKING_SCHEMES:
        raise UserError(
            f"{what}={uri!r}: unknown scheme '{scheme}'; use sqlite:///path.db (the default "
            f"sqlite:///mlruns/mlflow.db), a folder, or one of {', '.join(s + '://' for s in TRACKING_SCHEMES)}"
        )
    if scheme == "sqlite":
        check_sqlite_url(uri, what)
        local: Path | None = Path(uri.removeprefix("sqlite:///"))
    elif scheme in ("", "file"):
        local = Path(uri.removeprefix("file://") if scheme else uri)
        check_folder_path(local, f"{what}={uri!r}")
        check_writable(local, f"{what}={uri!r}")
    else:
        local = None
        if scheme in SERVER_SCHEMES:
            check_server(uri, what)
        elif scheme in ("http", "https"):
            _check_http(uri, what)
    if must_exist and local is not None and not local.exists():
        raise UserError(f"{what}={uri!r}: no MLflow store at {local} (nothing tracked yet); run a study first")


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that is out of range or already in use on ``host``.

    Raises:
        UserError: naming the port and suggesting another one.
    """
    if not 0 < port < 65536:
        raise UserError(f"--port {port} is out of range: use 1-65535, e.g. --port 5000")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers bind: a port left in TIME_WAIT by an earlier server is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            why = "already in use" if err.errno == errno.EADDRINUSE else f"not available ({err.strerror})"
            raise UserError(f"port {port} on {host} is {why}; choose another with --port {port + 1}") from None


def check_tracking(tracking: TrackingConfig, must_exist: bool = False) -> None:
    """``check_tracking_uri`` plus the local artifact folder of new experiments (``tracking.artifact_root``).

    Raises:
        UserError: as ``check_tracking_uri``, or an artifact folder that cannot be created.
    """
    check_tracking_uri(tracking.uri, must_exist)
    root = tracking.artifact_root
    if "://" not in root or root.startswith("file:"):
        check_folder_path(root.removeprefix("file://"), f"tracking.artifact_root={root!r}")
        check_writable(root.removeprefix("file://"), f"tracking.artifact_root={root!r}")


def journal_path(url: str) -> str | None:
    """The file of a journal storage URL, or None for other URLs."""
    if url.startswith(JOURNAL_PREFIX):
        return url.removeprefix(JOURNAL_PREFIX)
    return url if url.endswith((".log", ".journal")) else None


def storage_file(url: str) -> str | None:
    """The local file of a SQLite or journal storage URL, or None for a database server."""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else journal_path(url)


def unsupported_storage(url: str) -> UserError:
    """The error for a ``study.storage`` URL of no supported kind."""
    return UserError(
        f"study.storage={redact(url)!r} is not supported: use sqlite:///path.db, postgresql://user:pw@host/db, "
        "mysql://..., or journal:path/to/study.log"
    )


def check_storage_url(url: str) -> None:
    """Refuse a storage URL that ``make_storage`` would fail on, before anything is created.

    Raises:
        UserError: an unsupported scheme, a database or journal path that cannot be created, or a database
            server that cannot be reached.
    """
    what = "study.storage"
    if url.startswith("sqlite:"):
        check_sqlite_url(url, what)
    elif url.startswith(RDB_PREFIXES):
        check_server(url, what)
    elif (path := journal_path(url)) is not None:
        if not path or Path(path).is_dir():
            raise UserError(f"{what}={url!r}: name a journal file, e.g. journal:mlruns/study.log")
        check_folder_path(Path(path).parent, f"{what}={url!r}")
        check_writable(Path(path).parent, f"{what}={url!r}")
    else:
        raise unsupported_storage(url)
