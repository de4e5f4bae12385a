"""Action types, and doing them: what happens when a run enters a state.

Every action may have ``if: {states: [...], labels: [...]}``; without
``states`` it applies to every state the run enters (apsis's rule), and with
``labels`` only to runs of a job carrying at least one of them.
``successors:`` in a job file is shorthand for ``schedule`` actions with
``if: {states: [success]}``.

``ActionRunner`` never acts on the engine's path. Each action a transition
makes due is written to the database (``pending_actions``) in the
transition's own transaction; a dispatcher thread reads them after the
commit, does ``schedule`` actions (they only insert a run) itself and hands
the others (command, webhook, e-mail), which can be slow or hang, to worker
threads, at most ``action_workers`` at a time, each under a timeout, and
deletes each once done. Under gevent (the server) these threads are
greenlets. Every outcome, good or bad, goes into the run's log.

So actions are durable: one due when the server stopped or crashed is done
after it starts again. They are done at least once, not exactly once: one
that was under way when the server died (not when it stopped: a stop waits
up to STOP_WAIT for those under way) is done again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import smtplib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import ClassVar
from urllib.parse import urlsplit

from apsis_lite.model.conditions import parse_typed, state_list
from apsis_lite.errors import NotFound
from apsis_lite.model.registry import ACTIONS
from apsis_lite.model.fields import (Fields, SpecError, _kind, nonempty_text, positive_duration, string_list,
                                     string_map)

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_TIMEOUT = 10.0

# Output of a command action kept in the run's log, and of a run in an e-mail.
LOG_OUTPUT_CHARS = 2000
EMAIL_OUTPUT_BYTES = 4096

# Longest wait between two webhook attempts.
MAX_RETRY_DELAY = 60.0

# Runs whose bound actions are remembered, so that a transition of a run
# without actions costs no database read; cleared when it grows past this.
ACTIONS_CACHE_SIZE = 100_000
#: Pending actions read from the database at a time.
PENDING_PAGE = 100
#: How long a stopping server waits for actions under way to finish.
STOP_WAIT = 5.0


# How the run's log names an alarm an action was done for.
ALARM_WORDS = {"deadline": "deadline missed", "max_duration": "max_duration exceeded"}


class ActionFailed(Exception):
    """An action that could not be done; the message says why, for the run's log."""


def _if(value) -> tuple:
    """An ``if:`` mapping, as (states or None, labels or None)."""
    f = Fields(value, "mapping such as {states: [failure, error]}")
    states = f.take("states", state_list, None)
    labels = f.take("labels", _labels, None)
    f.done()
    return states, labels


def _labels(value) -> tuple:
    labels = tuple(string_list(value, item=nonempty_text))
    if not labels:
        raise ValueError("expected at least one label")
    return labels


class Action:
    """Base of action types.

    ``when`` is the states it applies to (None: every state), ``labels`` the
    job labels it is restricted to (None: any job). ``slow`` actions run on a
    worker thread under a timeout; others on the dispatcher.
    """

    type_name: ClassVar[str] = ""
    slow: ClassVar[bool] = True

    @classmethod
    def from_jso(cls, jso, *, allow_templates=False) -> "Action":
        """Parse strictly; SpecError lists every problem. On the base class, dispatch on ``type:``."""
        if cls is Action:
            return parse_action(jso, allow_templates=allow_templates)
        f = Fields(jso, "action mapping")
        f.take("type", default=None)
        when, labels = f.take("if", _if, None) or (None, None)
        kwargs = cls._read(f)
        f.done()
        return cls(when=when, labels=labels, **kwargs)

    @classmethod
    def _read(cls, f):
        raise NotImplementedError

    def to_jso(self) -> dict:
        jso = {"type": self.type_name, **self._jso()}
        cond = {}
        if self.when is not None:
            cond["states"] = list(self.when)
        if getattr(self, "labels", None) is not None:
            cond["labels"] = list(self.labels)
        if cond:
            jso["if"] = cond
        return jso

    def _jso(self):
        raise NotImplementedError

    def applies(self, state, job_labels=()) -> bool:
        """Whether this action is due when a run of a job with ``job_labels`` enters ``state``."""
        if self.when is not None and state not in self.when:
            return False
        labels = getattr(self, "labels", None)
        return labels is None or not set(labels).isdisjoint(job_labels)

    def describe(self) -> str:
        """A short name for the run's log, e.g. ``webhook to https://...``."""
        return self.type_name

    def perform(self, event: "ActionEvent", ctx: "ActionRunner") -> str:
        """Do it; returns what happened, or raises ActionFailed saying why."""
        raise NotImplementedError


@ACTIONS.register("schedule", aliases=["apsis.actions.ScheduleAction",
                                       "apsis.actions.schedule.ScheduleAction"])
@dataclass(frozen=True, kw_only=True)
class ScheduleAction(Action):
    """Schedule a run of ``job_id`` with ``args`` (params shared with this job pass through)."""

    type_name: ClassVar[str] = "schedule"
    slow: ClassVar[bool] = False

    job_id: str
    args: dict = field(default_factory=dict)
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"job_id": f.take("job_id", nonempty_text), "args": f.take("args", string_map, {})}

    def _jso(self):
        return {"job_id": self.job_id, "args": dict(self.args)}

    def describe(self):
        return f"schedule {self.job_id!r}"

    def perform(self, event, ctx):
        try:
            target = ctx.get_job(self.job_id)
        except Exception as exc:
            raise ActionFailed(str(exc)) from None
        # Params the target shares with this run pass through unless given.
        args = {p: event.run.args[p] for p in target.params if p in event.run.args}
        args.update(self.args)
        try:
            new = ctx.submit(self.job_id, args, f"scheduled by an action of {event.run_id}")
        except Exception as exc:
            raise ActionFailed(str(exc)) from None
        shown = " ".join(f"{k}={v}" for k, v in args.items())
        return f"created run {new}" + (f" ({shown})" if shown else "")


@ACTIONS.register("command")
@dataclass(frozen=True, kw_only=True)
class CommandAction(Action):
    """Run a shell command (``bash -c``), e.g. to notify someone.

    It sees the run in ``APSIS_*`` variables and, as JSON, on stdin and in
    ``APSIS_EVENT``; it starts in the home directory and is killed (its
    whole process group) after ``timeout`` (default: ``action_timeout``).
    """

    type_name: ClassVar[str] = "command"

    command: str
    timeout: float | None = None
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"command": f.take("command", nonempty_text),
                "timeout": f.take("timeout", positive_duration, None)}

    def _jso(self):
        jso = {"command": self.command}
        if self.timeout is not None:
            jso["timeout"] = self.timeout
        return jso

    def describe(self):
        first = self.command.strip().splitlines()[0] if self.command.strip() else ""
        return f"command {first[:60]!r}"

    def perform(self, event, ctx):
        timeout = self.timeout or ctx.config.action_timeout
        body = json.dumps(event.to_jso())
        env = dict(os.environ)
        env.update(event.environment())
        env["APSIS_EVENT"] = body
        try:
            proc = subprocess.Popen(
                ["bash", "-c", self.command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, cwd=os.path.expanduser("~"),
                start_new_session=True)
        except OSError as exc:
            raise ActionFailed(f"could not start: {exc.strerror or exc}") from None
        try:
            out, _ = proc.communicate(body.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            raise ActionFailed(f"timed out after {timeout:g} s{_tail(out)}") from None
        if proc.returncode < 0:
            raise ActionFailed(f"killed by {signal.Signals(-proc.returncode).name}{_tail(out)}")
        if proc.returncode != 0:
            raise ActionFailed(f"exit code {proc.returncode}{_tail(out)}")
        return f"exit code 0{_tail(out)}"


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def _tail(out: bytes) -> str:
    text = (out or b"").decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > LOG_OUTPUT_CHARS:
        text = "..." + text[-LOG_OUTPUT_CHARS:]
    return "; output:\n" + text


def _url(value) -> str:
    url = nonempty_text(value).strip()
    if "{{" in url or "{%" in url:
        return url  # checked when bound
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http or https URL, got {url!r}")
    return url


MAX_WEBHOOK_RETRIES = 100


def _retries(value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEBHOOK_RETRIES:
        raise ValueError(f"expected a whole number from 0 to {MAX_WEBHOOK_RETRIES}, got {_kind(value)}")
    return value


@ACTIONS.register("webhook")
@dataclass(frozen=True, kw_only=True)
class WebhookAction(Action):
    """POST the run and the transition as JSON to ``url``.

    Each attempt gives up after ``timeout`` seconds. A connection error, a
    timeout, HTTP 429 or a 5xx answer is retried ``retries`` times (default:
    ``webhook_retries``), waiting ``webhook_retry_delay``, then twice that,
    and so on; any other 4xx answer is not retried.
    """

    type_name: ClassVar[str] = "webhook"

    url: str
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    retries: int | None = None
    headers: dict = field(default_factory=dict)
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"url": f.take("url", _url),
                "timeout": f.take("timeout", positive_duration, DEFAULT_WEBHOOK_TIMEOUT),
                "retries": f.take("retries", _retries, None),
                "headers": f.take("headers", string_map, {})}

    def _jso(self):
        jso = {"url": self.url, "timeout": self.timeout}
        if self.retries is not None:
            jso["retries"] = self.retries
        if self.headers:
            jso["headers"] = dict(self.headers)
        return jso

    def describe(self):
        return f"webhook to {self.url}"

    def perform(self, event, ctx):
        body = json.dumps(event.to_jso()).encode()
        retries = ctx.config.webhook_retries if self.retries is None else self.retries
        problems = []
        for attempt in range(retries + 1):
            if attempt:
                ctx.sleep(min(ctx.config.webhook_retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY))
            try:
                status = self._post(body)
            except _Retry as exc:
                problems.append(str(exc))
                continue
            tries = f" (attempt {attempt + 1}; before: {', '.join(problems)})" if problems else ""
            return f"delivered: HTTP {status}{tries}"
        raise ActionFailed(f"gave up after {retries + 1} attempt(s): {', '.join(problems)}")

    def _post(self, body) -> int:
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "apsis-lite")
        for name, value in self.headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read(65536)
                return resp.status
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(f"HTTP {exc.code}") from None
            raise ActionFailed(f"HTTP {exc.code} {exc.reason} (not retried)") from None
        except urllib.error.URLError as exc:
            raise _Retry(_reason(exc.reason)) from None
        except (OSError, ValueError) as exc:  # timeouts and resets after connecting
            raise _Retry(_reason(exc)) from None


class _Retry(Exception):
    """A webhook attempt that failed in a way worth trying again."""


def _reason(exc) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _address(value) -> str:
    address = nonempty_text(value).strip()
    if "@" not in address and "{{" not in address:
        raise ValueError(f"not an e-mail address: {address!r}")
    return address


@ACTIONS.register("email")
@dataclass(frozen=True, kw_only=True)
class EmailAction(Action):
    """Send an e-mail about the run to ``to`` (one address or a list), through ``smtp_host``."""

    type_name: ClassVar[str] = "email"

    to: tuple
    subject: str | None = None
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"to": f.take("to", _addresses), "subject": f.take("subject", nonempty_text, None)}

    def _jso(self):
        jso = {"to": list(self.to)}
        if self.subject is not None:
            jso["subject"] = self.subject
        return jso

    def describe(self):
        return f"e-mail to {', '.join(self.to)}"

    def perform(self, event, ctx):
        cfg = ctx.config
        if not cfg.smtp_host:
            raise ActionFailed("no SMTP server configured (set smtp_host in the server's config)")
        msg = EmailMessage()
        msg["From"] = cfg.smtp_from or f"apsis-lite@{socket.getfqdn()}"
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = self.subject or f"apsis-lite: {event.run.job_id} {event.run_id} {event.new}"
        msg.set_content(event.describe(ctx.output_tail(event.run)))
        try:
            if cfg.smtp_security == "ssl":
                client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.action_timeout)
            else:
                client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.action_timeout)
            with client:
                if cfg.smtp_security == "starttls":
                    client.starttls()
                if cfg.smtp_user:
                    client.login(cfg.smtp_user, cfg.smtp_password or "")
                refused = client.send_message(msg)
        except smtplib.SMTPException as exc:
            raise ActionFailed(f"SMTP server {cfg.smtp_host}:{cfg.smtp_port}: {exc}") from None
        except OSError as exc:
            raise ActionFailed(f"SMTP server {cfg.smtp_host}:{cfg.smtp_port}: {_reason(exc)}") from None
        if refused:
            return f"sent; refused for {', '.join(refused)}"
        return "sent"


def _addresses(value) -> tuple:
    to = tuple(string_list(value, item=_address))
    if not to:
        raise ValueError("expected at least one address")
    return to


def parse_action(jso, *, allow_templates=False) -> Action:
    """The Action for one job-file action mapping; SpecError lists every problem."""
    return parse_typed(jso, ACTIONS, "action", allow_templates=allow_templates)


def successor_action(jso) -> ScheduleAction:
    """The schedule action for one ``successors:`` entry: a job id or ``{job_id, args}``."""
    if isinstance(jso, str):
        jso = {"job_id": jso}
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a job id or a mapping with job_id and args, got {_kind(jso)}")
    f = Fields(jso)
    job_id = f.take("job_id", nonempty_text)
    args = f.take("args", string_map, {})
    f.done()
    return ScheduleAction(job_id=job_id, args=args, when=("success",))


# --------------------------------------------------------------------------
# Doing actions.


@dataclass(frozen=True)
class ActionEvent:
    """One action due because a run entered a state: the run as it was then, and the transition."""

    action: Action
    run: object  # runs.Run
    old: str | None
    new: str
    time: float
    # A missed deadline or max_duration: {"kind", "message"}; the run did not change state.
    alarm: dict | None = None
    after_restart: bool = False  # due before the server (re)started, and done only now

    @property
    def run_id(self) -> str:
        return f"r{self.run.run_id}"

    def to_jso(self) -> dict:
        """What a webhook receives and a command reads on stdin."""
        from apsis_lite.timeutil import to_iso
        if self.alarm is not None:
            return {"run": self.run.to_jso(), "transition": None,
                    "alarm": {**self.alarm, "time": to_iso(self.time)}}
        return {"run": self.run.to_jso(),
                "transition": {"from": self.old, "to": self.new, "time": to_iso(self.time)}}

    def environment(self) -> dict:
        """The ``APSIS_*`` variables a command action sees (programs see the first four too)."""
        run = self.run
        env = {"APSIS_RUN_ID": self.run_id, "APSIS_JOB_ID": run.job_id,
               "APSIS_ARGS": json.dumps(run.args, sort_keys=True),
               "APSIS_STATE": self.new, "APSIS_PREVIOUS_STATE": self.old or "",
               "APSIS_MESSAGE": run.message or ""}
        if run.exit_code is not None:
            env["APSIS_EXIT_CODE"] = str(run.exit_code)
        if self.alarm is not None:
            env["APSIS_ALARM"] = self.alarm["kind"]
            env["APSIS_ALARM_MESSAGE"] = self.alarm["message"]
        for name, value in run.args.items():
            env[f"APSIS_ARG_{name}"] = str(value)
        return env

    def describe(self, output="") -> str:
        """Plain text about the run, for an e-mail."""
        from apsis_lite.timeutil import to_iso
        run = self.run
        if self.alarm is not None:
            lines = [f"Run {self.run_id} of job {run.job_id}: {self.alarm['message']}.", ""]
        else:
            lines = [f"Run {self.run_id} of job {run.job_id} is now {self.new}"
                     + (f" (was {self.old})." if self.old else "."), ""]
        fields = [("job", run.job_id),
                  ("args", " ".join(f"{k}={v}" for k, v in run.args.items())),
                  ("state", self.new), ("message", run.message),
                  ("exit code", run.exit_code), ("scheduled for", to_iso(run.time_schedule))]
        fields += [(f"{state} at", to_iso(t)) for state, t in run.times.items()]
        lines += [f"{k}: {v}" for k, v in fields if v not in (None, "")]
        if output:
            lines += ["", "Output (end):", output]
        return "\n".join(lines) + "\n"


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
            return
        except Exception as exc:  # an action's bug must not stop the others
            log.exception("%s: %s failed", event.run_id, what)
            self._log(event.run.run_id, f"{what} failed: internal error: {type(exc).__name__}: {exc}")
            return
        self._log(event.run.run_id, f"{what}: {outcome}")

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
