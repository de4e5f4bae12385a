"""Remote programs: runs whose program says ``host: NAME`` go to that host's agent over ssh.

``HostLauncher`` is the ``LocalLauncher`` for local runs and, for remote
ones, keeps the same promises through the agent installed on the host (see
``apsis_lite.hosts.runs``): the run folder there is the truth, and the run's
folder here is its mirror, so that the rest of the engine, the pages and the
API read a remote run's pid, output and result where they read a local one's.

The mirror holds ``remote.json`` (the host, the login user and the spec to
send), and, as the host's folder is polled, ``pid.json``, the output so far
and, once all its output has arrived, ``result.json``. A poller asks each
host with runs in flight for all of them in one ssh call every
``POLL_INTERVAL``, and tells the engine when a run is running or done, as a
local shepherd's notice does; the engine's own checks read what the poller
last heard and never wait for a host. A host that cannot be reached leaves its runs
as they are (alive, for all the engine knows) until it answers again: the
programs there do not depend on the connection.

Starts are sent by a sender per host, off the engine's pass: a host that
drops packets makes ssh wait for its ConnectTimeout, and the runs due on
other hosts and here must not wait with it. A start that provably never
reached the host ends its run in ``error`` through the mirror (a result
saying why, then a notice), as a program that could not be started does.
"""

import base64
import dataclasses
import logging
import os
import queue
import threading
import time

from apsis_lite import agent
from apsis_lite.agent.protocol import NOTICE_DONE, NOTICE_RUNNING, atomic_write_json
from apsis_lite.config import HostSettings
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.hosts.install import REMOTE_FOLDER, AgentInstaller
from apsis_lite.hosts.runs import STATE_FOLDER, CallFailed, RemoteAgent, instance_name
from apsis_lite.hosts.ssh import Target, control_dir
from apsis_lite.model.runs import format_run_id

log = logging.getLogger("apsis_lite.engine")

#: The mirror's record of a remote run: host, login user, spec.
REMOTE = "remote.json"
#: Seconds between two polls of a host with runs in flight.
POLL_INTERVAL = 1.0
#: A host's last answer older than this many poll intervals is not taken as its word.
STALE_AFTER = 5
#: Output bytes one poll of a host brings back at most, shared by its runs in flight.
POLL_BUDGET = 8 << 20
#: Output bytes a run may bring back per poll, however many runs share a poll.
MIN_CAP = 64 << 10


def remote_spec(local_spec, run, program, config) -> dict:
    """The spec a host's agent gets for ``run``; ``local_spec`` is the one an agent here would get."""
    # The environment is the login's on the host, plus the program's and the run's.
    env = dict(program.env or {})
    env["APSIS_RUN_ID"] = format_run_id(run.run_id)
    env["APSIS_JOB_ID"] = run.job_id
    env["APSIS_ARGS"] = local_spec["env"]["APSIS_ARGS"]
    for name, value in run.args.items():
        env[f"APSIS_ARG_{name}"] = str(value)
    return {"run_id": format_run_id(run.run_id), "argv": program.argv(), "env": env,
            "cwd": program.cwd, "user": None, "timeout": program.timeout, "stop": program.stop,
            "output_head": config.output_head, "output_tail": config.output_tail}


@dataclasses.dataclass
class _Host:
    """What is known of one host (and login user): its agent, its last answer, removals
    and stops to send.

    Polls have a session of their own (``watcher``), so that a start never waits for a
    poll, and a poller of their own, so that no host waits for another."""

    agent: RemoteAgent
    watcher: RemoteAgent
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    polled: float = -1.0        # time.monotonic() of the last poll (-1: never)
    error: str | None = None    # why the last poll failed
    remove: set = dataclasses.field(default_factory=set)
    #: Stops to send: run id -> (signal, grace period); sent by the poller, before it polls.
    stops: dict = dataclasses.field(default_factory=dict)
    #: Set to poll now rather than at the next interval (a stop to send, say).
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    poller: threading.Thread | None = None
    warned: set = dataclasses.field(default_factory=set)  # runs whose stop could not reach it

    def stop_waits(self, rid, why):
        """Warn, once per run, that its stop cannot reach the host now."""
        if rid not in self.warned:
            self.warned.add(rid)
            log.warning("run %s: its stop cannot reach its host now (%s); it is sent when the host answers",
                        format_run_id(rid), why)


class HostLauncher(LocalLauncher):
    """Starts, stops and collects local runs, and remote runs through their host's agent."""

    runs_remote = True

    def __init__(self, config, poll_interval=POLL_INTERVAL):
        super().__init__(config)
        self.poll_interval = poll_interval
        #: ``fn(kind, run_id)``: a remote run is running or done (the engine's ``notice``).
        self.on_notice = None
        self._installer = AgentInstaller()
        self._instance = instance_name(config.data_dir)
        self._control_dir = control_dir(config.data_dir)
        self._hosts = {}        # (host, user) -> _Host
        self._remote = {}       # run id -> (host, user), for remote runs with a folder here
        self._seen = {}         # run id -> (time it was asked, the host's last word on it)
        self._sent_at = {}      # run id -> time the start was sent (this process)
        self._never_sent = set()  # run ids whose start provably never reached the host
        self._stops = set()     # run ids whose stop the host took
        self._sending = set()   # run ids whose start a sender holds: the host's word on them is not yet news
        self._senders = {}      # (host, user) -> queue of lists of run ids to start there
        self._closing = threading.Event()
        for rid in self.folder_run_ids():
            record = agent.read_json(self.run_dir(rid), REMOTE)
            if record is not None:
                self._remote[rid] = (record["host"], record.get("user"))
        for key in set(self._remote.values()):  # runs left in flight by the last server: follow them now
            self._start_poller(key)

    # -- which runs are remote ---------------------------------------------------

    def is_remote(self, run_id) -> bool:
        return run_id in self._remote

    def run_meta(self, run_id) -> dict:
        if run_id not in self._remote:
            return {}
        host, user = self._remote[run_id]
        folder = f"~/{REMOTE_FOLDER}/{STATE_FOLDER}/{self._instance}/runs/{format_run_id(run_id)}"
        return {"remote": {"host": host, "user": user, "folder": folder}}

    def where(self, run_id) -> str:
        return f"host {self._remote[run_id][0]}" if run_id in self._remote else super().where(run_id)

    def _host(self, key) -> _Host:
        if key not in self._hosts:
            host, user = key
            settings = (self.config.hosts or {}).get(host) or HostSettings(name=host, hostname=host)
            if user:  # a remote program's user: is the login user there
                settings = dataclasses.replace(settings, user=user)
            target = Target(settings, self._control_dir)
            self._hosts[key] = _Host(RemoteAgent(target, self._installer, self._instance),
                                     RemoteAgent(target, self._installer, self._instance))
        return self._hosts[key]

    # -- starting ------------------------------------------------------------------

    def prepare(self, run, program, ahead=False):
        if not program.host:
            return super().prepare(run, program, ahead)
        path = self.run_dir(run.run_id)
        if not self._take_spare(path):
            os.makedirs(path, exist_ok=True)
        spec = remote_spec(self.spec(run, program), run, program, self.config)
        atomic_write_json(os.path.join(path, REMOTE),
                          {"host": program.host, "user": program.user, "spec": spec}, durable=False)
        self._remote[run.run_id] = (program.host, program.user)
        self._start_poller((program.host, program.user))
        return path

    def start(self, run_ids):
        local = [rid for rid in run_ids if rid not in self._remote]
        failures = super().start(local) if local else {}
        self._start_remote(run_ids)
        return failures

    def send_starts(self, run_ids):
        local = [rid for rid in run_ids if rid not in self._remote]
        if local:
            super().send_starts(local)
        self._start_remote(run_ids)

    def _start_remote(self, run_ids):
        """Hand the remote ones of ``run_ids`` to their hosts' senders."""
        by_host = {}
        for rid in run_ids:
            if rid in self._remote:
                by_host.setdefault(self._remote[rid], []).append(rid)
        for key, rids in by_host.items():
            self._sending.update(rids)
            self._sender(key).put(rids)

    def _sender(self, key) -> queue.Queue:
        if key not in self._senders:
            self._senders[key] = queue.Queue()
            threading.Thread(target=self._send_loop, args=(key, self._senders[key]),
                             name=f"remote-starts-{key[0]}", daemon=True).start()
        return self._senders[key]

    def _send_loop(self, key, starts):
        while (rids := starts.get()) is not None:
            try:
                failures = self._start_on(key, rids)
            except Exception as exc:  # may have reached the host: the sweep finds out
                log.exception("starting runs on host %s failed", key[0])
                failures = {rid: f"host {key[0]}: {exc}" for rid in rids}
            sent = time.time()
            for rid in rids:
                if rid not in failures:
                    # What the host said before it had the spec is not about this run.
                    self._sent_at[rid] = sent
            try:
                for rid, message in failures.items():
                    self._start_failed(rid, message)
            except Exception:
                log.exception("recording runs that could not start on host %s failed", key[0])
            finally:
                self._sending.difference_update(rids)
            self._start_poller(key)

    def _start_failed(self, rid, message):
        """A start the host did not take: the run ends in error if it provably never started
        there; otherwise the sweep asks the host, by the rules for any run in 'starting'."""
        if rid not in self._remote:
            return
        if not self.revoke(rid):
            log.warning("run %s: %s; it may have reached the host, which will be asked",
                        format_run_id(rid), message)
            return
        atomic_write_json(os.path.join(self.run_dir(rid), agent.RESULT),
                          {"error": f"could not start: {message}"}, durable=False)
        if self.on_notice is not None:
            self.on_notice(NOTICE_DONE, rid)

    def _start_on(self, key, rids) -> dict:
        """Send one host its runs' specs in one call; {run_id: message} for those that failed."""
        specs = {}
        for rid in rids:
            record = agent.read_json(self.run_dir(rid), REMOTE)
            if record is None:
                return {rid: "its run folder is gone" for rid in rids}
            specs[format_run_id(rid)] = record["spec"]
        now = time.time()
        for rid in rids:
            self._sent_at[rid] = now
        try:
            reply = self._host(key).agent.call("start", runs=specs)
        except CallFailed as exc:
            if exc.never_ran:
                self._never_sent.update(rids)
            return {rid: str(exc) for rid in rids}
        answers = reply.get("runs") or {}
        return {rid: answers[format_run_id(rid)] for rid in rids if answers.get(format_run_id(rid))}

    # -- what the host says ----------------------------------------------------------

    def _start_poller(self, key):
        """Start the host's poller, unless it is running. One per host: a host that drops
        packets keeps its poller waiting for ssh's ConnectTimeout, and only its own runs wait."""
        host = self._host(key)
        if (host.poller is None or not host.poller.is_alive()) and not self._closing.is_set():
            host.poller = threading.Thread(target=self._poll_loop, args=(key, host),
                                           name=f"remote-runs-{key[0]}", daemon=True)
            host.poller.start()

    def _poll_loop(self, key, host):
        while not self._closing.is_set():
            host.wake.wait(self.poll_interval)
            host.wake.clear()
            if self._closing.is_set():
                return
            try:
                if not host.error:  # a host that did not answer is polled first: no stop waits for it twice
                    self._send_stops(key, host)
                if host.remove or any(k == key for k in list(self._remote.values())):
                    self._poll(key)
                if host.stops and not host.error:
                    self._send_stops(key, host)
            except Exception:  # the next poll tries again; the poller must not die
                log.exception("polling host %s failed", key[0])

    def _poll(self, key):
        """Ask the host about its runs in flight, mirror what it says here, and tell the
        engine what changed."""
        host = self._host(key)
        with host.lock:
            more = True
            while more:
                notices = []
                asked = time.time()
                rids = [rid for rid, k in list(self._remote.items()) if k == key
                        and agent.read_json(self.run_dir(rid), agent.RESULT) is None]
                removing = sorted(host.remove)
                # One poll brings at most POLL_BUDGET bytes, shared by the runs asked; a poll
                # that brought a full share is followed by another at once.
                cap = max(MIN_CAP, POLL_BUDGET // max(1, len(rids)))
                try:
                    reply = host.watcher.call("poll", runs={format_run_id(r): self._mirrored(r) for r in rids},
                                            remove=removing, cap=cap)
                except CallFailed as exc:
                    if host.error != str(exc):
                        log.warning("%s; its runs are left as they are until it answers", exc)
                    host.error, host.polled = str(exc), time.monotonic()
                    return
                if host.error:
                    log.info("host %s answers again", key[0])
                host.error, host.polled = None, time.monotonic()
                host.remove.difference_update(removing)
                answers = reply.get("runs") or {}
                more = False
                for rid in rids:
                    said = answers.get(format_run_id(rid))
                    if said is not None and rid in self._remote:
                        more |= self._mirror(rid, said, notices, asked, cap)
                # Told as they come, not once all the output is here.
                if self.on_notice is not None:
                    for kind, rid in notices:
                        self.on_notice(kind, rid)

    def _send_stops(self, key, host):
        """Send the host the stops asked since it last took them; warn once for each
        that cannot reach it, and send it again at the next poll."""
        stops = dict(host.stops)
        if not stops:
            return
        try:
            reply = host.watcher.call("stop", runs={format_run_id(rid): [signal_name, grace]
                                                    for rid, (signal_name, grace) in stops.items()})
        except CallFailed as exc:
            host.error = str(exc)
            for rid in stops:
                host.stop_waits(rid, exc)
            return
        taken = reply.get("runs") or {}
        for rid in stops:
            host.stops.pop(rid, None)
            self._stops.add(rid)
            if rid in host.warned:
                host.warned.discard(rid)
                log.info("run %s: its stop reached host %s", format_run_id(rid), key[0])
            if not taken.get(format_run_id(rid)):
                log.info("run %s: host %s found no shepherd to stop; the sweep records what it left",
                         format_run_id(rid), key[0])
        host.wake.set()  # poll at once: the stopped runs may have ended

    def _mirrored(self, run_id) -> int:
        try:
            return os.path.getsize(self.output_path(run_id))
        except OSError:
            return 0

    def _mirror(self, rid, said, notices, asked, cap) -> bool:
        """Copy what the host said of a run into its folder here; True if output is left to
        fetch at once (it brought ``cap`` bytes and more are there)."""
        self._seen[rid] = (asked, said)
        if not said.get("exists"):
            return False
        path = self.run_dir(rid)
        data = base64.b64decode(said.get("output") or "")
        if data:
            with open(self.output_path(rid), "ab") as out:
                out.write(data)
        if said.get("pid") and agent.read_json(path, agent.PID) is None:
            atomic_write_json(os.path.join(path, agent.PID), said["pid"], durable=False)
            notices.append((NOTICE_RUNNING, rid))
        left = said.get("size", 0) - self._mirrored(rid)
        if said.get("result") is not None and left <= 0:
            atomic_write_json(os.path.join(path, agent.RESULT), said["result"], durable=False)
            notices.append((NOTICE_DONE, rid))
        # A full share with more left is a backlog: poll again at once. (A run that writes
        # steadily but less than its share waits for the next interval.)
        return left > 0 and len(data) >= cap

    def _said(self, rid):
        """The host's word on a remote run, as the poller last heard it; None when not known
        (the host does not answer, or its last word is old or older than the run's start).

        The engine's checks never ask a host themselves: a host that drops packets keeps
        ssh waiting for its ConnectTimeout, and the pass would wait with it."""
        if rid in self._sending:
            return None  # its start is on its way: nothing the host says yet is about it
        key = self._remote[rid]
        self._start_poller(key)
        if self._host(key).error:
            return None
        asked, said = self._seen.get(rid, (None, None))
        if said is None or asked < self._sent_at.get(rid, 0.0):
            return None  # asked before its start was sent: not known yet
        if time.time() - asked > STALE_AFTER * self.poll_interval:
            return None  # the host's poller is held up: not known now
        return said

    # -- the engine's questions ---------------------------------------------------------

    def known(self, run_id) -> bool:
        if run_id not in self._remote:
            return super().known(run_id)
        return self.result(run_id) is not None or self._said(run_id) is not None

    def is_alive(self, run_id) -> bool:
        if run_id not in self._remote:
            return super().is_alive(run_id)
        if self.result(run_id) is not None:
            return False
        said = self._said(run_id)
        if said is None:
            return True  # unknown: the host does not answer, and its runs do not need it to
        if not said.get("exists"):
            return False
        # A result whose output is still on its way counts as alive until it is all here.
        return bool(said.get("alive") or said.get("result") is not None)

    def claimed(self, run_id) -> bool:
        if run_id not in self._remote:
            return super().claimed(run_id)
        said = self._said(run_id)
        return True if said is None else bool(said.get("claimed"))

    def spec_pending_since(self, run_id):
        if run_id not in self._remote:
            return super().spec_pending_since(run_id)
        said = self._said(run_id)
        if said is None or not said.get("pending"):
            return None
        # The host's clock may differ: when this process sent it, or long ago if another did.
        return self._sent_at.get(run_id, 0.0)

    def host_restarted(self, run_id) -> bool:
        """Whether the host restarted since the run was started there."""
        said = self._seen.get(run_id, (None, None))[1] if run_id in self._remote else None
        return bool(said and said.get("rebooted"))

    def revoke(self, run_id) -> bool:
        if run_id not in self._remote:
            return super().revoke(run_id)
        if run_id in self._never_sent:
            return True
        try:
            reply = self._host(self._remote[run_id]).agent.call("revoke", runs=[format_run_id(run_id)])
        except CallFailed as exc:
            log.info("run %s: cannot revoke it now: %s", format_run_id(run_id), exc)
            return False
        return bool((reply.get("runs") or {}).get(format_run_id(run_id)))

    def request_stop(self, run_id, signal_name, grace_period) -> bool:
        """Hand the stop to the host's poller, which sends it at once, or when the host
        answers again; True, since the run is alive for all the engine knows (should no
        shepherd be there to take it, the sweep finds that out)."""
        if run_id not in self._remote:
            return super().request_stop(run_id, signal_name, grace_period)
        key = self._remote[run_id]
        host = self._host(key)
        host.stops[run_id] = (str(signal_name), grace_period)
        if host.error:
            host.stop_waits(run_id, host.error)
        self._start_poller(key)
        host.wake.set()
        return True

    def stop_requested(self, run_id) -> bool:
        if run_id not in self._remote:
            return super().stop_requested(run_id)
        if run_id in self._stops or run_id in self._host(self._remote[run_id]).stops:
            return True  # taken, or on its way
        return bool((self._seen.get(run_id, (None, None))[1] or {}).get("stop"))

    def send_signal(self, run_id, signal_name) -> bool:
        if run_id not in self._remote:
            return super().send_signal(run_id, signal_name)
        rid = format_run_id(run_id)
        reply = self._host(self._remote[run_id]).agent.call("signal", runs={rid: str(signal_name)})
        return bool((reply.get("runs") or {}).get(rid))

    def remove(self, run_id):
        key = self._remote.pop(run_id, None)
        if key is not None:
            self._host(key).remove.add(format_run_id(run_id))
            for known in (self._seen, self._sent_at):
                known.pop(run_id, None)
            self._never_sent.discard(run_id)
            self._stops.discard(run_id)
            self._host(key).stops.pop(run_id, None)
            self._host(key).warned.discard(run_id)
        super().remove(run_id)

    def close(self):
        self._closing.set()
        for starts in list(self._senders.values()):
            starts.put(None)
        for host in list(self._hosts.values()):
            host.wake.set()
            host.agent.close()
            host.watcher.close()
        super().close()
