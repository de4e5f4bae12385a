"""The job list's search (``GET /api/v1/jobs?q=``) matches what a job file says, nothing more."""

T0 = 1_796_000_000.0  # 2026-11-30


def test_a_job_without_a_description_is_not_found_by_searching_none(app_world):
    client, *_ = app_world({
        "plain": "program: {type: no-op}\nmetadata: {description: null}\n",
        "told": "program: {type: no-op}\nmetadata: {description: None of these}\n",
    }, T0)
    found = client.get("/api/v1/jobs?q=none").get_json()
    assert [j["job_id"] for j in found["items"]] == ["told"]
