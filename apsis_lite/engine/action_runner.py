"""Doing actions: ``ActionRunner`` fires them off the engine's path, durably.

Each action a transition makes due is written to the database
(``pending_actions``) in the transition's own transaction; a dispatcher
thread reads them after the commit, does ``schedule`` actions (they only
insert a run) itself and hands the others (command, webhook, e-mail), which
can be slow or hang, to worker threads, at most ``action_workers`` at a
time, each under a timeout, and deletes each once done. Under gevent (the
server) these threads are greenlets. Every outcome, good or bad, goes into
the run's log.

So actions are durable: one due when the server stopped or crashed is done
after it starts again. They are done at least once, not exactly once: one
that was under way when the server died (not when it stopped: a stop waits
up to STOP_WAIT for those under way) is done again.
"""

from __future__ import annotations

import logging
import threading
import time

from apsis_lite.errors import NotFound
from apsis_lite.model.actions.base import ActionFailed, parse_action
from apsis_lite.model.actions.event import ActionEvent
from apsis_lite.model.fields import SpecError

# Under the package's name, as the action runner has always logged.
log = logging.getLogger("apsis_lite.engine")

# Output of a run in an e-mail.
EMAIL_OUTPUT_BYTES = 4096
# Runs whose bound actions are remembered, so that a transition of a run
# without actions costs no database read; cleared when it grows past this.
ACTIONS_CACHE_SIZE = 100_000
#: Pending actions read from the database at a time.
PENDING_PAGE = 100
#: How long a stopping server waits for actions under way to finish.
STOP_WAIT = 5.0
# How the run's log names an alarm an action was done for.
ALARM_WORDS = {"deadline": "deadline missed", "max_duration": "max_duration exceeded"}


class ActionRunner:
    """Does runs' actions off the engine's path; see the module docstring.

    ``engine`` supplies ``jobs``, ``get_job`` and ``submit``; ``store`` is
    the engine's (write) store, whose listeners report transitions.
    """

    def __init__(self, config, store, engine, clock=time.time, sleep=time.sleep):
        self.config = config
        self.store = store
        self.engine = engine
        self.clock = clock
        self.sleep = sleep
        self._actions = {}      # run_id -> (job_id, ((action, its JSON), ...)), for runs not finished
        self._next_id = 0       # the first pending action not handed out yet
        self._restarted_below = 0  # pending actions with smaller ids were due before this start
        self._ready = threading.Event()
        self._workers = threading.BoundedSemaphore(config.action_workers)
        self._under_way = set()  # worker threads
        self._stopping = False
        self._thread = None
        self.listeners = []     # fn(action type, ok) after each action done or failed (the metrics)

    def start(self):
        """Listen to the store and start the dispatcher (which first does the
        actions left pending by the last run of the server)."""
        self._restarted_below = self.store.last_pending_action_id() + 1
        self.store.add_transaction_listener(self.on_transition)
        self.engine.add_alarm_listener(self.on_alarm)
        self._thread = threading.Thread(target=self._dispatch, name="actions", daemon=True)
        self._thread.start()
        self._ready.set()

    def stop(self, wait=STOP_WAIT):
        """Stop handing out actions; wait up to ``wait`` s for those under way
        (the others are done after a restart)."""
        self._stopping = True
        self._ready.set()
        deadline = time.monotonic() + wait
        for thread in list(self._under_way):
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- listening (inside the engine's transactions: quick, no waiting) ---------

    def on_transition(self, run_id, old, new):
        """Record the run's actions that apply to entering ``new``."""
        try:
            self._record(run_id, old, new)
        except Exception:  # never the reason a transition fails
            log.exception("could not record the actions of run r%s on %s", run_id, new)

    def _record(self, run_id, old, new):
        cached = self._actions.get(run_id)
        if cached is None:
            run = self.store.get_run(run_id)
            cached = (run.job_id, self._parse(run))
            if len(self._actions) >= ACTIONS_CACHE_SIZE:
                self._actions.clear()
            self._actions[run_id] = cached
        job_id, actions = cached
        if new in ("success", "failure", "error", "skipped"):
            # Only a mark moves it again: rare enough to read it afresh then.
            self._actions.pop(run_id, None)
        if not actions:
            return
        labels = self._labels(job_id)
        due = [jso for action, jso in actions if action.applies(new, labels)]
        if not due:
            return
        when = self.store.get_run(run_id).times.get(new) or self.clock()
        for jso in due:
            self.store.add_pending_action(run_id, jso, old, new, when)
        self.store.after_commit(self._ready.set)

    def on_alarm(self, run_id, kind, message):
        """Record a run's failure actions for a missed deadline or max_duration.

        The actions due are those that would be done if the run failed
        (``if:`` states include failure, or no states at all).
        """
        run = self.store.get_run(run_id)
        labels = self._labels(run.job_id)
        due = [jso for action, jso in self._parse(run) if action.applies("failure", labels)]
        if not due:
            return
        with self.store.write():
            for jso in due:
                self.store.add_pending_action(run_id, jso, run.state, run.state, self.clock(),
                                              alarm={"kind": kind, "message": message})
            self.store.after_commit(self._ready.set)

    def _parse(self, run) -> tuple:
        parsed = []
        for i, jso in enumerate(run.actions or ()):
            try:
                parsed.append((parse_action(jso), jso))
            except SpecError as exc:
                why = "; ".join(f"{k}: {m}" if k else m for k, m in exc.problems)
                self._log(run.run_id, f"action[{i}] cannot be done: {why}")
        return tuple(parsed)

    def _labels(self, job_id) -> tuple:
        job = self.engine.jobs.get(job_id)
        labels = (job.metadata or {}).get("labels") if job is not None else None
        return tuple(labels or ())

    # -- doing --------------------------------------------------------------------

    def _dispatch(self):
        while not self._stopping:
            self._ready.wait()
            self._ready.clear()
            while not self._stopping:
                try:
                    pending = self.store.pending_actions(self._next_id, PENDING_PAGE)
                except Exception:  # the database is busy or closing: the next wake-up tries again
                    log.exception("could not read the pending actions")
                    break
                if not pending:
                    break
                for row in pending:
                    if self._stopping:
                        return
                    self._next_id = row[0] + 1
                    self._hand_out(row)

    def _hand_out(self, row):
        action_id, run_id, jso, old, new, when, alarm = row
        try:
            run = self.store.get_run(run_id)
            action = parse_action(jso)
        except (NotFound, SpecError) as exc:  # the run was deleted, or an extension is gone
            log.warning("dropped an action of run r%s: %s", run_id, exc)
            self._done(action_id)
            return
        event = ActionEvent(action, run, old, new, when, alarm=alarm,
                            after_restart=action_id < self._restarted_below)
        if not action.slow:
            self._do(event)
            self._done(action_id)
            return
        # Waits here, not on the engine, when every worker is busy.
        self._workers.acquire()
        thread = threading.Thread(target=self._do_slow, args=(event, action_id), daemon=True,
                                  name=f"action {event.run_id}")
        self._under_way.add(thread)
        thread.start()

    def _do_slow(self, event, action_id):
        try:
            self._do(event)
            self._done(action_id)
        finally:
            self._under_way.discard(threading.current_thread())
            self._workers.release()

    def _done(self, action_id):
        try:
            self.store.remove_pending_action(action_id)
        except Exception:  # the store closed under a late action: it is done again after a restart
            log.exception("could not mark action %s done", action_id)

    def _do(self, event):
        what = f"action {event.action.describe()} on " + (
            ALARM_WORDS.get(event.alarm["kind"], event.alarm["kind"]) if event.alarm else event.new)
        if event.after_restart:
            what += " (due before the server restarted)"
        try:
            outcome = event.action.perform(event, self)
        except ActionFailed as exc:
            log.warning("%s: %s failed: %s", event.run_id, what, exc)
            self._log(event.run.run_id, f"{what} failed: {exc}")
            self._tell(event.action, False)
            return
        except Exception as exc:  # an action's bug must not stop the others
            log.exception("%s: %s failed", event.run_id, what)
            self._log(event.run.run_id, f"{what} failed: internal error: {type(exc).__name__}: {exc}")
            self._tell(event.action, False)
            return
        self._log(event.run.run_id, f"{what}: {outcome}")
        self._tell(event.action, True)

    def _tell(self, action, ok):
        for fn in self.listeners:
            try:
                fn(action.type_name, ok)
            except Exception:  # a listener's bug is no action's failure
                log.exception("action listener failed")

    def _log(self, run_id, message):
        try:
            self.store.log(run_id, self.clock(), message)
        except Exception:
            log.exception("could not log to run r%s: %s", run_id, message)

    # -- what actions may use -------------------------------------------------------

    def get_job(self, job_id):
        return self.engine.get_job(job_id)

    def submit(self, job_id, args, why) -> str:
        """A new run of ``job_id`` now; returns its id."""
        return f"r{self.engine.submit(job_id, args, why=why).run_id}"

    def output_tail(self, run) -> str:
        """The end of a finished run's stored output, as text."""
        try:
            length = self.store.output_length(run.run_id)
            if not length:
                return ""
            data = self.store.read_output(run.run_id, max(0, length - EMAIL_OUTPUT_BYTES))
        except Exception:
            return ""
        return (data or b"").decode("utf-8", "replace")
