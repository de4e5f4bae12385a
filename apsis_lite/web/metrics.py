"""``GET /metrics``: the server's figures in Prometheus's text format, through ``prometheus_client``.

Two kinds of figure. What the database and the engine hold now (runs by
state, runs not yet finished by job, jobs, the engine's health, the sizes
of the database and its WAL, pending actions, the latest sanity findings)
is read when Prometheus scrapes, by a custom collector, with bounded
queries. What happens over time (starts, finished runs, start lateness,
run durations, engine pass times, event-loop lag, actions done and
failed) is counted as it happens, in counters and histograms. Run changes
reach the counters through a store listener that only queues the run id:
the runs are read, in batches, when the queue is drained (every couple of
seconds in the server, and at each scrape), never on the engine's path.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from apsis_lite.engine.sanity_checks import KINDS, start_lateness
from apsis_lite.model.runs import FINISHED, STATES
from apsis_lite.web.backend import backend

log = logging.getLogger("apsis_lite.web")

# Seconds; start lateness is milliseconds when all is well, minutes when it is not.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400)
PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
# Run changes queued for the counters at most (a scrape or the drain empties it long before).
QUEUE_LIMIT = 200_000
# Runs read per query while draining.
DRAIN_BATCH = 500
# How often the event-loop lag is sampled, and the queue drained every so many samples.
LAG_INTERVAL = 0.5
DRAIN_EVERY = 4

bp = Blueprint("metrics", __name__)

# No ``*_created`` series beside each counter and histogram: twice the lines, and
# Prometheus has no use for them (the process start time says when counting began).
disable_created_metrics()


def job_label(job_id) -> str:
    """A run's job as a label: inline ad hoc jobs (a new id each) share one, ``adhoc``."""
    return "adhoc" if job_id.startswith("adhoc/") else job_id


class Metrics:
    """One server's metrics: its registry, the counters fed as things happen, the collector
    that reads the rest at scrape time. ``store`` is a read-only store."""

    def __init__(self, config, store, engine, sanity=None):
        self.config = config
        self.store = store
        self.engine = engine
        self.sanity = sanity
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.started = Counter("apsis_runs_started", "Runs started (entered starting) since the server started",
                               ["job"], registry=registry)
        self.finished = Counter("apsis_runs_finished", "Runs that finished since the server started, by the "
                                "state they ended in", ["job", "state"], registry=registry)
        self.lateness = Histogram("apsis_run_start_lateness_seconds", "From a run's due time to its program's "
                                  "start, not counting time it waited for conditions, resources or a pause",
                                  buckets=LATENESS_BUCKETS, registry=registry)
        self.duration = Histogram("apsis_run_duration_seconds", "How long finished runs ran",
                                  ["state"], buckets=DURATION_BUCKETS, registry=registry)
        self.pass_time = Histogram("apsis_engine_pass_seconds", "Time the engine spent in each pass",
                                   buckets=PASS_BUCKETS, registry=registry)
        self.loop_lag = Histogram("apsis_event_loop_lag_seconds", "How late a timer on the server's event "
                                  f"loop fired (sampled every {LAG_INTERVAL:g} s)", buckets=LAG_BUCKETS,
                                  registry=registry)
        self.actions = Counter("apsis_actions", "Actions done (outcome done) or failed (outcome failed); "
                               "source run: a run's actions, sanity: sanity_actions", ["source", "type", "outcome"],
                               registry=registry)
        registry.register(CurrentFigures(self))
        ProcessCollector(registry=registry)
        self._changes = deque(maxlen=QUEUE_LIMIT)

    # -- fed as things happen -------------------------------------------------------------

    def watch(self, writer, engine=None, actions=None, sanity=None):
        """Listen to the writer store's run changes, the engine's passes, the run actions'
        and the sanity actions' outcomes (each where given)."""
        writer.add_listener(self.on_change)
        if engine is not None:
            engine.pass_listeners.append(self.pass_time.observe)
        if actions is not None:
            actions.listeners.append(lambda kind, ok: self.action_done("run", kind, ok))
        if sanity is not None:
            sanity.actions.listeners.append(lambda kind, ok: self.action_done("sanity", kind, ok))

    def on_change(self, run_id, old, new):
        """Store listener (after each commit): queue the changes counted; nothing read here."""
        if new in ("starting", "running") or (new in FINISHED and old is not None and old not in FINISHED):
            self._changes.append((run_id, old, new))

    def action_done(self, source, kind, ok):
        self.actions.labels(source, kind, "done" if ok else "failed").inc()

    def drain(self):
        """Count the queued run changes, reading their runs in batches."""
        while self._changes:
            batch = [self._changes.popleft() for _ in range(min(DRAIN_BATCH, len(self._changes)))]
            try:
                runs = self.store.runs_by_ids([rid for rid, _, _ in batch])
            except Exception:  # the database cannot be read now: these changes go uncounted
                log.warning("metrics: could not read %d changed runs", len(batch), exc_info=True)
                return
            for rid, old, new in batch:
                run = runs.get(rid)
                if run is not None:
                    self._count(run, old, new)

    def _count(self, run, old, new):
        job = job_label(run.job_id)
        if new == "starting":
            self.started.labels(job).inc()
            return
        if new == "running" or (old == "starting" and "running" not in run.times):
            lateness = start_lateness(run)
            if lateness is not None:
                self.lateness.observe(lateness)
        if new in FINISHED:
            self.finished.labels(job, new).inc()
            begun = run.times.get("running", run.times.get("starting"))
            if begun is not None:
                elapsed = run.meta.get("elapsed") if run.meta else None
                end = run.times.get(new, run.time_updated)
                self.duration.labels(new).observe(max(0.0, elapsed if elapsed is not None else end - begun))

    def run_forever(self, stop_event, clock=time.perf_counter):
        """Sample the event loop's lag and drain the queue until ``stop_event`` is set."""
        n = 0
        while True:
            start = clock()
            if stop_event.wait(LAG_INTERVAL):
                return
            self.loop_lag.observe(max(0.0, clock() - start - LAG_INTERVAL))
            n += 1
            if n % DRAIN_EVERY == 0:
                self.drain()

    def render(self, accept="") -> tuple[bytes, str]:
        """(body, content type) in the format the ``Accept`` header asks for: Prometheus's
        text format, or OpenMetrics."""
        self.drain()
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class CurrentFigures:
    """The figures read at scrape time, each with a bounded query or a file's size."""

    def __init__(self, metrics):
        self.m = metrics

    def describe(self):
        return []  # read only when collected: registering must not query the database

    def collect(self):
        m = self.m
        yield from self._runs(m.store)
        engine = m.engine
        yield _gauge("apsis_jobs", "Jobs loaded from the jobs folder", len(engine.jobs))
        yield _gauge("apsis_job_errors", "Job files that failed to load, and jobs that cannot be planned",
                     len(engine.job_errors))
        health = engine.health
        yield _gauge("apsis_engine_healthy", "1 while the engine passes and can write the database, else 0",
                     0 if health.problems() else 1)
        if health.last_pass is not None:
            yield _gauge("apsis_engine_last_pass_timestamp_seconds", "When the engine last completed a pass",
                         health.last_pass)
        yield _gauge("apsis_actions_pending", "Run actions due and not yet done", m.store.pending_action_count())
        path = m.config.db_path
        yield _gauge("apsis_database_bytes", "Size of the database file", _size(path))
        yield _gauge("apsis_database_wal_bytes", "Size of the database's write-ahead log", _size(path + "-wal"))
        yield from self._sanity(m.sanity)

    @staticmethod
    def _runs(store):
        counts = store.stats()["runs_by_state"]
        by_state = GaugeMetricFamily("apsis_runs", "Runs stored, by state", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        yield _gauge("apsis_runs_waiting", "Runs waiting for their conditions, resources or a pause",
                     counts.get("waiting", 0))
        unfinished = GaugeMetricFamily("apsis_runs_unfinished", "Runs not yet finished, by job and state",
                                       labels=["job", "state"])
        merged = {}
        for job_id, state, n in store.unfinished_by_job():
            key = (job_label(job_id), state)
            merged[key] = merged.get(key, 0) + n
        for (job, state), n in sorted(merged.items()):
            unfinished.add_metric([job, state], n)
        yield unfinished

    @staticmethod
    def _sanity(sanity):
        if sanity is None:
            return
        report = sanity.last
        findings = GaugeMetricFamily("apsis_sanity_findings", "Findings of the latest sanity check, by kind",
                                     labels=["kind"])
        counts = report.counts() if report is not None else dict.fromkeys(KINDS, 0)
        for kind in KINDS:
            findings.add_metric([kind], counts[kind])
        yield findings
        if report is not None:
            yield _gauge("apsis_sanity_last_check_timestamp_seconds", "When the latest sanity check ran",
                         report.checked_at)


def _gauge(name, doc, value):
    return GaugeMetricFamily(name, doc, value=value)


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@bp.get("/metrics")
def metrics():
    """The metrics, for Prometheus (Authorization: Bearer with an API token or the metrics token)."""
    body, content_type = backend().metrics.render(request.headers.get("Accept", ""))
    return Response(body, headers={"Content-Type": content_type})
