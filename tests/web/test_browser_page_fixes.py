"""Page details a new user trips over, checked in a real browser: Debian's Chromium, driven by
Playwright, against one real server for the module.

Calendar cells in time order with short labels; a day timeline that reaches midnight and shows
millisecond runs; a runs list whose Args column keeps its width beside a program preview; the ad
hoc form's boxes; "Run now" runs that are the job's own; ISO date fields; tooltips; the calendar
filter's errors in place; the icon; one request per Enter in a filter; the used login link page.
A failing test leaves a screenshot and the page's HTML in its tmp folder.
"""

import re
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect

JOBS = {
    "team/nightly/zeta": 'program: {type: no-op}\nschedule: {type: daily, daytime: "01:00"}',
    "team/nightly/alpha": 'program: {type: no-op}\nschedule: {type: daily, daytime: "23:00"}',
    "tick": "program: {type: no-op}\nschedule: {type: interval, interval: 5m}",
    "quick": "program: {type: no-op}",
    "report": "params: [day]\nprogram: {type: shell, command: 'echo report for {{ day }}'}",
}
LONG_COMMAND = "echo first line of a long ad hoc program && " + "sleep 0 && " * 12 + "echo done\necho second line"


@pytest.fixture(scope="module")
def server():
    with served(JOBS) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server, request, tmp_path):
    with logged_in_page(browser, server, request, tmp_path) as pg:
        yield pg


def tomorrow():
    return (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()


def test_month_cells_list_entries_by_time_labelled_by_what_tells_them_apart(server, page):
    day = tomorrow()
    page.goto(f"{server.url}/calendar?date={day}")
    cell = page.locator(f'td[data-date="{day}"]')
    due = cell.locator("li.cal-due")
    expect(due).to_have_count(3)
    assert due.evaluate_all("els => els.map(e => e.dataset.due)") == ["tick", "team/nightly/zeta",
                                                                       "team/nightly/alpha"]
    times = cell.locator(".cal-time").all_inner_texts()
    assert times == sorted(times) and times[0] == "00:00"
    # Labelled by what tells the jobs apart; the title keeps the whole id.
    assert cell.locator(".cal-job").all_inner_texts() == ["tick", "zeta", "alpha"]
    assert due.nth(1).get_attribute("title").startswith("team/nightly/zeta:")


def test_day_timeline_reaches_midnight_and_shows_a_run_of_milliseconds(server, page):
    page.goto(f"{server.url}/calendar/day?date={tomorrow()}&q=job:tick")
    row = page.locator('g.tl-row[data-job="tick"]')
    expect(row).to_have_count(1)
    expect(row.locator(".tl-counts")).to_have_text("288 due")
    # Due every 5 minutes: one band from 00:00 to 23:55, not 288 separate marks.
    marks = row.locator(".tl-due, .tl-due-band")
    assert marks.count() <= 3
    ends = marks.evaluate_all("els => els.map(e => e.getBBox()).map(b => b.x + b.width)")
    track_end = 230 + 960 * (23 * 3600 + 55 * 60) / 86400
    assert max(ends) >= track_end - 0.5
    run = server.post("/api/v1/runs", {"job_id": "quick"})
    server.wait_run(run["run_id"])
    page.goto(f"{server.url}/calendar/day?q=job:quick")
    bar = page.locator(f'a.tl-bar[data-run="{run["run_id"]}"] rect')
    expect(bar).to_have_count(1)
    assert bar.bounding_box()["width"] >= 6


def test_run_now_runs_are_the_jobs_own_and_typed_programs_read_as_written(server, page):
    page.goto(f"{server.url}/jobs/report")
    page.locator('input[name="arg:day"]').fill("2026-12-03")
    page.locator(".run-now button.primary").click()
    expect(page).to_have_url(re.compile(r"/runs/r\d+$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".facts dd").first).to_have_text("report")
    adhoc = server.post("/api/v1/runs", {"program": LONG_COMMAND})
    server.wait_run(adhoc["run_id"])
    page.goto(f"{server.url}/runs/{adhoc['run_id']}")
    expect(page.locator(".facts dd").first).to_contain_text("(ad hoc)")
    program = page.locator("section pre.code").inner_text()
    assert re.search(r"command: \|-?\n  echo first line.*\n  echo second line\n", program), program
    assert "'" not in program and "\n\n" not in program
    page.goto(server.url + "/runs")
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(1)
    assert page.locator(f'tr[data-run="{run_id}"] .adhoc-program').count() == 0
    expect(page.locator(f'tr[data-run="{adhoc["run_id"]}"] .adhoc-program')).to_contain_text("echo first line")


def test_runs_list_keeps_args_readable_beside_a_program_preview(server, page):
    server.post("/api/v1/runs", {"program": LONG_COMMAND})
    run = server.post("/api/v1/runs", {"job_id": "report", "args": {"day": "2026-12-03-and-a-long-suffix"}})
    server.wait_run(run["run_id"])
    page.set_viewport_size({"width": 1100, "height": 900})  # a laptop's window
    page.goto(server.url + "/runs")
    expect(page.locator("tr .adhoc-program").first).to_be_visible()
    args = page.locator(f'tr[data-run="{run["run_id"]}"] td.col-args')
    char_w = args.locator("code.arg").evaluate(
        "e => { const c = document.createElement('canvas').getContext('2d');"
        " c.font = getComputedStyle(e).font; return c.measureText('0').width; }")
    assert args.bounding_box()["width"] >= 12 * char_w
    for row in page.locator("tr[data-run]").all():
        tops = {round(b.bounding_box()["y"]) for b in row.locator(".actions > .btn, .actions > details").all()}
        assert len(tops) <= 1, row.get_attribute("data-run")


def test_ad_hoc_form_boxes_share_a_width_and_date_fields_are_iso(server, page):
    page.goto(server.url + "/adhoc")
    what = page.locator("form.adhoc fieldset").first.bounding_box()
    when = page.locator("fieldset.when").bounding_box()
    assert what["width"] >= 500 and abs(what["width"] - when["width"]) <= 2
    assert page.locator('input[name="command"]').bounding_box()["width"] >= 0.9 * what["width"] - 40
    at = page.locator('input[name="at"]')
    assert at.evaluate("e => e.type") == "text" and at.get_attribute("placeholder") == "YYYY-MM-DD HH:MM"
    page.goto(server.url + "/runs")
    since = page.locator("#since")
    assert since.evaluate("e => e.type") == "text"
    since.fill("12/03/2026")
    since.press("Enter")
    assert since.evaluate("e => !e.validity.valid") and "YYYY-MM-DD" in since.evaluate("e => e.validationMessage")
    since.fill("2026-12-03 10:00")
    since.press("Enter")
    expect(page).to_have_url(re.compile(r"since=2026-12-03(\+|%20)10%3A00"))
    expect(since).to_have_value("2026-12-03 10:00")
    # A hand-made URL with a date the server cannot read says so in the list.
    page.goto(server.url + "/runs?since=2026-02-30")
    expect(page.locator("#runs-results .message.error")).to_contain_text("since")


def test_time_tooltips_name_utc_once(server, page):
    run = server.post("/api/v1/runs", {"job_id": "quick"})
    server.wait_run(run["run_id"])
    page.goto(server.url + "/runs")
    title = page.locator(f'tr[data-run="{run["run_id"]}"] td.col-time time').get_attribute("title")
    assert "UTC (UTC)" not in title and title.count("UTC") == 1, title


def test_a_bad_calendar_filter_is_shown_in_the_filter_box(server, page):
    for path in ("/calendar", "/calendar/day"):
        resp = page.goto(f"{server.url}{path}?q=state:bogus")
        assert resp.status == 400
        expect(page.locator(".calendar-filter .filter-error")).to_contain_text("unknown state 'bogus'")
        expect(page.locator("#cal-q")).to_have_value("state:bogus")
        expect(page.get_by_role("link", name="Calendar")).to_be_visible()
    page.locator("#cal-q").fill("job:tick")
    page.locator("#cal-q").press("Enter")
    expect(page.locator("svg.timeline")).to_have_count(1)
    expect(page.locator(".filter-error")).to_have_count(0)


def test_favicon_answers_and_is_linked(server, browser, page):
    fresh = browser.new_context()  # not logged in: the icon is public, like the login page
    try:
        resp = fresh.request.get(server.url + "/favicon.ico")
        assert resp.status == 200 and resp.headers["content-type"] == "image/x-icon"
        assert resp.body()[:4] == b"\0\0\1\0"
    finally:
        fresh.close()
    page.goto(server.url + "/runs")
    assert page.locator('link[rel="icon"]').get_attribute("href") == "/favicon.ico"


def test_enter_in_a_filter_sends_one_request(server, page):
    page.goto(server.url + "/runs")
    sent = []
    page.on("request", lambda r: sent.append(r) if "q=tick" in r.url and "x-apsis-poll" not in r.headers else None)
    box = page.locator("#q")
    box.press_sequentially("tick", delay=20)
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"q=tick"))
    page.wait_for_timeout(1000)  # past the typing pause, when a late request would go
    assert len(sent) == 1, [r.url for r in sent]


def test_a_used_login_link_says_how_to_get_a_new_one(server, browser):
    link = server.login_link()
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(link)
        expect(pg.get_by_role("link", name="Runs")).to_be_visible()
        pg.context.clear_cookies()
        resp = pg.goto(link)
        assert resp.status == 403
        expect(pg.locator(".message.error")).to_contain_text("apsis-lite login-link")
        assert urllib.parse.urlsplit(pg.url).path == "/login"
    finally:
        context.close()
