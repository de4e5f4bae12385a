"""The OpenAPI description of the JSON API is true: every route is in it and nothing else, it is a
valid OpenAPI 3.1 document, and a real server answers requests generated from it as it says.

schemathesis generates the requests (valid ones, and ones that break the
description's rules) for every operation and checks each response: its
status is one the operation lists, its body and headers match, and no
request gets a 500.
"""

import json
import shutil
import urllib.request

import pytest
import schemathesis
from conftest import Server, _kill_agents, short_tmpdir, write_job
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from apsis_lite.web.api.description import description, openapi_path, resolve
from apsis_lite.web.auth import UsersFile

METHODS = {"get", "put", "post", "delete", "patch"}
# Generated requests per operation: the whole run stays well under a minute on 2 cores.
MAX_EXAMPLES = 25


def described_operations() -> set:
    return {(path, method.upper()) for path, item in description()["paths"].items()
            for method in item if method in METHODS}


def test_every_api_route_is_described_and_every_description_is_a_route(app_world):
    client, *_ = app_world({}, 1_700_000_000.0)
    routes = {(openapi_path(rule.rule), method)
              for rule in client.application.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = described_operations()
    assert not routes - described, f"API routes missing from openapi.yaml: {sorted(routes - described)}"
    assert not described - routes, f"openapi.yaml describes what is not a route: {sorted(described - routes)}"


# -- a real server, for the rest -------------------------------------------------------------

JOBS = {
    "hello": "program: {type: no-op}\n",
    "reports/daily": "params: [date]\nprogram: {type: no-op}\n",
    "reports/weekly": "params: [date]\nprogram: {type: no-op}\n",
}


@pytest.fixture(scope="module")
def api_server():
    """A server with three jobs and a few runs: finished, and scheduled far ahead."""
    jobs_dir, data_dir = short_tmpdir("al-jobs-"), short_tmpdir("al-data-")
    for job_id, text in JOBS.items():
        write_job(jobs_dir, job_id, text)
    server = Server(jobs_dir, data_dir).start()
    try:
        done = server.post("/api/v1/runs", {"job_id": "hello"})
        server.wait_run(done["run_id"])
        server.post("/api/v1/runs", {"job_id": "reports/daily", "args": {"date": "2026-11-25"}})
        server.post("/api/v1/runs", {"job_id": "reports/weekly", "args": {"date": "2026-11-23"},
                                     "time": "2099-01-01T00:00:00Z"})
        yield server
    finally:
        server.stop()
        _kill_agents(data_dir)
        shutil.rmtree(jobs_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_description_is_served_to_anyone_and_is_valid_openapi_3_1(api_server):
    with urllib.request.urlopen(api_server.url + "/api/v1/openapi.json", timeout=10) as resp:  # no token
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        served = json.loads(resp.read())
    assert served == json.loads(json.dumps(description()))
    assert served["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(served).validate()  # against the OpenAPI 3.1 schema; raises if invalid
    # The rest of the API still needs a token.
    assert api_server.request("GET", "/api/v1/stats", token=False)[0] == 401


@pytest.fixture(scope="module")
def api_schema(api_server):
    schema = schemathesis.openapi.from_url(api_server.url + "/api/v1/openapi.json")
    schema.config.update(base_url=api_server.url + "/api/v1",
                         headers={"Authorization": f"Bearer {api_server.token()}"})
    return schema


def harmless_program(program):
    """A program of the same form that does nothing (``true``); what the description says is
    no program is left as it is, for the server to refuse."""
    if isinstance(program, str):
        return "true"
    words = program if isinstance(program, list) else []
    if words and all(isinstance(w, (str, int, float)) and not isinstance(w, bool) for w in words) \
            and words[0] != "":
        return ["true"]
    if isinstance(program, dict):
        return {"type": "no-op"}
    return program


def harmless(case):
    """``case`` made safe to send: any program it would run is ``true``, any action dropped,
    and a wait for output short (a scheduled run's output never comes)."""
    body = case.body if isinstance(case.body, dict) else {}
    if "program" in body:
        body["program"] = harmless_program(body["program"])
    job = body.get("job")
    if isinstance(job, dict):
        job.pop("actions", None)
        if "program" in job:
            job["program"] = harmless_program(job["program"])
    if case.query and "wait" in case.query:
        case.query["wait"] = 0.1


# One Hypothesis test per operation and mode, driven here rather than through schemathesis'
# pytest plugin (whose parametrize does not work with pytest 9).
# Operations whose valid input JSON Schema cannot tell from invalid (a run filter's terms, an
# inline job definition, args that must be the job's params): for these a 400 to a request the
# description admits is not a failure; its body must still match.
RULES_BEYOND_SCHEMA = {("/runs", "GET"), ("/runs", "POST")}


def generated_cases() -> list:
    """(path, method, mode) to test: valid requests for every operation, and requests that break
    its rules for each operation that has rules to break (query parameters or a body)."""
    cases = []
    for path, method in sorted(described_operations()):
        cases.append((path, method, GenerationMode.POSITIVE))
        operation = description()["paths"][path][method.lower()]
        if "requestBody" in operation or any(resolve(p)["in"] == "query" for p in operation.get("parameters", [])):
            cases.append((path, method, GenerationMode.NEGATIVE))
    return cases


@pytest.mark.parametrize("path, method, mode", generated_cases())
def test_the_server_answers_as_described(api_server, api_schema, path, method, mode):
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def answers(case):
        harmless(case)
        excluded = [positive_data_acceptance] if (path, method) in RULES_BEYOND_SCHEMA else []
        case.call_and_validate(excluded_checks=excluded)

    answers()
    assert "Traceback" not in api_server.log()


def operation(schema, path, method):
    return schema[path][method]


def test_refusals_match_the_description(api_server, api_schema):
    """The errors generated requests rarely reach: 401, 403 (a viewer), 404, 409, 413."""
    import requests

    users = UsersFile(str(api_server.data_dir / "users.json"))
    users.add("viv", "viewer", "long enough")
    viewer = users.issue_token("viv", "test")
    url, token = api_server.url + "/api/v1", api_server.token()
    run_id = api_server.runs("job:hello")[0]["run_id"]
    checks = [
        ("/stats", "GET", {}, None, 401),
        ("/runs/{run_id}/skip", "POST", {"Authorization": f"Bearer {viewer}"}, None, 403),
        ("/runs/{run_id}", "GET", {"Authorization": f"Bearer {token}"}, None, 404),
        ("/runs/{run_id}/skip", "POST", {"Authorization": f"Bearer {token}"}, None, 409),
        ("/pause", "POST", {"Authorization": f"Bearer {token}"}, b"x" * (1 << 21), 413),
    ]
    for path, method, headers, body, status in checks:
        rid = "r999999" if status == 404 else run_id
        resp = requests.request(method, url + path.replace("{run_id}", rid), headers=headers, data=body,
                                timeout=10)
        assert resp.status_code == status, (path, resp.status_code, resp.text)
        operation(api_schema, path, method).validate_response(resp)
