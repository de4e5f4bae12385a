"""Whole-file care of a database: an online backup, a check, and the one-time VACUUM.

``backup`` copies a live database with SQLite's online backup in one step:
one read transaction, so the copy is the database as of one instant, and in
WAL mode the server's writes go on meanwhile. The copy is written beside the
target under another name, checked (``PRAGMA integrity_check``), synced and
only then renamed into place: a failed backup (a full disk) leaves no file
that looks like a backup.
"""

import os

import apsw

from apsis_lite.errors import SchemaMismatch, StoreUnavailable
from apsis_lite.store.schema import MIGRATIONS
from apsis_lite.store.transactions import STORAGE_FAULTS, check_schema_version, fault_words

# check_db's verdicts, which the check-db command returns as its exit status.
OK, DAMAGED, MISSING, TOO_NEW, UNREADABLE = 0, 1, 2, 3, 4


def backup(source_path, target_path) -> dict:
    """A checked copy of the database at ``source_path`` in ``target_path``; what was copied.

    StoreUnavailable, naming the cause, if it cannot be made; nothing is left at
    ``target_path`` then (an older file there stays as it was).
    """
    if not os.path.exists(source_path):
        raise StoreUnavailable(f"no database at {source_path}")
    partial = f"{target_path}.partial"
    _remove(partial)
    try:
        src = apsw.Connection(str(source_path), flags=apsw.SQLITE_OPEN_READONLY)
        src.set_busy_timeout(10_000)
        try:
            dst = apsw.Connection(partial)
            try:
                with dst.backup("main", src, "main") as copy:
                    copy.step(-1)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                problems = [r[0] for r in dst.execute("PRAGMA integrity_check")]
                pages = dst.execute("PRAGMA page_count").fetchone()[0]
                version = dst.execute("PRAGMA user_version").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        if problems != ["ok"]:
            raise StoreUnavailable(f"the copy failed its integrity check: {'; '.join(problems[:5])}")
        _fsync(partial)
        os.replace(partial, target_path)
        _fsync(os.path.dirname(os.path.abspath(target_path)))
    except STORAGE_FAULTS as exc:
        _remove(partial)
        raise StoreUnavailable(f"cannot back up to {target_path}: {fault_words(exc, target_path)}") from None
    except OSError as exc:
        _remove(partial)
        raise StoreUnavailable(f"cannot back up to {target_path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(partial)
        raise
    return {"path": str(target_path), "bytes": os.path.getsize(target_path), "pages": pages,
            "schema_version": version}


def check_db(path) -> tuple:
    """(verdict, lines): whether the database at ``path`` is whole and usable by this
    apsis-lite, and what was found, a line each. Opens it read-only: nothing is changed."""
    if not os.path.isfile(path):
        return MISSING, [f"no database file at {path}"]
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return MISSING, [f"cannot open {path}: {fault_words(exc)}"]
    try:
        return _check(conn, path)
    except (apsw.NotADBError, apsw.CorruptError) as exc:
        return DAMAGED, [f"{path}: not a database, or damaged ({exc})"]
    except apsw.Error as exc:
        # A full disk, a lock, a permission: the file could not be looked at, which
        # says nothing about whether it is whole.
        return UNREADABLE, [f"{path}: cannot be checked now: {fault_words(exc, path)}"]
    finally:
        conn.close()


def _check(conn, path):
    conn.set_busy_timeout(10_000)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    if version == 0 or "runs" not in tables:
        return DAMAGED, [f"{path}: an SQLite file, but not an apsis-lite database (no schema)"]
    lines = []
    try:
        check_schema_version(path, version)
    except SchemaMismatch as exc:
        return TOO_NEW, [str(exc)]
    if version < len(MIGRATIONS):
        lines.append(f"schema version {version}: older; this apsis-lite's server brings it to version "
                     f"{len(MIGRATIONS)} when it next starts (take a backup first)")
    else:
        lines.append(f"schema version {version}: this apsis-lite's")
    problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        return DAMAGED, lines + ["integrity check failed:"] + [f"  {p}" for p in problems[:20]]
    lines.append("integrity check: ok")
    archive = "meta" in tables and conn.execute("SELECT value FROM meta WHERE key='archive'").fetchone()
    counts = dict(conn.execute("SELECT state, n FROM run_counts WHERE n > 0")) if "run_counts" in tables else {}
    lines.append(f"{'an archive file; ' if archive else ''}runs: {sum(counts.values())}"
                 + (f" ({', '.join(f'{s} {n}' for s, n in sorted(counts.items()))})" if counts else ""))
    pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                         for p in ("page_count", "freelist_count", "page_size"))
    mode = {0: "none", 1: "full", 2: "incremental"}.get(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    lines.append(f"size: {pages * size} bytes, of which free: {free * size}; auto_vacuum: {mode}")
    if mode != "incremental" and not archive:
        lines.append("note: free space is reused but not given back to the file system while the server "
                     "runs; stop the server once and run 'apsis-lite vacuum' to change that")
    return OK, lines


def vacuum(path) -> dict:
    """Rewrite the database whole with incremental auto_vacuum (the server must be stopped).

    Needs free disk space about the size of the database; on a full disk
    SQLite gives up and the database stays as it was.
    """
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        raise StoreUnavailable(f"cannot open {path}: {fault_words(exc, path)}") from None
    try:
        before = os.path.getsize(path)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"before": before, "after": os.path.getsize(path)}
    except STORAGE_FAULTS as exc:
        raise StoreUnavailable(f"cannot vacuum {path}: {fault_words(exc, path)}; the database is as it was") from None
    finally:
        conn.close()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    for p in (path, f"{path}-journal", f"{path}-wal", f"{path}-shm"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def open_archive(path):
    """A read-only ``Store`` on an archive file (or any apsis-lite database), its schema checked.

    StoreUnavailable if it is missing, not a database, or from a newer apsis-lite.
    """
    from apsis_lite.store.database import Store
    if not os.path.isfile(path):
        raise StoreUnavailable(f"no archive file {path}")
    try:
        store = Store(path, readonly=True)
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"cannot read {path}: {exc}") from None
    try:
        version = store._one("PRAGMA user_version")[0]
        check_schema_version(path, version)
        if not store._one("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='runs'")[0]:
            raise StoreUnavailable(f"{path} is not an apsis-lite archive (no runs table)")
    except BaseException:
        store.close()
        raise
    return store
