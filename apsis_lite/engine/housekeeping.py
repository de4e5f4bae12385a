"""Retention: old finished runs and their output removed or archived, and the space given back.

One pass (``prune``) walks the runs older than the cutoff from the oldest, a
page at a time; each page costs one short write transaction and is preceded
by ``between()``, where the server's greenlet sleeps so that the engine runs
and stands aside while a start is due (a start is never held up by more than
one batch). In the server, the batches' reads and writes go through a
connection of retention's own, in a worker thread (``InThread``): a batch
reads pages of a large file from disk and its commit waits for an fsync,
and apsw lets go of the interpreter meanwhile, so the event loop runs on
instead of waiting with it. The same pass serves the
server's background task (``RetentionTask``), the ``prune`` and ``archive``
commands, and the in-server program types in ``housekeeping_programs``.
"""

import logging
import os
import re
import time
from dataclasses import dataclass, field

from apsis_lite.errors import StoreUnavailable
from apsis_lite.store.retention import OUTPUT_FLOOR_KEY, Protected
from apsis_lite.timeutil import format_duration

log = logging.getLogger("apsis_lite.engine")

#: Runs read and judged per batch; a batch's write takes a few milliseconds.
BATCH = 200
#: How long before a due start the background task stops starting batches (seconds):
#: at least this, or twice the slowest recent batch (a commit's fsync can take
#: a few hundred ms on a busy disk), at most STAND_ASIDE_MAX.
STAND_ASIDE = 0.25
STAND_ASIDE_MAX = 1.0
#: Free pages given back per step of the incremental vacuum (1 MiB of 4 KiB pages:
#: about 8 ms a step on the development VM, where 4 MiB took 50).
VACUUM_STEP = 256
_ARCHIVE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}\.db")
#: The earliest key of the time index.
_START = (-1e300, 0)


@dataclass(frozen=True)
class Policy:
    """What a pass removes: runs finished longer ago than ``runs_older_than`` and output of
    runs finished longer ago than ``output_older_than`` (None: kept), sparing each job's
    ``keep_per_job`` latest finished runs; runs go to ``archive_dir`` instead when given."""

    runs_older_than: float | None = None
    output_older_than: float | None = None
    keep_per_job: int = 0
    archive_dir: str | None = None
    archive_file: str | None = None  # one file for every period, instead of one per month
    batch: int = BATCH
    max_runs: int | None = None  # stop after this many runs in one pass

    @classmethod
    def from_config(cls, config):
        return cls(runs_older_than=config.runs_retention, output_older_than=config.output_retention,
                   keep_per_job=config.runs_kept_per_job,
                   archive_dir=archive_dir(config.data_dir) if config.retention_archive else None,
                   batch=config.retention_batch)

    @property
    def archives(self):
        return bool(self.archive_dir or self.archive_file)


@dataclass
class Tally:
    """What a pass did (or, dry, would do)."""

    runs: int = 0
    outputs: int = 0
    output_bytes: int = 0
    kept: int = 0
    pages_freed: int = 0
    archives: set = field(default_factory=set)

    def describe(self, dry_run=False, archived=False):
        verb = ("would archive" if dry_run else "archived") if archived else ("would remove" if dry_run else "removed")
        text = f"{verb} {_runs(self.runs)}"
        if self.outputs:
            text += f"; {'would remove' if dry_run else 'removed'} the output of {_runs(self.outputs)} more"
        text += f" ({self.output_bytes} bytes of output)"
        if self.kept:
            text += f"; kept {_runs(self.kept)} old enough but unfinished, pending or among their job's latest"
        if self.pages_freed:
            text += f"; gave back {self.pages_freed} free pages"
        return text

    def to_jso(self):
        return {"runs": self.runs, "outputs": self.outputs, "output_bytes": self.output_bytes,
                "kept": self.kept, "pages_freed": self.pages_freed, "archives": sorted(self.archives)}


def _runs(n):
    return f"{n} run{'s' * (n != 1)}"


def archive_dir(data_dir):
    """Where archive files go: ``DATA/archive``."""
    return os.path.join(data_dir, "archive")


def archive_file_name(name) -> str:
    """``name`` if it can name a file in the archive folder: no folder, no hidden file."""
    if not isinstance(name, str) or not _ARCHIVE_NAME.fullmatch(name):
        raise ValueError(f"not an archive file name: {name!r} (a name such as runs-2026-11.db: "
                         "letters, digits, '.', '_' and '-', ending in .db, no folder)")
    return name


def archive_name(time_schedule) -> str:
    """The archive file of a run scheduled at ``time_schedule``: one per UTC month."""
    return time.strftime("runs-%Y-%m.db", time.gmtime(time_schedule))


def prune(store, policy, now, *, dry_run=False, between=lambda: None, stopping=lambda: False) -> Tally:
    """One pass of ``policy`` over ``store`` as of ``now``; ``between()`` before every batch.

    StoreUnavailable (a full disk) ends the pass: what was done is committed,
    the batch it met is rolled back whole.
    """
    tally = Tally()
    if policy.runs_older_than is not None:
        _runs_pass(store, policy, now - policy.runs_older_than, tally, dry_run, between, stopping)
    if policy.output_older_than is not None and not stopping():
        _outputs_pass(store, policy, now, tally, dry_run, between, stopping)
    return tally


def _runs_pass(store, policy, cutoff, tally, dry_run, between, stopping):
    after, thresholds = _START, {}
    while not stopping() and (policy.max_runs is None or tally.runs < policy.max_runs):
        between()
        page = store.old_runs(cutoff, after, policy.batch)
        if not page:
            return
        after = (page[-1].time_schedule, page[-1].run_id)
        protected = Protected(store, policy.keep_per_job, thresholds)
        doomed = [c for c in page if c.time_updated < cutoff and not protected.keeps(c)]
        if policy.max_runs is not None:
            doomed = doomed[:policy.max_runs - tally.runs]
        tally.kept += len(page) - len(doomed)
        if doomed:
            ids = [c.run_id for c in doomed]
            tally.output_bytes += sum(store.output_sizes(ids).values())
            if not dry_run:
                if policy.archives:
                    _archive(store, policy, doomed, tally)
                store.remove_runs(ids)
            tally.runs += len(ids)


def _archive(store, policy, doomed, tally):
    by_file = {}
    for c in doomed:
        path = policy.archive_file or os.path.join(policy.archive_dir, archive_name(c.time_schedule))
        by_file.setdefault(path, []).append(c.run_id)
    for path, ids in by_file.items():
        store.copy_to_archive(ids, path)
        tally.archives.add(path)


def _outputs_pass(store, policy, now, tally, dry_run, between, stopping):
    cutoff = now - policy.output_older_than
    # Below the floor every output that could go has gone: a pass starts there,
    # not at the oldest run, so that it does not read years of runs each time.
    floor = float(store.get_meta(OUTPUT_FLOOR_KEY) or _START[0])
    after, lowest_kept, thresholds = (floor, 0), None, {}
    while True:
        if stopping():
            return
        between()
        page = store.old_runs(cutoff, after, policy.batch)
        if not page:
            break
        after = (page[-1].time_schedule, page[-1].run_id)
        sizes = store.output_sizes(c.run_id for c in page)
        protected = Protected(store, policy.keep_per_job, thresholds)
        doomed = []
        for c in page:
            if c.run_id not in sizes:
                continue
            if c.time_updated < cutoff and not protected.keeps(c):
                doomed.append(c.run_id)
            elif lowest_kept is None:
                lowest_kept = c.time_schedule
        if doomed:
            if not dry_run:
                store.remove_outputs(doomed, now)
            tally.outputs += len(doomed)
            tally.output_bytes += sum(sizes[i] for i in doomed)
    if not dry_run:
        store.set_meta(OUTPUT_FLOOR_KEY, repr(min(cutoff, lowest_kept if lowest_kept is not None else cutoff)))


def give_back_space(store, *, between=lambda: None, stopping=lambda: False, step=VACUUM_STEP) -> int:
    """Return free pages to the file system a step at a time (incremental auto_vacuum); pages freed."""
    space = store.space()
    if space["auto_vacuum"] != "incremental":
        return 0
    freed, left = 0, space["free_pages"]
    while left > 0 and not stopping():
        between()
        store.incremental_vacuum(min(step, left))
        now_free = store.space()["free_pages"]
        if now_free >= left:
            break
        freed += left - now_free
        left = now_free
    return freed


class InThread:
    """``store``'s methods, each called in one worker thread while the calling greenlet waits.

    For a store of retention's own (a second writer connection, as the
    ``prune`` command opens beside a server): SQLite serializes its writes
    with the engine's, and nothing else uses this connection.
    """

    def __init__(self, store):
        import gevent.threadpool
        self._store = store
        self._pool = gevent.threadpool.ThreadPool(1)

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kw):
            ok, value = self._pool.apply(_outcome, (attr, args, kw))
            if not ok:
                raise value  # here, where the caller handles it (the pool would print it as well)
            return value
        return call

    def close(self):
        """Wait for a call under way, then close the connection."""
        self._pool.join()
        self._pool.kill()
        self._store.close()


def _outcome(fn, args, kw):
    """In the worker thread: (True, what ``fn`` returned) or (False, what it raised)."""
    try:
        return True, fn(*args, **kw)
    except Exception as exc:
        return False, exc


class RetentionTask:
    """The server's background retention: a pass every ``interval`` seconds, in a greenlet.

    Between batches it sleeps ``pause``, and stands aside while a start is due
    within ``STAND_ASIDE`` seconds, or twice its slowest recent batch
    (``next_start()``: the engine's next due start), so that a batch's commit
    (an fsync) does not sit in front of a start.
    """

    def __init__(self, store, policy, interval, pause=0.01, clock=time.time, next_start=None):
        self.store = store
        self.policy = policy
        self.interval = interval
        self.pause = pause
        self.clock = clock
        self.next_start = next_start
        self._slowest = 0.0  # the slowest recent batch (seconds), decaying
        self._batch_began = None
        self.last = None  # the Tally of the last pass
        self._greenlet = None
        self._stopping = False

    def start(self):
        import gevent
        self._greenlet = gevent.spawn(self._loop)

    def stop(self):
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
        if isinstance(self.store, InThread):
            self.store.close()

    def _between(self):
        import gevent
        if self._batch_began is not None:
            self._slowest = max(time.monotonic() - self._batch_began, self._slowest * 0.9)
        gevent.sleep(self.pause)
        if self.next_start is not None:
            aside = min(STAND_ASIDE_MAX, max(STAND_ASIDE, 2 * self._slowest))
            # Bounded: starts due back to back must not hold retention off for ever.
            for _ in range(20):
                ahead = self.next_start() - self.clock()
                if not -1.0 < ahead < aside:
                    break
                gevent.sleep(max(ahead, 0.0) + 0.02)
        self._batch_began = time.monotonic()

    def run_once(self):
        self._batch_began = None
        pause = self._between
        stopping = lambda: self._stopping  # noqa: E731
        started = time.monotonic()
        tally = prune(self.store, self.policy, self.clock(), between=pause, stopping=stopping)
        tally.pages_freed = give_back_space(self.store, between=pause, stopping=stopping)
        self.last = tally
        if tally.runs or tally.outputs or tally.pages_freed:
            log.info("retention: %s, in %s", tally.describe(archived=self.policy.archives),
                     format_duration(time.monotonic() - started))
        return tally

    def _loop(self):
        import gevent
        gevent.sleep(min(self.interval, 5.0))  # let start-up finish first
        while not self._stopping:
            try:
                self.run_once()
            except StoreUnavailable as exc:
                log.warning("retention: stopped for now, nothing lost: %s", exc)
            except Exception:
                log.exception("retention: the pass failed; trying again in %s", format_duration(self.interval))
            gevent.sleep(self.interval)
