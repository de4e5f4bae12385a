"""A stop or a timeout ends the run's whole process group, through a real server.

The program leaves a grandchild in its group that ignores SIGTERM, then dies
on SIGTERM itself: the grandchild must get SIGKILL when the grace period
ends, and the run must be recorded as ended only once it is gone.
"""

import os
import time
from pathlib import Path

import pytest

from conftest import write_job

GRACE = 1.5
MARGIN = 2.5

# The grandchild ignores SIGTERM before it writes its pid; bash dies on
# SIGTERM in ``wait``.
STUBBORN = """\
params: [pidfile]
program:
  type: shell
  command: |
    sh -c 'trap "" TERM; echo $$ > "$APSIS_ARG_pidfile.tmp"; mv "$APSIS_ARG_pidfile.tmp" "$APSIS_ARG_pidfile"; exec sleep 100' &
    wait
  stop: {{signal: SIGTERM, grace_period: {grace}s}}
  {timeout}
"""


def process_gone(pid):
    """No such process, or only a zombie (the container's init may be slow to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def start_stubborn(srv, pidfile):
    run = srv.post("/api/v1/runs", {"job_id": "stubborn", "args": {"pidfile": str(pidfile)}, "time": "now"})
    rid = run["run_id"]
    grandchild = int(srv.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(),
                                  what="the grandchild's pid"))
    return rid, grandchild


def watch_until_ended(srv, rid, grandchild, limit):
    """Poll the run until it ends; returns (seconds until the grandchild was
    gone, seconds until the run ended), measured from now. Fails if the run
    is ever seen ended while the grandchild lives."""
    t0 = time.monotonic()
    gone_after = None
    while time.monotonic() - t0 < limit:
        state = srv.get(f"/api/v1/runs/{rid}")["state"]
        gone = process_gone(grandchild)  # Looked at after the state: ended implies gone.
        now = time.monotonic() - t0
        if gone and gone_after is None:
            gone_after = now
        if state in ("success", "failure", "error"):
            assert gone, f"{rid} recorded as {state} while its grandchild {grandchild} still runs"
            return gone_after, now
        time.sleep(0.02)
    raise AssertionError(f"{rid} did not end within {limit} s\n{srv.log()}")


@pytest.fixture
def pidfile(data_dir):
    path = data_dir / "grandchild.pid"
    yield path
    # If the test failed, leave no stubborn process behind.
    if path.exists():
        try:
            os.kill(int(path.read_text()), 9)
        except (OSError, ValueError):
            pass


def test_stop_kills_a_grandchild_that_ignores_sigterm(server, jobs_dir, pidfile):
    write_job(jobs_dir, "stubborn", STUBBORN.format(grace=GRACE, timeout=""))
    server.start()
    rid, grandchild = start_stubborn(server, pidfile)
    server.wait_run(rid, states=("running",))

    server.post(f"/api/v1/runs/{rid}/stop")
    time.sleep(GRACE / 3)
    # The program died on SIGTERM at once; the grandchild ignored it and the
    # run waits for it.
    assert not process_gone(grandchild)
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "stopping"

    gone_after, ended_after = watch_until_ended(server, rid, grandchild, GRACE + MARGIN + 10)
    assert GRACE / 3 + gone_after < GRACE + MARGIN
    assert gone_after <= ended_after
    run = server.get(f"/api/v1/runs/{rid}")
    # The program itself ended by its stop signal: the stop did what was asked (apsis's rule).
    assert (run["state"], run["signal"]) == ("success", "SIGTERM")
    last = server.get(f"/api/v1/runs/{rid}/log")["items"][-1]
    assert last["state"] == "success"
    assert last["message"] == ("killed by SIGTERM (stopped, SIGKILL after the grace period "
                               "to 1 process it left in its group): it was asked to stop with that signal")
    # The CLI's account of the run says so too.
    assert "SIGKILL after the grace period to 1 process it left in its group" in server.cli("show", rid).stdout


def test_timeout_kills_a_grandchild_that_ignores_sigterm(server, jobs_dir, pidfile):
    timeout = 1.0
    write_job(jobs_dir, "stubborn", STUBBORN.format(
        grace=GRACE, timeout=f"timeout: {{duration: {timeout}s, signal: SIGTERM}}"))
    server.start()
    t0 = time.monotonic()
    rid, grandchild = start_stubborn(server, pidfile)
    waited = time.monotonic() - t0

    gone_after, ended_after = watch_until_ended(server, rid, grandchild, timeout + GRACE + MARGIN + 10)
    assert waited + gone_after < timeout + GRACE + MARGIN
    assert waited + gone_after >= timeout + GRACE - 0.1  # Not before the grace period ended.
    run = server.get(f"/api/v1/runs/{rid}")
    assert (run["state"], run["signal"]) == ("failure", "SIGTERM")
    assert run["elapsed"] >= timeout + GRACE  # The run ends when its group does.
    assert server.get(f"/api/v1/runs/{rid}/log")["items"][-1]["message"] == (
        "killed by SIGTERM (timed out, SIGKILL after the grace period to 1 process it left in its group)")


def test_a_program_that_exits_by_itself_leaves_its_background_children(server, jobs_dir, pidfile):
    # No stop, no timeout: the run ends with its program, as under cron.
    write_job(jobs_dir, "background", """\
        params: [pidfile]
        program:
          type: shell
          command: 'sleep 100 & echo $! > "$APSIS_ARG_pidfile"'
          stop: {signal: SIGTERM, grace_period: 30s}
        """)
    server.start()
    run = server.post("/api/v1/runs", {"job_id": "background", "args": {"pidfile": str(pidfile)},
                                       "time": "now"})
    t0 = time.monotonic()
    run = server.wait_run(run["run_id"])
    assert run["state"] == "success"
    assert time.monotonic() - t0 < 5
    assert not process_gone(int(pidfile.read_text()))
