"""Live job reloading: notice edited, added and deleted job files and hand the engine the result.

``JobsFolder`` loads the jobs folder incrementally: it remembers each file's
stat (mtime, size, inode, ctime) and reads again only the files whose stat
changed, so a reload after one edit costs one parse, not ten thousand. A
file that fails to load keeps its job's last good version in effect (with
the error shown) until it is fixed; a job that never loaded is absent.

``JobsWatcher`` reloads when the folder changes: through inotify where the
kernel offers it (``jobs_watch: auto``), else by checking the stats every
``jobs_poll_interval``; ``reload()`` forces a reload (``apsis-lite reload``,
``POST /api/v1/jobs/reload``). It runs as a thread, which the server's
gevent monkey-patching makes a greenlet: waiting for inotify is a
cooperative ``select``.
"""

import logging
import os
import select
import threading
import time

from apsis_lite.config import DEFAULT_MIN_INTERVAL
from apsis_lite.engine.slices import Slices
from apsis_lite.errors import JobFileError, StoreUnavailable
from apsis_lite.model.calendars import load_calendars
from apsis_lite.model.jobs import Job, JobErrors, load_job_file
from apsis_lite.model.jobs.files import job_file_entries

log = logging.getLogger("apsis_lite.engine")

# A file modified this recently may be modified again within the same
# timestamp tick without its stat changing (the "racy git" problem): such
# files are read again at the next scan, whatever their stat says. A tick is
# up to 2 s on file systems that keep whole seconds (FAT keeps even seconds),
# and at most a clock tick of the kernel (10 ms) on those that keep fractions:
# a modification time with a fraction of a second says which one a file is on.
RACY_SECONDS = 2.0
RACY_SECONDS_FINE = 0.1

# After the first inotify event, wait this long for the rest of an edit
# (editors and git write several files, or one file in several steps).
SETTLE = 0.2

# A reload the database refused (a full disk) is tried again after this long.
RETRY_AFTER = 5.0

KEEPING_LAST_GOOD = "the last version of this job that loaded stays in effect until the file is fixed"

_INOTIFY_MASK_NAMES = ("CREATE", "DELETE", "MODIFY", "CLOSE_WRITE", "MOVED_FROM", "MOVED_TO",
                       "ATTRIB", "DELETE_SELF", "MOVE_SELF")


def _racy_seconds(mtime_ns):
    """How long after its modification time a file's stat may not show a further edit."""
    return RACY_SECONDS_FINE if mtime_ns % 1_000_000_000 else RACY_SECONDS


def _job_id(rel):
    return os.path.splitext(rel)[0].replace(os.sep, "/")


class JobsFolder:
    """The jobs of one folder, reloaded incrementally; see the module docstring."""

    def __init__(self, root, clock=time.time, calendars=None, min_interval=DEFAULT_MIN_INTERVAL,
                 sudo_for_user=False):
        self.root = os.fspath(root)
        self.clock = clock
        self.calendars = calendars  # resolves calendar names (calendars.load_calendars)
        self.min_interval = min_interval
        self.sudo_for_user = sudo_for_user
        self._stats = {}    # relative path -> stat key, or None to read it again next time
        self._results = {}  # relative path -> Job, or its list of JobFileError
        self._good = {}     # job id -> the last Job that loaded from its file

    def scan(self):
        """Read what changed; returns (jobs by id, errors, relative paths read again)."""
        errors, stats, dirs = [], {}, []
        pause = Slices()
        self._stat_tree(stats, dirs, errors, pause)
        now = self.clock()
        read = []
        for rel, key in sorted(stats.items()):
            if key is not None and self._stats.get(rel) == key:
                continue
            path = os.path.join(self.root, rel)
            try:
                self._results[rel] = load_job_file(path, _job_id(rel), self.calendars,
                                                   min_interval=self.min_interval,
                                                   sudo_for_user=self.sudo_for_user)
            except JobErrors as exc:
                self._results[rel] = exc.errors
            read.append(rel)
            if key is not None and now - key[0] / 1e9 < _racy_seconds(key[0]):
                stats[rel] = None
            pause()  # under gevent: let the engine start runs on time
        for rel in [r for r in self._results if r not in stats]:
            del self._results[rel]
        self._stats = stats
        jobs, seen = {}, {}
        for rel in sorted(stats):
            job_id, path = _job_id(rel), os.path.join(self.root, rel)
            if job_id in seen:
                errors.append(JobFileError(path, None, f"duplicate job id {job_id!r} (also {seen[job_id]})"))
                continue
            seen[job_id] = path
            result = self._results[rel]
            if isinstance(result, Job):
                jobs[job_id] = self._good[job_id] = result
                continue
            errors.extend(result)
            if job_id in self._good:
                jobs[job_id] = self._good[job_id]
                errors.append(JobFileError(path, None, KEEPING_LAST_GOOD))
        for job_id in [j for j in self._good if j not in seen]:
            del self._good[job_id]
        return jobs, errors, read

    def _stat_tree(self, stats, dirs, errors, pause):
        """Stat keys of the job files: the rules of ``jobs.load_jobs_dir``."""
        for rel, entry in job_file_entries(self.root, errors, dirs):
            try:
                st = entry.stat()
            except OSError:
                continue  # gone while we looked: the next scan sees it gone
            stats[rel] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
            pause()

    def directories(self):
        """Every folder a job file may be in (for watching)."""
        stats, dirs = {}, []
        self._stat_tree(stats, dirs, [], Slices())
        return dirs


class JobsWatcher:
    """Keeps the engine's jobs in line with the jobs folder."""

    def __init__(self, config, engine):
        self.config = config
        self.engine = engine
        calendars, calendar_errors = load_calendars(getattr(config, "calendars_dir", None))
        for err in calendar_errors:
            log.error("calendar file problem: %s", err)
        self.folder = JobsFolder(config.jobs_dir, calendars=calendars,
                                 min_interval=getattr(config, "min_interval", DEFAULT_MIN_INTERVAL),
                                 sudo_for_user=getattr(config, "sudo_for_user", False))
        engine.calendars = calendars
        self.mode = None  # how changes are noticed: inotify, poll or off
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = None
        self._retry_at = None  # when to try again a reload the database refused

    def reload(self):
        """Load what changed and install it; returns what changed, and every load error."""
        with self._lock:
            jobs, errors, read = self.folder.scan()
            summary = self.engine.set_jobs(jobs, errors)
        if summary["added"] or summary["changed"] or summary["removed"]:
            log.info("jobs reloaded: %d added, %d changed, %d removed; %d scheduled runs re-planned",
                     len(summary["added"]), len(summary["changed"]), len(summary["removed"]),
                     summary["skipped_runs"])
        new_errors = [e for e in errors if os.path.relpath(e.path, self.folder.root) in read]
        for err in new_errors:
            log.error("job file problem: %s", err)
        return {**summary, "jobs": len(jobs), "errors": [e.to_jso() for e in errors]}

    def start(self):
        """Watch the folder in the background (per ``jobs_watch``).

        The watch is in place when this returns, and the folder is scanned
        once more right after, so no edit made since the first load is missed.
        """
        if self.config.jobs_watch == "off":
            self.mode = "off"
            return
        inotify = None
        if self.config.jobs_watch == "auto":
            try:
                inotify = self._open_inotify()
            except Exception as exc:  # no inotify here (another OS, or out of watches)
                log.warning("cannot watch %s with inotify (%s); checking it every %g s instead",
                            self.folder.root, exc, self.config.jobs_poll_interval)
        self.mode = "inotify" if inotify is not None else "poll"
        self._thread = threading.Thread(target=self._watch, args=(inotify,), name="jobs watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()

    def _watch(self, inotify):
        self._reload_logged()
        if inotify is not None:
            log.info("watching %s for job file changes (inotify)", self.folder.root)
            with inotify:
                if self._watch_inotify(inotify):
                    return
            log.warning("lost the inotify watch on %s; checking it every %g s instead",
                        self.folder.root, self.config.jobs_poll_interval)
            self.mode = "poll"
        else:
            log.info("checking %s for job file changes every %g s", self.folder.root,
                     self.config.jobs_poll_interval)
        while not self._stopping.wait(self.config.jobs_poll_interval):
            self._reload_logged()

    def _reload_logged(self):
        self._retry_at = None
        try:
            self.reload()
        except StoreUnavailable as exc:  # a full disk: the engine kept its jobs; try again soon
            log.warning("reloading jobs from %s: %s; trying again in %g s", self.folder.root, exc, RETRY_AFTER)
            self._retry_at = time.monotonic() + RETRY_AFTER
        except Exception:  # a reload that failed is tried again on the next change
            log.exception("reloading jobs from %s failed", self.folder.root)

    def _open_inotify(self):
        from inotify_simple import INotify, flags

        self._flags = flags
        self._mask = 0
        for name in _INOTIFY_MASK_NAMES:
            self._mask |= getattr(flags, name)
        inotify = INotify(nonblocking=True)
        self._watched = set()
        try:
            self._add_watches(inotify)
        except Exception:
            inotify.close()
            raise
        return inotify

    def _add_watches(self, inotify):
        for path in self.folder.directories():
            if path not in self._watched:
                inotify.add_watch(path, self._mask)
                self._watched.add(path)

    def _watch_inotify(self, inotify):
        """Reload on each change until stopped (True) or until no folder is watched any more (False)."""
        fd = inotify.fileno()
        while not self._stopping.is_set():
            # select is cooperative under gevent; the timeout notices stop().
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._reload_logged()
                continue
            time.sleep(SETTLE)
            events = inotify.read(timeout=0)
            if any(e.mask & (self._flags.ISDIR | self._flags.DELETE_SELF | self._flags.MOVE_SELF
                             | self._flags.Q_OVERFLOW | self._flags.IGNORED) for e in events):
                # A folder came or went: watch what exists now (the kernel
                # drops the watches of folders that are gone).
                self._watched = set()
                try:
                    self._add_watches(inotify)
                except OSError as exc:
                    log.warning("cannot watch every folder under %s: %s", self.folder.root, exc)
            self._reload_logged()
            if not self._watched:  # the jobs folder itself is gone
                return False
        return True
