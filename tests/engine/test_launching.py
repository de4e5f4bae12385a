"""A batch of due runs is started in chunks: each committed, then handed to the agent.

The real engine, store and launcher (programs run by the real agent); the
launcher is wrapped only to look, from a connection of its own, at what the
database holds each time the agent is asked to start runs.
"""

import time

import apsw

from conftest import Clock, _kill_agents

from apsis_lite.config import load_config
from apsis_lite.engine.core import Engine
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.engine.launching import FIRST_CHUNK, MAX_CHUNK
from apsis_lite.model.jobs import job_from_jso
from apsis_lite.store.database import Store

T0 = 1_800_000_000.0  # a multiple of 10 s
RUNS = 150


class Watching(LocalLauncher):
    """The real launcher, noting the committed state of every run as each start is asked for."""

    def __init__(self, config):
        super().__init__(config)
        self.asks = []  # (run ids asked for, {run_id: committed state})

    def _look(self, run_ids):
        conn = apsw.Connection(self.config.db_path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            states = dict(conn.execute("SELECT run_id, state FROM runs"))
        finally:
            conn.close()
        self.asks.append((list(run_ids), states))

    def start(self, run_ids):
        self._look(run_ids)
        return super().start(run_ids)

    def send_starts(self, run_ids):
        self._look(run_ids)
        return super().send_starts(run_ids)


def test_the_first_runs_of_a_batch_start_before_the_rest_is_committed(tmp_path):
    config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path),
                         horizon=5, max_age=3600, sweep_interval=1000)
    store = Store(config.db_path)
    launcher = Watching(config)
    engine = Engine(config, store, launcher, clock=Clock(T0))
    jobs = {f"j{i:03d}": job_from_jso({"program": "true", "schedule": {"type": "interval", "interval": "10s"}},
                                      f"j{i:03d}") for i in range(RUNS)}
    engine.set_jobs(jobs, [])

    def finished():
        runs, _ = store.query_runs(limit=1000)
        return sum(run.state == "success" or (tmp_path / f"data/runs/r{run.run_id}/result.json").exists()
                   for run in runs)

    try:
        engine.recover()
        for _ in range(1000):
            if engine.tick(T0) > T0:
                break
        asked = [rid for run_ids, _ in launcher.asks for rid in run_ids]
        assert len(asked) == RUNS and len(set(asked)) == RUNS  # each run handed over once
        for run_ids, states in launcher.asks:
            # Nothing is handed to the agent before its 'starting' is committed.
            assert all(states[rid] == "starting" for rid in run_ids), states
        first_ids, first_states = launcher.asks[0]
        assert len(first_ids) == FIRST_CHUNK
        # When the first programs were asked for, the rest of the batch was not yet written.
        assert sum(state != "scheduled" for state in first_states.values()) == FIRST_CHUNK
        assert max(len(run_ids) for run_ids, _ in launcher.asks) <= MAX_CHUNK
        # Every program ran: the agent's answers were all read, none was a failure.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and finished() < RUNS:
            time.sleep(0.05)
        assert finished() == RUNS
        assert not any(run.state == "error" for run in store.query_runs(limit=1000)[0])
    finally:
        launcher.close()
        store.close()
        _kill_agents(tmp_path / "data")
