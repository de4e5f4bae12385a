"""The connection under the store: transactions, savepoints, after-commit callbacks, storage faults.

One file, opened through apsw in WAL mode. The engine owns the single write
connection; web requests and CLI reads use read-only connections. Write
transactions begin IMMEDIATE so that a read never has to be upgraded to a
write halfway (which is where "database is locked" errors come from), and
``synchronous=FULL`` makes every committed transition survive a power cut,
not just a process crash. A storage failure (a full disk, an I/O error)
becomes ``StoreUnavailable``, counted in ``faults``; the statements
themselves live in the store's other modules, which run them through
``_exec``, ``_all`` and ``_one`` here.
"""

import contextlib
import logging
import os
import shutil
import threading

import apsw

from apsis_lite.errors import SchemaMismatch, StoreUnavailable
from apsis_lite.store.schema import MIGRATIONS

# The name the store's log lines have always carried.
log = logging.getLogger("apsis_lite.store")

# apsw errors that say the storage failed rather than the statement: a full
# disk, an I/O error, a file gone read-only or locked by another program.
# They become StoreUnavailable: the caller waits and tries again, and no run
# is judged by them.
STORAGE_FAULTS = (apsw.FullError, apsw.IOError, apsw.CantOpenError, apsw.ReadOnlyError,
                  apsw.BusyError, apsw.LockedError, apsw.CorruptError, apsw.NotADBError,
                  apsw.NoMemError, apsw.ProtocolError, apsw.PermissionsError)


def fault_words(exc, path=None):
    """What went wrong with the storage, in words for an operator; ``path``: the file
    it was about, whose disk is looked at when SQLite says only "I/O error"."""
    if isinstance(exc, apsw.FullError) or (isinstance(exc, apsw.IOError) and path and _disk_full(path)):
        return "the disk is full"
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return f"the database file is damaged ({exc})"
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return f"it is locked by another program ({exc})"
    return f"{type(exc).__name__}: {exc}"


def check_schema_version(path, version):
    """Refuse a database made by a newer apsis-lite: its schema may hold what this one would break."""
    if version > len(MIGRATIONS):
        raise SchemaMismatch(
            f"{path}: the database has schema version {version}, from a newer apsis-lite; this "
            f"apsis-lite knows schema versions up to {len(MIGRATIONS)} and will not open it "
            "(upgrade apsis-lite, or restore a backup taken before the upgrade; see docs/retention.md)")


def _disk_full(path):
    """Whether the file system holding ``path`` has (next to) no room left: SQLite reports
    a full disk met while growing its shared-memory file as a bare I/O error."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < 64 * 1024
    except OSError:
        return False


class Transactions:
    """The connection and its transactions; ``readonly`` for readers.

    The base of ``Store``: it opens the file (migrating a writer's schema),
    and every statement of the store goes through it.
    """

    def __init__(self, path, readonly=False, vfs=None, migrate=True):
        self.path = str(path)
        self.readonly = readonly
        if readonly:
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
        # ``vfs``: an SQLite VFS by name (the tests inject disk faults through one).
        self.conn = apsw.Connection(self.path, flags=flags, vfs=vfs)
        self.conn.set_busy_timeout(10_000)
        # Serializes use of this one connection among threads (waitress) or
        # greenlets; re-entrant so that a batch can wrap several writes.
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit = []
        # A reader's write is a bug, not a failure of the disk: it is not caught.
        self._storage_faults = tuple(e for e in STORAGE_FAULTS if not (readonly and e is apsw.ReadOnlyError))
        self.faults = 0         # storage failures met so far (see _fault)
        self.last_fault = None
        try:
            if not readonly:
                # A new database gives freed pages back a few at a time, without
                # stopping (see Retention.incremental_vacuum); it can only be set
                # before the first table (an older database needs 'apsis-lite vacuum').
                if self._exec("PRAGMA user_version").fetchone()[0] == 0:
                    self._exec("PRAGMA auto_vacuum=INCREMENTAL")
                self._exec("PRAGMA journal_mode=WAL")
                self._exec("PRAGMA synchronous=FULL")
                # Keep the WAL file from staying huge after a burst.
                self._exec("PRAGMA journal_size_limit=67108864")
                if migrate:
                    self._migrate()
                else:
                    self._require_current()
            else:
                self._exec("PRAGMA query_only=1")
        except BaseException:
            self.conn.close()  # a full disk at start-up is waited out: no connection may leak per try
            raise

    def _fault(self, exc):
        """The StoreUnavailable for an apsw error that says the storage failed;
        counted, so that the engine knows its memory may be ahead of the disk."""
        self.faults += 1
        self.last_fault = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"the database cannot be {'read' if self.readonly else 'written'}: "
                                f"{fault_words(exc, self.path)}")

    def _exec(self, sql, params=()):
        try:
            return self.conn.execute(sql, params)
        except self._storage_faults as exc:
            raise self._fault(exc) from exc

    def _exec_many(self, sql, rows):
        try:
            return self.conn.executemany(sql, rows)
        except self._storage_faults as exc:
            raise self._fault(exc) from exc

    def _all(self, sql, params=()):
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

    def _one(self, sql, params=()):
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchone()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

    @contextlib.contextmanager
    def write(self):
        """One IMMEDIATE write transaction; nested uses join the outer one.

        A transaction that fails, in its body or at its COMMIT, is rolled
        back whole and its after-commit callbacks are dropped: nothing is
        ever acted on that is not on disk. Storage failures (a full disk,
        an I/O error) surface as StoreUnavailable. Never yield to other
        greenlets (no network I/O) inside it.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._exec("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
                self._depth = 0
                self._exec("COMMIT")
            except BaseException as exc:
                self._depth = 0
                self._after_commit.clear()
                self._rollback()
                if isinstance(exc, self._storage_faults):
                    raise self._fault(exc) from exc
                raise
            callbacks, self._after_commit = self._after_commit, []
        for fn in callbacks:
            fn()

    def _rollback(self):
        # SQLite may already have rolled back on its own (some SQLITE_FULL and
        # I/O errors do); a ROLLBACK then would fail.
        if self.conn.getautocommit():
            return
        try:
            self.conn.execute("ROLLBACK")
        except apsw.Error as exc:
            self.faults += 1
            log.error("rolling back a failed transaction failed too: %s", exc)

    @contextlib.contextmanager
    def atomic(self):
        """A savepoint in the current write transaction (one is begun if there is none).

        If the block raises, its writes and the after-commit callbacks it
        added are undone and the exception goes on; the transaction around
        it stays usable, so one bad run or job in a batch costs only its own
        changes. A storage failure is not confined: it fails the transaction.
        """
        with self.write():
            name = f"item{self._depth}"
            self._exec(f"SAVEPOINT {name}")
            mark = len(self._after_commit)
            try:
                yield self
            except StoreUnavailable:
                raise
            except BaseException:
                del self._after_commit[mark:]
                self._exec(f"ROLLBACK TO {name}")
                self._exec(f"RELEASE {name}")
                raise
            self._exec(f"RELEASE {name}")

    def after_commit(self, fn):
        """Call ``fn`` once the current transaction has committed (now, if there is none).

        For acting on a state change only once it is durable, e.g. removing
        a run folder whose result has just been recorded. Dropped if the
        transaction (or the ``atomic`` block it was added in) rolls back.
        """
        with self._lock:
            if self._depth:
                self._after_commit.append(fn)
                return
        fn()

    def _migrate(self):
        version = self._exec("PRAGMA user_version").fetchone()[0]
        check_schema_version(self.path, version)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.write():
                self._exec(step)
                self._exec(f"PRAGMA user_version={number}")

    def _require_current(self):
        """For a second writer (the prune and archive commands): the schema must be this
        version's, for a migration is the server's to make, not a command's beside it."""
        version = self._exec("PRAGMA user_version").fetchone()[0]
        check_schema_version(self.path, version)
        if version < len(MIGRATIONS):
            raise SchemaMismatch(
                f"{self.path}: the database has schema version {version}, from an older apsis-lite; "
                f"start this apsis-lite's server once (it brings the schema to version {len(MIGRATIONS)}), "
                "then try again")

    def close(self):
        self.conn.close()

    def checkpoint(self):
        """Checkpoint and truncate the WAL so it cannot grow without bound.

        StoreUnavailable if the disk refuses it (full, say); that alone leaves
        nothing half-done, so it is not counted as a fault of the engine's writes.
        """
        with self._lock:
            try:
                return self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except self._storage_faults as exc:
                raise StoreUnavailable(f"cannot checkpoint the database: {fault_words(exc, self.path)}") from exc
