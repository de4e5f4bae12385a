"""``/metrics`` through the real server, read with prometheus_client's own parser; the metrics token."""

import os
import time
import urllib.request
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import write_job


def scrape(server, token=True):
    status, body, headers = server.request("GET", "/metrics", token=token)
    assert status == 200, (status, body)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(families, name, **labels):
    """The value of the sample ``name`` with exactly ``labels`` (None if there is none)."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_metrics_match_the_runs(jobs_dir, data_dir, running):
    write_job(jobs_dir, "ok", 'program: "true"\n')
    write_job(jobs_dir, "bad", """
        program: "exit 4"
        action: {type: command, command: "exit 1", if: {states: [failure]}}
    """)
    soon = datetime.fromtimestamp(time.time() + 90, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_job(jobs_dir, "later", f"""
        program: "true"
        schedule: {{type: explicit, times: ["{soon}"]}}
    """)  # within the horizon: planned, and not due during the test
    server = running(sanity_failures=2)
    ids = [server.post("/api/v1/runs", {"job_id": job})["run_id"] for job in ("ok", "ok", "ok", "bad", "bad")]
    for rid in ids:
        server.wait_run(rid)
    server.wait_for(lambda: server.get("/api/v1/sanity")["counts"]["failing"] == 1, what="bad failing")
    server.wait_for(lambda: value(scrape(server), "apsis_actions_total", source="run", type="command",
                                  outcome="failed") == 2, what="both failed actions counted")
    m = scrape(server)
    runs = server.runs()
    by_state = {}
    for run in runs:
        by_state[run["state"]] = by_state.get(run["state"], 0) + 1
    for state in ("scheduled", "success", "failure", "running", "error"):
        assert value(m, "apsis_runs", state=state) == by_state.get(state, 0), state
    assert value(m, "apsis_runs_started_total", job="ok") == 3
    assert value(m, "apsis_runs_started_total", job="bad") == 2
    assert value(m, "apsis_runs_finished_total", job="ok", state="success") == 3
    assert value(m, "apsis_runs_finished_total", job="bad", state="failure") == 2
    assert value(m, "apsis_run_duration_seconds_count", state="success") == 3
    assert value(m, "apsis_run_duration_seconds_count", state="failure") == 2
    elapsed = sum(r["elapsed"] for r in runs if r["run_id"] in ids)
    total = value(m, "apsis_run_duration_seconds_sum", state="success") + value(
        m, "apsis_run_duration_seconds_sum", state="failure")
    assert total == pytest.approx(elapsed, abs=1e-6)
    assert value(m, "apsis_run_start_lateness_seconds_count") == 5
    assert 0 <= value(m, "apsis_run_start_lateness_seconds_sum") < 5
    assert value(m, "apsis_run_start_lateness_seconds_bucket", le="+Inf") == 5
    assert value(m, "apsis_runs_unfinished", job="later", state="scheduled") == by_state["scheduled"] == 1
    assert value(m, "apsis_actions_total", source="run", type="command", outcome="failed") == 2
    assert value(m, "apsis_sanity_findings", kind="failing") == 1
    assert value(m, "apsis_sanity_findings", kind="late") == 0
    assert value(m, "apsis_jobs") == 3 and value(m, "apsis_job_errors") == 0
    assert value(m, "apsis_engine_healthy") == 1
    assert value(m, "apsis_engine_pass_seconds_count") > 0
    assert value(m, "apsis_event_loop_lag_seconds_count") >= 0
    db = data_dir / "apsis-lite.db"
    assert value(m, "apsis_database_bytes") == os.stat(db).st_size > 0
    assert value(m, "apsis_database_wal_bytes") >= 0
    assert value(m, "process_resident_memory_bytes") > 0


def test_openmetrics_when_asked(jobs_dir, data_dir, running):
    server = running()
    status, body, headers = server.request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_the_metrics_token_reads_metrics_and_nothing_else(jobs_dir, data_dir, running, tmp_path):
    token_file = tmp_path / "metrics-token"
    token = "m-" + "x" * 30
    token_file.write_text(token + "\n")
    write_job(jobs_dir, "ok", 'program: "true"\n')
    server = running(metrics_token_file=str(token_file))
    assert value(scrape(server, token=token), "apsis_jobs") == 1
    for method, path in (("GET", "/api/v1/runs"), ("GET", "/api/v1/sanity"), ("GET", "/api/v1/stats"),
                         ("GET", "/"), ("GET", "/sanity"), ("POST", "/api/v1/runs")):
        status, body, _ = server.request(method, path, {"job_id": "ok"} if method == "POST" else None, token=token)
        assert status == 403, (method, path, status)
        assert b"the metrics token may read /metrics only" in body
    assert server.runs() == []  # the POST made nothing
    # No token: 401, as for the API (not the login page); a wrong one too. The local token reads it.
    status, body, headers = server.request("GET", "/metrics", token=False)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert b"authentication required" in body
    status, _, _ = server.request("GET", "/metrics", token="not-the-token-at-all")
    assert status == 401
    assert value(scrape(server), "apsis_jobs") == 1
    # Public as before: /api/v1/alive needs no token.
    with urllib.request.urlopen(server.url + "/api/v1/alive") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("content, message", [
    (None, "metrics_token_file: cannot read"),
    ("short", "must hold one token of at least 16 printable characters"),
    ("two words here, long enough", "without spaces"),
])
def test_a_bad_metrics_token_file_stops_the_start(server, data_dir, tmp_path, content, message):
    import yaml
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    config = data_dir / "bad.yaml"
    config.write_text(yaml.safe_dump({"metrics_token_file": str(path)}))
    with pytest.raises(RuntimeError) as exc:
        server.start("--config", str(config), timeout=15)
    assert message in str(exc.value) and "Traceback" not in str(exc.value)
