"""Query parameters through the real server: what an operation does not take is refused with 400
naming it (never ignored), and apsis's parameters of its runs list work as filter terms."""

import json
import re
import urllib.parse

import pytest
from conftest import write_job

from apsis_lite.web.api.description import description

METHODS = {"get", "post", "delete"}
# A value for each path parameter of the description.
PATH_VALUES = {"job_id": "hello", "name": "USR1", "state": "failure"}


@pytest.fixture
def srv(running, jobs_dir):
    write_job(jobs_dir, "hello", "program: {type: no-op}\n")
    for job_id in ("reports/daily", "reports/weekly"):
        write_job(jobs_dir, job_id, "params: [date]\nprogram: {type: no-op}\n")
    write_job(jobs_dir, "data/load", "params: [region]\nprogram: {type: no-op}\n")
    server = running()
    for job_id, args in [("hello", {}), ("reports/daily", {"date": "2026-11-25"}),
                         ("reports/daily", {"date": "2026-11-26"}), ("reports/weekly", {"date": "2026-11-25"}),
                         ("data/load", {"region": "eu"})]:
        server.wait_run(server.post("/api/v1/runs", {"job_id": job_id, "args": args})["run_id"])
    failed = server.runs("job:reports/daily date=2026-11-26")[0]["run_id"]
    server.post(f"/api/v1/runs/{failed}/mark/failure")
    return server


def error(server, method, path):
    status, body, _ = server.request(method, path)
    assert status == 400, (method, path, status, body)
    return json.loads(body)["error"]


def ids(server, query):
    return sorted(r["run_id"] for r in server.get("/api/v1/runs?" + query)["items"])


def test_every_operation_refuses_a_query_parameter_it_does_not_take(srv):
    run_id = srv.runs("job:hello")[0]["run_id"]
    before = srv.runs()
    for path, item in description()["paths"].items():
        for method in set(item) & METHODS:
            url = "/api/v1" + re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], run_id), path)
            message = error(srv, method.upper(), url + "?nonesuch=1&limt=5")
            assert "unknown query parameters 'nonesuch', 'limt'" in message, (method, path, message)
            assert f"for {method.upper()} /api/v1{path}" in message
    # Nothing was done: no run added, skipped or rerun, no pause set.
    assert srv.runs() == before
    assert srv.get("/api/v1/pauses")["items"] == []
    # What an operation takes, it says.
    assert error(srv, "GET", "/api/v1/jobs?limt=5") == (
        "unknown query parameter 'limt' for GET /api/v1/jobs (it takes q, limit, cursor)")
    assert "(it takes none)" in error(srv, "GET", "/api/v1/stats?verbose=1")
    # Sent twice, only one would be read: refused too; and blanks are not an empty (default) value.
    assert error(srv, "GET", "/api/v1/runs?limit=1&limit=2") == "query parameter limit given 2 times; it takes one value"
    assert error(srv, "GET", "/api/v1/jobs?limit=%20") == "limit: not a whole number: ' '"
    assert len(srv.get("/api/v1/runs?limit=&cursor=")["items"]) == 5


def test_apsis_list_parameters_are_filter_terms(srv):
    def same(query, q):
        assert ids(srv, query) == ids(srv, "q=" + urllib.parse.quote(q)), (query, q)
        return ids(srv, query)

    assert len(same("job_id=reports/daily", "job:reports/daily")) == 2
    # As apsis: the one job every word of which begins a word of the id.
    assert same("job_id=daily", "job:reports/daily") == same("job_id=rep+dai", "job:reports/daily")
    assert len(same("state=failure", "state:failure")) == 1
    assert same("state=succ,fail", "state:succ,fail") == same("", "")
    assert len(same("date=2026-11-25", "date=2026-11-25")) == 2
    assert same("_date=2026-11-25", "date=2026-11-25") == same("date=2026-11-25", "date=2026-11-25")
    # Combined with each other and with q: all must match.
    assert len(same("q=reports&date=2026-11-25&job_id=weekly", "reports date=2026-11-25 job:reports/weekly")) == 1
    assert len(same("region=eu&state=success&job_id=load", "region=eu state:success job:data/load")) == 1
    assert same("job_id=hello&date=2026-11-25", "job:hello date=2026-11-25") == []
    # A job since removed: its id taken as it is.
    assert same("job_id=gone/job", "job:gone/job") == []
    # An arg no job or run has, asked for as an arg.
    assert same("_colour=red", "colour=red") == []


def test_apsis_list_parameters_refused_with_the_reason(srv):
    assert error(srv, "GET", "/api/v1/runs?job_id=rep") == (
        "job_id: 'rep' matches 2 jobs (reports/daily, reports/weekly); give the whole id")
    assert "unknown state 'nope'" in error(srv, "GET", "/api/v1/runs?state=nope")
    assert error(srv, "GET", "/api/v1/runs?job_id=") == "job_id: empty"
    # A name that is neither a parameter nor an arg of any job or run: a typo, not a filter.
    message = error(srv, "GET", "/api/v1/runs?limt=5&colour=red")
    assert message.startswith("unknown query parameters 'limt', 'colour' for GET /api/v1/runs (it takes q, since,")
    assert "_NAME=VALUE for any arg" in message
