"""The overview page (``/``) and a job's history picture, through Flask's test client over a
real store and engine stepped with explicit times."""

import re
import urllib.parse

from apsis_lite.web.history_picture import HISTORY_RUNS

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOSTILE = '<script>alert("x")</script>'
EVIL = "evil/<script>x"

JOBS = {
    "coin": """
        params: [code]
        program: {type: no-op}
    """,
    "hourly": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1h, phase: 30m}
    """,
    "minutely": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1m}
    """,
    EVIL: """
        params: [p]
        program: {type: no-op}
    """,
}


def text_of(resp):
    return resp.get_data(as_text=True)


def hx(target):
    return {"HX-Request": "true", "HX-Target": target}


def section(body, heading_id):
    """The HTML of the overview panel headed ``heading_id``."""
    start = body.index(f'aria-labelledby="{heading_id}"')
    return body[start:body.index("</section>", start)]


def tile_href(body, kind):
    href = re.search(rf'<a href="([^"]+)" data-count="{kind}"', body).group(1)
    return href.replace("&amp;", "&")


def tile_count(body, kind):
    return re.search(rf'data-count="{kind}"><span class="tile-count">(\d+)', body).group(1)


def finish(engine, store, job_id, args, state):
    """A run of ``job_id`` taken to success by the engine, then marked ``state`` as an operator would."""
    run = engine.submit(job_id, args)
    engine.tick(engine.clock())
    if state != "success":
        engine.mark(run.run_id, state)
    return store.get_run(run.run_id)


def test_the_overview_answers_is_everything_all_right_with_links_to_the_filtered_list(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    body = text_of(client.get("/"))
    assert "<title>Overview" in body and 'aria-current="page">Overview' in body
    assert "All well" in body

    ok = finish(engine, store, "coin", {"code": "0"}, "success")
    bad = finish(engine, store, "coin", {"code": "1"}, "failure")
    err = finish(engine, store, EVIL, {"p": HOSTILE}, "error")
    engine.pause("hourly", reason=HOSTILE, mode="hold")
    due_soon = engine.submit("coin", {"code": "late"}, when=T0 + 60)
    clock.t = T0 + 300  # the engine stalls: the run due at T0 + 60 is late
    body = text_of(client.get("/"))

    assert "Needs attention" in body and "2 jobs still failing" in body and "in force" in body
    failed = section(body, "ov-failed")
    assert f'data-run="r{bad.run_id}"' in failed and f'data-run="r{err.run_id}"' in failed
    assert f'data-run="r{ok.run_id}"' not in failed
    assert failed.index(f'data-run="r{err.run_id}"') < failed.index(f'data-run="r{bad.run_id}"')  # newest first
    assert "no success since" in failed
    assert tile_count(body, "failure") == "1" and tile_count(body, "error") == "1"
    late = section(body, "ov-late")
    assert tile_count(body, "late") == "1" and f'data-run="r{due_soon.run_id}"' in late
    paused = section(body, "ov-paused")
    assert 'data-paused="hourly"' in paused and 'href="/jobs/hourly"' in paused
    due = section(body, "ov-due")
    assert 'data-due="hourly"' in due  # from its schedule, well beyond the horizon
    assert due.index('data-due="minutely"') < due.index('data-due="hourly"')  # soonest first

    # Hostile text (a job id, a pause reason) is text.
    assert "<script>" not in body and "evil/&lt;script&gt;x" in body and "&lt;script&gt;alert" in body

    # Each count leads to the runs list filtered to what it counted.
    failures = text_of(client.get(tile_href(body, "failure")))
    assert "<title>Runs" in failures
    assert f'data-run="r{bad.run_id}"' in failures
    assert f'data-run="r{ok.run_id}"' not in failures and f'data-run="r{err.run_id}"' not in failures
    late_list = text_of(client.get(tile_href(body, "late")))
    assert f'data-run="r{due_soon.run_id}"' in late_list and f'data-run="r{bad.run_id}"' not in late_list
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(tile_href(body, "late")).query)
    assert query["state"] == ["scheduled"] and query["until"] == ["2027-01-15T08:04:00"]

    # A later success of the job: the failure is shown as recovered.
    again = finish(engine, store, "coin", {"code": "0"}, "success")
    failed = section(text_of(client.get("/")), "ov-failed")
    assert f'then <a href="/runs/r{again.run_id}">r{again.run_id}</a> succeeded' in failed


def test_the_overview_refreshes_as_a_fragment_and_the_old_runs_address_still_works(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    run = finish(engine, store, "coin", {"code": "1"}, "failure")
    frag = client.get("/", headers=hx("overview-results"))
    body = text_of(frag)
    assert frag.status_code == 200 and body.lstrip().startswith("<div id=\"overview-results\"")
    assert "<html" not in body and 'hx-get="/"' in body and "data-poll" in body
    # The runs list, bookmarked or polled at its old address, is still there.
    old = text_of(client.get("/?q=job:coin"))
    assert "<title>Runs" in old and f'data-run="r{run.run_id}"' in old
    assert 'hx-get="/runs?q=job:coin"' in old
    frag = text_of(client.get("/", headers=hx("runs-results")))
    assert frag.lstrip().startswith('<div id="runs-results"')
    assert client.get("/?state=bogus&q=state:bogus").status_code == 400


def test_a_jobs_history_picture_has_a_mark_per_run_in_outcome_colours_durations_and_rates(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    week_old = finish(engine, store, "coin", {"code": "x"}, "failure")
    clock.t = T0 + 3 * 86400
    runs = [finish(engine, store, "coin", {"code": c}, s)
            for c, s in [("0", "success"), ("1", "failure"), ("0", "success"), ("2", "error")]]
    body = text_of(client.get("/jobs/coin"))
    picture = body[body.index('<section id="job-history"'):body.index("</section>", body.index('id="job-history"'))]
    marks = re.findall(r'<a class="hist-run state-(\w+)" data-run="r(\d+)"', picture)
    assert marks == [(s, str(r.run_id)) for r, s in zip([week_old] + runs, ["failure", "success", "failure",
                                                                               "success", "error"])]
    assert picture.count('class="hist-mark"') == 5 and picture.count('class="hist-bar"') == 5
    assert f"<title>r{runs[1].run_id}: failure\ndue " in picture
    assert 'role="img"' in picture and 'aria-labelledby="job-history-title job-history-desc"' in picture
    assert "oldest first: 2 success, 2 failure, 1 error" in picture or "2 failure, 2 success, 1 error" in picture
    # The last day holds the four new runs (2 of 3 outcomes... skipped aside); the week also the old failure.
    assert re.search(r"<strong>50%</strong>\s*succeeded, last 24 h \(2 of 4\)", picture)
    assert re.search(r"<strong>40%</strong>\s*succeeded, last 7 days \(2 of 5\)", picture)
    # The fragment the page polls for.
    frag = text_of(client.get("/jobs/coin", headers=hx("job-history")))
    assert frag.lstrip().startswith('<section id="job-history"') and "<html" not in frag
    assert 'hx-get="/jobs/coin"' in frag


def test_the_picture_is_bounded_and_a_hostile_job_id_and_message_stay_text(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    for i in range(HISTORY_RUNS + 5):
        finish(engine, store, EVIL, {"p": HOSTILE}, "success")
    body = text_of(client.get("/jobs/evil/%3Cscript%3Ex"))
    picture = body[body.index('<section id="job-history"'):]
    assert picture.count('class="hist-mark"') == HISTORY_RUNS
    assert "<script>" not in body and "Recent runs of evil/&lt;script&gt;x" in body
    empty = text_of(client.get("/jobs/hourly"))
    assert "No run of hourly has started yet." in empty and 'class="hist-mark"' not in empty


def test_overview_reads_stop_at_their_caps(app_world):
    _client, engine, store, clock = app_world({"coin": JOBS["coin"]}, T0)
    for _ in range(5):
        finish(engine, store, "coin", {"code": "0"}, "success")
    counts, capped = store.state_counts_between(T0 - 10, T0 + 10, 3)
    assert counts == {"success": 3} and capped
    counts, capped = store.state_counts_between(T0 - 10, T0 + 10, 100)
    assert counts == {"success": 5} and not capped
    counts, capped = store.job_state_counts_between("coin", T0 - 10, T0 + 10, 2)
    assert counts == {"success": 2} and capped
    assert store.overdue_count(T0 + 1000, 1000) == 0


def test_next_due_times_are_kept_until_they_pass_and_follow_a_reload(app_world, tmp_path):
    from apsis_lite.model.jobs import load_jobs_dir
    from apsis_lite.web.next_due import NextDueTimes

    _client, engine, _store, clock = app_world({"hourly": JOBS["hourly"], "minutely": JOBS["minutely"]}, T0)
    times = NextDueTimes()
    first, left = times.soonest(engine, T0 + 1, 5, budget=1)
    assert len(first) == 1 and left == 1  # one job worked out per request at most; the other waits
    due, left = times.soonest(engine, T0 + 1, 5, budget=1)
    assert [(d.job_id, d.t - T0) for d in due] == [("minutely", 60), ("hourly", 1800)] and left == 0
    due, _ = times.soonest(engine, T0 + 61, 5)  # minutely's time passed: its next one
    assert [(d.job_id, d.t - T0) for d in due] == [("minutely", 120), ("hourly", 1800)]
    (tmp_path / "jobs" / "hourly.yaml").write_text("program: {type: no-op}\nschedule: {type: interval, interval: 1h}\n")
    engine.set_jobs(*load_jobs_dir(str(tmp_path / "jobs")))
    due, _ = times.soonest(engine, T0 + 61, 1)
    assert [(d.job_id, d.t - T0) for d in due] == [("minutely", 120)]
    due, _ = times.soonest(engine, T0 + 61, 5)
    assert [(d.job_id, d.t - T0) for d in due] == [("minutely", 120), ("hourly", 3600)]
