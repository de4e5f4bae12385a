"""Starting runs: due runs become waiting, runs that may start are handed to their programs.

Every state change is committed before it is acted on: the agent is asked
to start a run only after its 'starting' has committed, and a run that
provably never started (its spec revoked) is the only one called failed to
start. No-ops finish at once; in-server programs start in the server.
"""

import dataclasses
import heapq
import logging
import math

from apsis_lite.engine.faults import disk_fault
from apsis_lite.engine.pauses import words as pause_words
from apsis_lite.hosts.groups import HostChoiceError, HostPicker
from apsis_lite.model.programs import parse_program
from apsis_lite.timeutil import format_duration, to_iso

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")

# Runs started per transaction. A batch goes in chunks that grow from
# FIRST_CHUNK, four times each, to MAX_CHUNK: each chunk's transitions and
# run folders are committed together and sent to the agent at once, without
# waiting for its answers, so the first programs of a thousand due together
# start after one small commit, and the agent starts each chunk while the
# next one is being committed. A commit waits for the disk (an fsync, a few
# ms and more on a busy disk), so a small batch is one chunk.
FIRST_CHUNK = 16
MAX_CHUNK = 128
# Of those, runs whose folder is still to be written (a few file operations
# each): the chunk ends at this many.
LAUNCH_CHUNK = 16


class Starter:
    """Owns the heap of due times of runs in 'scheduled' (and 'waiting', at start-up)."""

    def __init__(self, config, store, clock, launcher, guard, catalog, pauses, waiting, folders, alarms, inserver):
        self.config = config
        self.store = store
        self.clock = clock
        self.launcher = launcher
        self._guard = guard
        self._catalog = catalog
        self._pauses = pauses
        self._waiting = waiting
        self._folders = folders
        self._alarms = alarms
        self._inserver = inserver
        self._due = []          # heap of (time_schedule, run_id)
        self._hosts = HostPicker(config.host_groups, busy=store.busy_hosts)

    def reset(self):
        self._due = []

    def push_due(self, t, run_id):
        """File a run as due at ``t`` (its folder is written ahead of that)."""
        heapq.heappush(self._due, (t, run_id))
        self._folders.expect(t, run_id)

    def next_wake(self):
        return self._due[0][0] if self._due else math.inf

    def start_due(self, now):
        due = []
        while self._due and self._due[0][0] <= now:
            due.append(heapq.heappop(self._due)[1])
        if due:
            self.try_start(due, now, "starting", due=True)

    def recheck(self, run_ids, now):
        """Check again waiting runs whose wait may be over, oldest first."""
        if run_ids:
            self.try_start(run_ids, now, "starting: its conditions hold")

    def try_start(self, run_ids, now, why, due=False):
        """Start those of ``run_ids`` that are waiting and may start now; with
        ``due``, those still scheduled become waiting first.

        In growing chunks (FIRST_CHUNK to MAX_CHUNK runs, or LAUNCH_CHUNK
        whose folder is still to be written): a chunk's transitions and
        folders are one transaction, and the agent is asked for its runs as
        soon as it commits; its answers are read once the batch is sent.
        """
        size, i, sent = FIRST_CHUNK, 0, False
        while i < len(run_ids):
            taken, local = self._start_chunk(run_ids[i:i + size], now, why, due)
            i += taken
            size = min(4 * size, MAX_CHUNK)
            if local:
                self.launcher.send_starts(local)
                sent = True
        if sent:
            try:
                failures = self.launcher.start_failures()
            except Exception as exc:
                log.error("could not hear from the agent: %s; asking again shortly", exc)
                return
            self._record_failures(failures)

    def _start_chunk(self, run_ids, now, why, due):
        """Commit the starts of the first runs of ``run_ids``; returns how many
        of ``run_ids`` it took, and the runs to ask the agent for."""
        local, taken, unprepared = [], 0, 0
        with self.store.write():
            for rid in run_ids:
                taken += 1
                with self._guard.item(now, rid, "starting it"):
                    run = self.store.get_run(rid)
                    if run.state == "scheduled" and due:
                        # A stale entry (its run's time moved) must not start it early.
                        if run.time_schedule > now or not self._make_waiting(run, now):
                            continue
                    elif run.state != "waiting":
                        continue
                    if not (self._waiting.may_start(run, now) and self._waiting.start_waiting(run, now, why)):
                        continue
                    unprepared += not self._folders.is_prepared(rid)
                    # ``run`` was read before its transitions; the hand-over needs none of them.
                    if self._hand_over(run, self.clock()):
                        local.append(rid)
                if unprepared == LAUNCH_CHUNK:
                    break
        return taken, local

    def _make_waiting(self, run, now):
        """A scheduled run's time has come: scheduled -> waiting, unless it is
        too old (max_age) or paused; False if it is not waiting now."""
        rid = run.run_id
        # max_age applies to schedule slots; an ad hoc run always starts.
        if (run.slot is not None and run.time_schedule < now - self.config.max_age
                and self._catalog.catch_up_of(run.job_id) is None):
            self.store.transition(
                rid, "scheduled", "skipped", now,
                f"missed: due at {to_iso(run.time_schedule)} while the server was down, "
                f"older than max_age ({format_duration(self.config.max_age)})")
            self._folders.discard(rid)
            return False
        if self._pauses and (pause := self._pauses.skipping(run, now)) is not None:
            if self.store.transition(rid, "scheduled", "skipped", now, f"skipped: {pause_words(pause)}"):
                self._folders.discard(rid)
            return False
        return self.store.transition(rid, "scheduled", "waiting", now, "due")

    def launch(self, runs):
        """Hand runs already in 'starting' to their programs; no-ops finish at once."""
        for i in range(0, len(runs), LAUNCH_CHUNK):
            local = []
            with self.store.write():
                for run in runs[i:i + LAUNCH_CHUNK]:
                    now = self.clock()
                    with self._guard.item(now, run.run_id, "starting it"):
                        if self._hand_over(run, now):
                            local.append(run.run_id)
            self._ask_agent(local)

    def _ask_agent(self, local):
        """Ask the agent to start runs whose 'starting' is committed; a run it
        could not start, and that provably never started, goes to error.

        Outside any transaction: talking to the agent yields to other greenlets.
        """
        if not local:
            return
        try:
            failures = self.launcher.start(local)
        except Exception as exc:
            # Nothing was claimed that the sweep will not find: it asks again
            # for specs left unclaimed (RELAUNCH_AFTER), or records them.
            log.error("could not hand %d runs to the agent: %s; asking again shortly", len(local), exc)
            return
        self._record_failures(failures)

    def _record_failures(self, failures):
        """{run_id: message} of runs the agent could not start: those that provably
        never started go to error."""
        if not failures:
            return
        with self.store.write():
            for rid, message in failures.items():
                # Only a run that provably never started may be called failed to start.
                if self.launcher.revoke(rid):
                    self.store.transition(rid, "starting", "error", self.clock(), f"could not start: {message}",
                                          meta=self.launcher.run_meta(rid))
                    self.launcher.remove(rid)

    def _hand_over(self, run, now):
        """Start one run in 'starting': a no-op finishes, a local program gets its
        folder written; True if the agent is to be asked for it."""
        try:
            program = parse_program(run.program)
        except Exception as exc:
            self.store.transition(run.run_id, "starting", "error", now, f"bad program: {exc}")
            return False
        if program.is_noop:
            if getattr(program, "success", True):
                self.store.transition(run.run_id, "starting", "success", now, "no-op: nothing to run")
            else:
                self.store.transition(run.run_id, "starting", "failure", now, "no-op with success: false")
            return False
        if not program.runs_process:
            self.store.transition(run.run_id, "starting", "running", now,
                                  f"running in the server ({program.type_name}; time limit "
                                  f"{format_duration(program.time_limit)})", meta={"in_server": True})
            self._alarms.run_started(run.run_id)  # as marking a process running does
            self._inserver.start_after_commit(run, program)
            return False
        if program.host:
            program = self._pick_host(run, program, now)
            if program is None:
                return False
            if not self.launcher.runs_remote:
                self.store.transition(run.run_id, "starting", "error", now,
                                      f"remote hosts are not supported by this launcher (host: {program.host})")
                return False
        try:
            self._folders.take(run, program)
        except OSError as exc:
            if disk_fault(exc) is not None:
                raise
            self.store.transition(run.run_id, "starting", "error", now,
                                  f"could not prepare the run folder: {exc}")
            return False
        return True

    def _pick_host(self, run, program, now):
        """The program with ``host`` the one host its run goes to (a group's pick, or the
        host named), recorded on the run; None, the run in error, if there is none."""
        group_id = getattr(program, "group_id", None)
        try:
            choice = self._hosts.pick(group_id or program.host, group_only=group_id is not None)
        except HostChoiceError as exc:
            self.store.transition(run.run_id, "starting", "error", now, str(exc))
            return None
        self.store.set_host(run.run_id, choice.host, now, f"sent to {choice.describe()}")
        if not dataclasses.is_dataclass(program):  # an extension's type: left as it is
            return program
        return dataclasses.replace(program, host=choice.host)
