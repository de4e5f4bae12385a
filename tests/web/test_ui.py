"""The pages and their htmx fragments, through Flask's test client over a real store and engine.

The engine is stepped with explicit times (no server loop), its programs are
no-ops or never started, so every page shows a known state.
"""

import re

import pytest

from apsis_lite.web.format import TimeFormat, ago, complete_utf8, render_markdown

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOSTILE = '<script>alert("x")</script>'


JOBS = {
    "team/report": """
        params: [date]
        program: {type: no-op}
        schedule: {type: cron, expr: "0 16 * * Mon-Fri", tz: America/New_York}
        metadata:
          description: |
            Builds the **daily** report. <b>raw html</b> [bad](javascript:alert(1))
          labels: [reports, daily]
    """,
    "tick": """
        params: [time]
        program: {type: no-op}
        schedule: {type: interval, interval: 10s}
    """,
}


@pytest.fixture
def world(app_world):
    """A factory for (client, engine, writer store, clock) over job files given as {id: yaml}."""
    return lambda jobs=JOBS: app_world(jobs, T0)


def hx(target=None, **headers):
    h = {"HX-Request": "true", **headers}
    if target:
        h["HX-Target"] = target
    return h


def text_of(resp):
    return resp.get_data(as_text=True)


def finished_run(engine, job_id="tick", args=None):
    """A run of a no-op job taken to success by the engine."""
    run = engine.submit(job_id, args or {"time": "t1"})
    engine.tick(engine.clock())
    return engine.store.get_run(run.run_id)


# -- runs page ----------------------------------------------------------------------


def test_runs_page_lists_runs_newest_first_with_states_and_buttons(world):
    client, engine, _store, clock = world()
    done = finished_run(engine)
    clock.t = T0 + 1
    engine.tick(clock.t)  # plans "tick" slots: scheduled runs
    resp = client.get("/runs")
    assert resp.status_code == 200
    body = text_of(resp)
    assert "<title>Runs" in body
    assert 'id="runs-results"' in body and 'hx-trigger="every 2s"' in body
    ids = [int(x) for x in re.findall(r'data-run="r(\d+)"', body)]
    assert ids == sorted(ids, reverse=True) and done.run_id in ids
    row = body[body.index(f'data-run="r{done.run_id}"'):]
    row = row[:row.index("</tr>")]
    assert 'class="state state-success">success<' in row
    assert f"/runs/r{done.run_id}/op/rerun" in row and "hx-confirm=" in row
    assert "Skip" not in row
    scheduled = max(ids)
    srow = body[body.index(f'data-run="r{scheduled}"'):]
    srow = srow[:srow.index("</tr>")]
    assert ">scheduled<" in srow and "op/skip" in srow and "op/start" in srow


def test_runs_filter_fragment_and_state_chips(world):
    client, engine, _store, _clock = world()
    finished_run(engine, "team/report", {"date": "2027-01-14"})
    finished_run(engine, "tick", {"time": "a"})
    engine.tick(T0 + 1)
    resp = client.get("/runs?q=report", headers=hx("runs-results"))
    assert resp.status_code == 200
    body = text_of(resp)
    assert body.lstrip().startswith('<div id="runs-results"')  # just the fragment
    assert "<html" not in body
    assert "team/report" in body and ">tick<" not in body
    # The poll keeps the filter: it asks for the same URL.
    assert 'hx-get="/runs?q=report"' in body
    body = text_of(client.get("/?state=success&q=date%3D2027-01-14"))
    assert "team/report" in body and 'value="success" checked' in body
    body = text_of(client.get("/?state=scheduled"))
    assert "team/report" not in body and "tick" in body


def test_bad_filter_is_a_readable_400(world):
    client, *_ = world()
    resp = client.get("/?q=state:bogus")
    assert resp.status_code == 400
    body = text_of(resp)
    assert "unknown state &#39;bogus&#39;" in body or "unknown state 'bogus'" in body
    assert "Traceback" not in body and "<html" in body
    frag = client.get("/?q=nosuchfield:x", headers=hx("runs-results"))
    assert frag.status_code == 400
    assert "unknown field" in text_of(frag) and 'id="runs-results"' in text_of(frag)
    bad_time = client.get("/?since=yesterday-ish")
    assert bad_time.status_code == 400 and "since: not a time" in text_of(bad_time)


def test_runs_keyset_pages(world):
    client, engine, _store, _clock = world()
    runs = [engine.submit("tick", {"time": str(i)}, when=T0 + 3600) for i in range(60)]
    body = text_of(client.get("/?q=job:tick"))
    shown = [int(x) for x in re.findall(r'data-run="r(\d+)"', body)]
    assert len(shown) == 50 and shown[0] == runs[-1].run_id
    older = re.search(r'href="([^"]*cursor=r\d+[^"]*)">Older', body).group(1).replace("&amp;", "&")
    body2 = text_of(client.get(older))
    shown2 = [int(x) for x in re.findall(r'data-run="r(\d+)"', body2)]
    assert shown2 == [r.run_id for r in reversed(runs[:10])]
    assert "Newest" in body2 and "Older" not in body2


def test_reruns_are_grouped_under_their_original(world):
    client, engine, store, clock = world()
    first = finished_run(engine)
    resp = client.post(f"/runs/r{first.run_id}/op/rerun?view=group", headers=hx())
    assert resp.status_code == 200
    frag = text_of(resp)
    assert frag.lstrip().startswith(f'<tbody class="group" data-group="{first.run_id}" data-open')
    rerun_id = int(re.search(r'class="rerun" data-run="r(\d+)"', frag).group(1))
    assert store.get_run(rerun_id).rerun_of == first.run_id
    assert "1 rerun, latest scheduled" in frag
    engine.tick(clock.t)
    body = text_of(client.get("/runs"))
    # One group holds both: the original row first, then the rerun, in one tbody.
    group = body[body.index(f'data-group="{first.run_id}"'):]
    group = group[:group.index("</tbody>")]
    assert group.index(f'data-run="r{first.run_id}"') < group.index(f'data-run="r{rerun_id}"')
    assert body.count(f'data-run="r{rerun_id}"') == 1


def test_operation_refused_by_state_is_a_readable_409(world):
    client, engine, *_ = world()
    done = finished_run(engine)
    resp = client.post(f"/runs/r{done.run_id}/op/stop?view=group", headers=hx())
    assert resp.status_code == 409
    assert resp.headers["HX-Retarget"] == "#messages"
    assert f"run r{done.run_id} is success; only a running run can be stopped" in text_of(resp)
    # Without htmx: a whole page saying the same.
    page = client.post(f"/runs/r{done.run_id}/op/stop")
    assert page.status_code == 409 and "<html" in text_of(page) and "only a running run" in text_of(page)


def test_skip_and_mark_update_the_row(world):
    client, engine, store, _clock = world()
    later = engine.submit("tick", {"time": "x"}, when=T0 + 600)
    frag = text_of(client.post(f"/runs/r{later.run_id}/op/skip?view=group", headers=hx()))
    assert ">skipped<" in frag and store.get_run(later.run_id).state == "skipped"
    frag = text_of(client.post(f"/runs/r{later.run_id}/mark/failure?view=summary", headers=hx()))
    assert 'id="run-summary"' in frag and ">failure<" in frag
    assert store.get_run(later.run_id).state == "failure"


def test_state_changes_need_post_and_same_origin(world):
    client, engine, store, _ = world()
    later = engine.submit("tick", {"time": "x"}, when=T0 + 600)
    assert client.get(f"/runs/r{later.run_id}/op/skip").status_code == 405
    resp = client.post(f"/runs/r{later.run_id}/op/skip", headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403 and "another site" in text_of(resp)
    assert store.get_run(later.run_id).state == "scheduled"


# -- run page -------------------------------------------------------------------------


def test_run_page_shows_facts_timeline_output_and_links(world):
    client, engine, _store, _clock = world()
    done = finished_run(engine)
    rid = f"r{done.run_id}"
    body = text_of(client.get(f"/runs/{rid}"))
    assert f"Run {rid}" in body and ">success<" in body
    assert f'href="/api/v1/runs/{rid}"' in body and f'href="/api/v1/runs/{rid}/output"' in body
    # The full timeline, one row per log entry, in order.
    timeline = body[body.index('class="timeline"'):]
    states = re.findall(r'class="state state-(\w+)"', timeline[:timeline.index("</table>")])
    assert states == ["scheduled", "waiting", "starting", "success"]
    assert "no-op: nothing to run" in body
    # A finished run is not polled; its output is complete.
    assert 'id="run-summary" class="summary" >' in body or 'hx-get="/runs/' + rid + '/summary"' not in body
    assert "End of output" in body


def test_unknown_run_is_a_404_page(world):
    client, *_ = world()
    resp = client.get("/runs/r999999")
    assert resp.status_code == 404
    body = text_of(resp)
    assert "<html" in body and "Not found" in body and "no run r999999" in body
    assert client.get("/runs/nonsense").status_code == 400
    assert client.get("/no/such/page").status_code == 404
    # The API keeps answering JSON.
    api = client.get("/api/v1/runs/r999999")
    assert api.status_code == 404 and api.get_json() == {"error": "no run r999999"}


def test_run_summary_polls_while_live_and_output_tail(world):
    client, engine, _store, _clock = world()
    later = engine.submit("tick", {"time": "x"}, when=T0 + 600)
    rid = f"r{later.run_id}"
    frag = text_of(client.get(f"/runs/{rid}/summary", headers=hx("run-summary")))
    assert f'hx-get="/runs/{rid}/summary" hx-trigger="every 2s"' in frag
    tail = text_of(client.get(f"/runs/{rid}/tail?offset=0", headers=hx("output")))
    assert 'id="output-tail"' in tail and 'hx-swap-oob="true"' in tail and "every 1s" in tail
    assert "Waiting for the run to start" in tail


def test_output_of_a_finished_run_is_escaped_and_tailed_from_an_offset(world):
    client, engine, store, _clock = world()
    done = finished_run(engine)
    out = tmp_output = None
    import os
    import tempfile
    fd, tmp_output = tempfile.mkstemp()
    os.write(fd, f"line one\n{HOSTILE}\n".encode())
    os.close(fd)
    try:
        store.store_output(done.run_id, tmp_output, 30, 0)
    finally:
        os.unlink(tmp_output)
    body = text_of(client.get(f"/runs/r{done.run_id}"))
    assert HOSTILE not in body and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body
    out = text_of(client.get(f"/runs/r{done.run_id}/tail?offset=9", headers=hx("output")))
    assert out.startswith("&lt;script&gt;") and "End of output" in out and "every 1s" not in out


# -- hostile text -----------------------------------------------------------------------


def test_hostile_job_id_args_and_description_stay_inert(world):
    hostile_id = "evil/<script>x"
    client, engine, _store, clock = world({
        hostile_id: f"""
            params: [p]
            program: {{type: no-op}}
            metadata:
              description: '{HOSTILE} and <img src=x onerror=alert(1)> [link](javascript:alert(1))'
              labels: ['<b>lab</b>']
        """,
    })
    run = engine.submit(hostile_id, {"p": HOSTILE})
    engine.tick(clock.t)
    pages = [client.get("/"), client.get("/jobs"), client.get(f"/runs/r{run.run_id}"),
             client.get("/jobs/evil/%3Cscript%3Ex"), client.get("/?q=" + HOSTILE)]
    for resp in pages:
        body = text_of(resp)
        assert "<script>x" not in body and HOSTILE not in body, resp.request.path
        assert "<img" not in body and "<b>lab" not in body
        assert 'href="javascript:' not in body
    job_page = text_of(pages[3])
    assert pages[3].status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in job_page  # raw HTML shown as text
    assert "evil/&lt;script&gt;x" in job_page


def test_markdown_is_rendered_and_sanitized():
    html = str(render_markdown("**bold** <i>raw</i> [a](javascript:alert(1)) [b](https://example.org)"))
    assert "<strong>bold</strong>" in html
    assert "&lt;i&gt;raw&lt;/i&gt;" in html
    assert 'href="javascript' not in html and '<a href="https://example.org">b</a>' in html


# -- jobs ----------------------------------------------------------------------------------


def test_jobs_page_tree_labels_last_run_next_due_and_load_errors(world):
    client, engine, _store, _clock = world({**JOBS, "broken": "program: [unclosed\n"})
    finished_run(engine, "team/report", {"date": "2027-01-14"})
    body = text_of(client.get("/jobs"))
    assert 'data-key="folder:team"' in body  # folders as a tree
    assert 'href="/jobs?q=reports">reports</a>' in body
    report = body[body.index('href="/jobs/team/report"'):]
    report = report[:report.index("</li>")]
    assert ">success<" in report and "last <a" in report
    # next due: 16:00 New York on the next weekday (2027-01-15 is a Friday).
    assert "next <time" in report and "2027-01-15T21:00:00+00:00" in report
    assert "failed to load" in body and "broken.yaml" in body
    frag = text_of(client.get("/jobs?q=daily", headers=hx("jobs-results")))
    assert frag.lstrip().startswith('<div id="jobs-results"')
    assert "team/report" in frag and "/jobs/tick" not in frag
    assert "1 job" in frag


def test_job_page_schedules_next_times_recent_runs_and_run_now(world):
    client, _engine, store, _clock = world()
    resp = client.get("/jobs/team/report")
    assert resp.status_code == 200
    body = text_of(resp)
    assert "<strong>daily</strong>" in body  # Markdown
    assert "&lt;b&gt;raw html&lt;/b&gt;" in body
    assert "cron &#39;0 16 * * Mon-Fri&#39; in America/New_York" in body
    due = body[body.index('<ol class="due">'):]
    due = due[:due.index("</ol>")]
    assert due.count("<li>") == 10
    assert 'name="arg:date"' in body and "Run now" in body
    # Run now: a new run of the job with the typed args; htmx is sent to its page.
    resp = client.post("/jobs/team/report/run", data={"arg:date": "2027-01-01", "when": "now"}, headers=hx())
    assert resp.status_code == 204
    run_id = int(resp.headers["HX-Redirect"].rsplit("/r", 1)[1])
    run = store.get_run(run_id)
    assert run.job_id == "team/report" and run.args == {"date": "2027-01-01"}
    assert f'data-run="r{run_id}"' in text_of(client.get("/jobs/team/report"))


def test_run_now_at_a_time_in_a_zone_and_bad_input(world):
    client, _engine, store, _clock = world()
    resp = client.post("/jobs/tick/run", data={"arg:time": "x", "when": "at", "at": "2027-02-01T09:30",
                                               "tz": "Europe/Paris"})
    assert resp.status_code == 303
    run = store.get_run(int(resp.headers["Location"].rsplit("/r", 1)[1]))
    assert run.time_schedule == 1801470600.0  # 2027-02-01 08:30 UTC
    bad = client.post("/jobs/tick/run", data={"arg:time": "x", "when": "at", "at": "2027-02-01T09:30",
                                              "tz": "Mars/Olympus"}, headers=hx())
    assert bad.status_code == 400 and "unknown time zone" in text_of(bad)
    assert client.get("/jobs/no/such/job").status_code == 404


# -- ad hoc ---------------------------------------------------------------------------------


def test_adhoc_page_and_submissions(world):
    client, _engine, store, _clock = world()
    body = text_of(client.get("/adhoc"))
    assert 'name="command"' in body and 'name="job_id"' in body and 'name="tz"' in body
    resp = client.post("/adhoc", data={"kind": "command", "command": "echo hi", "when": "at",
                                       "at": "2027-01-15 10:00", "tz": "UTC"}, headers=hx())
    assert resp.status_code == 204
    run = store.get_run(int(resp.headers["HX-Redirect"].rsplit("/r", 1)[1]))
    assert run.job_id.startswith("adhoc/") and run.time_schedule == T0 + 7200
    assert run.program["command"] == "echo hi"
    resp = client.post("/adhoc", data={"kind": "job", "job_id": "team/report", "args": "date = 2027-01-02\n",
                                       "when": "now"})
    run = store.get_run(int(resp.headers["Location"].rsplit("/r", 1)[1]))
    assert run.args == {"date": "2027-01-02"}
    bad = client.post("/adhoc", data={"kind": "job", "job_id": "team/report", "args": "oops", "when": "now"},
                      headers=hx())
    assert bad.status_code == 400 and "args, line 1: expected name=value" in text_of(bad)
    missing = client.post("/adhoc", data={"kind": "job", "job_id": "team/report", "when": "now"}, headers=hx())
    assert missing.status_code == 400 and "missing arg &#39;date&#39;" in text_of(missing)
    empty = client.post("/adhoc", data={"kind": "command", "command": " ", "when": "now"}, headers=hx())
    assert empty.status_code == 400 and "type a shell command" in text_of(empty)


# -- time zone -------------------------------------------------------------------------------


def test_zone_cookie_changes_every_time_shown(world):
    client, engine, _store, _clock = world()
    run = engine.submit("tick", {"time": "x"}, when=T0)
    assert "2027-01-15 08:00:00" in text_of(client.get(f"/runs/r{run.run_id}"))
    resp = client.post("/ui/zone", data={"tz": "Asia/Tokyo"}, headers=hx())
    assert resp.status_code == 204 and resp.headers["HX-Refresh"] == "true"
    assert "tz=Asia/Tokyo" in resp.headers["Set-Cookie"]
    body = text_of(client.get(f"/runs/r{run.run_id}"))
    assert "2027-01-15 17:00:00" in body and 'value="Asia/Tokyo"' in body
    bad = client.post("/ui/zone", data={"tz": "Nowhere/Special"}, headers=hx())
    assert bad.status_code == 400 and "unknown time zone" in text_of(bad)
    zones = text_of(client.get("/ui/zones", headers=hx("zones")))
    assert '<option value="Europe/London">' in zones
    ping = client.get("/ui/ping")  # the heartbeat: it brings the health banner up to date
    assert ping.status_code == 200 and 'id="health" hx-swap-oob="true"' in text_of(ping)


def test_time_tooltip_gives_local_utc_job_zone_and_elapsed():
    tf = TimeFormat("Europe/Paris", now=T0 + 180)
    title = tf.title(T0, job_zone="America/New_York", elapsed=12.4)
    assert title.splitlines() == [
        "2027-01-15 09:00:00 CET (Europe/Paris)",
        "2027-01-15 08:00:00 UTC",
        "2027-01-15 03:00:00 EST (job's zone, America/New_York)",
        "3 min ago",
        "ran 12.4 s",
    ]
    assert ago(-90) == "in 1 min 30 s" and ago(5) == "5 s ago"


def test_complete_utf8_keeps_split_characters_for_later():
    text = "é€😀".encode()
    assert complete_utf8(text) == len(text)
    assert complete_utf8(text[:-1]) == len(text) - 4
    assert complete_utf8(text[:3]) == 2
    assert complete_utf8(b"abc") == 3


def test_static_files_and_no_inline_script(world):
    client, engine, *_ = world()
    finished_run(engine)
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    for path in ["/", "/jobs", "/jobs/tick", "/runs/r1", "/adhoc", "/runs/r999"]:
        body = text_of(client.get(path))
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", body, re.DOTALL)
        assert scripts and all('src="/static/' in attrs and not inner.strip() for attrs, inner in scripts), path
        assert not re.search(r"\son[a-z]+=", body), path   # no inline event handlers
        assert "hx-on" not in body and "js:" not in body, path


def test_a_waiting_run_says_what_it_waits_for(world):
    client, engine, store, clock = world({
        "first": "program: {type: no-op}\n",
        "second": """
            program: {type: no-op}
            condition:
              - {type: dependency, job_id: first, states: success}
        """,
    })
    run = engine.submit("second", {})
    engine.tick(clock.t)
    assert store.get_run(run.run_id).state == "waiting"
    body = text_of(client.get(f"/runs/r{run.run_id}"))
    why = body[body.index("<dt>Waiting for</dt>"):]
    why = why[:why.index("</dd>")]
    assert "first" in why and "waiting since" in why
    assert "/op/skip" in body and "/op/start" in body


def test_rerun_from_the_run_page_links_the_new_run(world):
    client, engine, store, _clock = world()
    done = finished_run(engine)
    frag = text_of(client.post(f"/runs/r{done.run_id}/op/rerun?view=summary", headers=hx()))
    new_id = int(re.search(r'Rerun as <a href="/runs/r(\d+)">', frag).group(1))
    assert store.get_run(new_id).rerun_of == done.run_id
    group = frag[frag.index("Rerun group"):]
    assert f"<strong>r{done.run_id}</strong>" in group and f'href="/runs/r{new_id}"' in group
    # The new run's page links back to its original.
    assert f'href="/runs/r{done.run_id}"' in text_of(client.get(f"/runs/r{new_id}"))


def test_a_jobs_recent_runs_keep_polling_as_an_embedded_list(world):
    client, engine, _store, _clock = world()
    finished_run(engine)
    body = text_of(client.get("/jobs/tick"))
    poll = re.search(r'<div id="runs-results"[^>]*hx-get="([^"]+)"', body).group(1).replace("&amp;", "&")
    assert "limit=20" in poll and 'hx-sync=' not in body[body.index('<div id="runs-results"'):][:400]
    frag = text_of(client.get(poll, headers=hx("runs-results")))
    again = re.search(r'<div id="runs-results"[^>]*hx-get="([^"]+)"', frag).group(1).replace("&amp;", "&")
    assert again == poll and "hx-sync=" not in frag[:400]
    # The runs page's own list keeps in step with its filter form.
    assert 'hx-sync="#runs-filter:drop"' in text_of(client.get("/runs"))


def test_a_rerun_group_spanning_two_pages_is_listed_once_and_newer_pages_back(world):
    client, engine, store, _clock = world()
    original = finished_run(engine, "tick", {"time": "orig"})
    # 55 runs after it, then a rerun of it: newest, so the group sits on the first page.
    others = [engine.submit("tick", {"time": str(i)}, when=T0 + 3600) for i in range(55)]
    resp = client.post(f"/runs/r{original.run_id}/op/rerun?view=group", headers=hx())
    assert resp.status_code == 200
    rerun_id = int(re.search(r'class="rerun" data-run="r(\d+)"', text_of(resp)).group(1))
    page1 = text_of(client.get("/?q=job:tick"))
    assert page1.count(f'data-group="{original.run_id}"') == 1 and f'data-run="r{rerun_id}"' in page1
    older = re.search(r'href="([^"]*cursor=r\d+[^"]*)">Older', page1).group(1).replace("&amp;", "&")
    page2 = text_of(client.get(older))
    # The original's own run falls on page 2 by id, but its group was shown on page 1.
    assert f'data-group="{original.run_id}"' not in page2 and f'data-run="r{original.run_id}"' not in page2
    shown2 = [int(x) for x in re.findall(r'data-run="r(\d+)"', page2)]
    cursor = int(re.search(r"cursor=r(\d+)", older).group(1))
    below, _ = store.query_runs("job_id = 'tick'", [], cursor=cursor, limit=50)
    assert others[0].run_id in shown2
    assert shown2 == [r.run_id for r in below if r.run_id != original.run_id]
    # Newer goes back one page: here, the newest.
    newer = re.search(r'href="([^"]*)" rel="prev">&larr; Newer', page2).group(1).replace("&amp;", "&")
    assert text_of(client.get(newer)).count(f'data-group="{original.run_id}"') == 1


def test_newer_is_keyset_backwards_from_a_deep_page(world):
    client, engine, _store, _clock = world()
    runs = [engine.submit("tick", {"time": str(i)}, when=T0 + 3600) for i in range(130)]
    ids = [r.run_id for r in reversed(runs)]  # newest first
    pages, url = [], "/?q=job:tick"
    while url:
        body = text_of(client.get(url))
        pages.append(([int(x) for x in re.findall(r'data-run="r(\d+)"', body)], body))
        m = re.search(r'href="([^"]*cursor=r\d+[^"]*)">Older', body)
        url = m and m.group(1).replace("&amp;", "&")
    assert [p for p, _ in pages] == [ids[:50], ids[50:100], ids[100:]]
    assert "Newer" not in pages[0][1]
    back = re.search(r'href="([^"]*)" rel="prev">&larr; Newer', pages[2][1]).group(1).replace("&amp;", "&")
    assert "cursor=" in back
    body = text_of(client.get(back))
    assert [int(x) for x in re.findall(r'data-run="r(\d+)"', body)] == ids[50:100]
    back2 = re.search(r'href="([^"]*)" rel="prev">&larr; Newer', body).group(1).replace("&amp;", "&")
    assert [int(x) for x in re.findall(r'data-run="r(\d+)"', text_of(client.get(back2)))] == ids[:50]


# -- pausing from the pages ---------------------------------------------------------


def _section(body, element_id):
    start = body.index(f'id="{element_id}"')
    return body[start:body.index("</div>" if element_id != "job-pause" else "</section>", start)]


def test_pause_all_and_resume_from_the_header_without_a_page_reload(world):
    client, engine, _store, _clock = world()
    me = client.application.extensions["apsis_auth"].local().name
    control = _section(text_of(client.get("/")), "pause-control")
    assert "Pause all" in control and 'hx-post="/pause"' in control and "hx-confirm=" in control
    assert 'name="reason"' in control and 'value="hold"' in control and 'name="csrf_token"' in control

    resp = client.post("/pause", data={"reason": HOSTILE, "mode": "hold", "next": "/"},
                       headers=hx("pause-control"))
    assert resp.status_code == 200
    body = text_of(resp)
    pause = engine.job_pause(None)
    assert (pause.reason, pause.mode, pause.user) == (HOSTILE, "hold", me)
    # The control, now Resume, and the banner swapped in out of band: no reload.
    assert body.startswith('<div id="pause-control"') and ">Resume</button>" in body
    assert '<div id="pauses" hx-swap-oob="true">' in body
    assert HOSTILE not in body and "All jobs paused (hold): &lt;script&gt;" in body
    assert f"by {me}" in body
    # Every page shows it from now on.
    assert "All jobs paused (hold)" in text_of(client.get("/jobs"))

    resp = client.post("/resume", data={"next": "/"}, headers=hx("pause-control"))
    assert resp.status_code == 200 and "Pause all" in text_of(resp)
    assert "pause-banner" not in text_of(resp) and engine.pauses == []


def test_pause_forms_without_htmx_redirect_back_and_bad_input_is_refused(world):
    client, engine, _store, _clock = world()
    resp = client.post("/pause", data={"reason": "upgrade", "next": "/jobs/tick"})
    assert (resp.status_code, resp.headers["Location"]) == (303, "/jobs/tick")
    assert engine.job_pause(None).mode == "skip"  # the default
    resp = client.post("/resume", data={"next": "//elsewhere.example/"})
    assert (resp.status_code, resp.headers["Location"]) == (303, "/")
    resp = client.post("/pause", data={"reason": "  "}, headers=hx("pause-control"))
    assert resp.status_code == 400 and "reason: required" in text_of(resp)
    assert resp.headers["HX-Retarget"] == "#messages"
    resp = client.post("/pause", data={"reason": "x", "mode": "later"})
    assert resp.status_code == 400 and "mode: expected one of skip, hold" in text_of(resp)
    resp = client.post("/resume", headers=hx("pause-control"))
    assert resp.status_code == 409 and "there is no global pause" in text_of(resp)
    assert engine.pauses == []


def test_pause_and_resume_a_job_from_its_page(world):
    client, engine, _store, _clock = world()
    me = client.application.extensions["apsis_auth"].local().name
    section = _section(text_of(client.get("/jobs/tick")), "job-pause")
    assert "Not paused." in section and 'hx-post="/jobs/tick/pause"' in section and "hx-confirm=" in section

    resp = client.post("/jobs/tick/pause", data={"reason": "vendor outage", "mode": "skip"},
                       headers=hx("job-pause"))
    assert resp.status_code == 200
    body = text_of(resp)
    assert body.startswith('<section id="job-pause"')
    assert f"Paused (skip): vendor outage, by {me}" in body and 'hx-post="/jobs/tick/resume"' in body
    assert "Job tick paused (skip): vendor outage" in body  # the banner, out of band
    assert engine.job_pause("tick").user == me and engine.job_pause(None) is None
    assert "Paused (skip): vendor outage" in text_of(client.get("/jobs/tick"))

    resp = client.post("/jobs/tick/resume", headers=hx("job-pause"))
    assert resp.status_code == 200 and "Not paused." in text_of(resp)
    assert engine.job_pause("tick") is None
    assert client.post("/jobs/nope/pause", data={"reason": "x"}).status_code == 404


def test_a_viewer_sees_the_pause_banner_but_no_pause_buttons(world):
    client, engine, _store, _clock = world()
    engine.pause(None, "upgrade", "hold", user="ann")
    engine.pause("tick", "outage", "skip", user="ann")
    users = client.application.extensions["apsis_auth"].users_file
    users.add("vera", "viewer", "correct horse")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {users.issue_token('vera')}"
    body = text_of(client.get("/jobs/tick"))
    assert "All jobs paused (hold): upgrade, by ann" in body
    assert "Paused (skip): outage, by ann" in body
    assert "<form" not in _section(body, "pause-control")
    assert "<form" not in _section(body, "job-pause")
    for path in ("/resume", "/jobs/tick/resume"):
        resp = client.post(path, headers=hx("pause-control"))
        assert resp.status_code == 403 and "vera is a viewer" in text_of(resp)
    assert len(engine.pauses) == 2
