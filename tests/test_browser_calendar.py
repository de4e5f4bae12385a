"""The calendar in a real browser: Debian's Chromium, driven by Playwright, against a real server.

A job due every few seconds gives both a finished run and upcoming due
times today. A failing test leaves a screenshot and the page's HTML in its
tmp folder.
"""

import re
import shutil

import pytest
from conftest import Server, _kill_agents, short_tmpdir, write_job
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def server():
    jobs_dir, data_dir = short_tmpdir("al-cj-"), short_tmpdir("al-cd-")
    write_job(jobs_dir, "beat", """
        program: {type: no-op}
        schedule: {type: interval, interval: 3s}
    """)
    srv = Server(jobs_dir, data_dir)
    srv.start()
    yield srv
    try:
        srv.stop()
    finally:
        _kill_agents(data_dir)
        shutil.rmtree(jobs_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def page(request, tmp_path, server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        pg.goto(server.login_link())  # logged in, as after the desktop start
        failed_before = request.session.testsfailed
        yield pg
        if request.session.testsfailed > failed_before:
            pg.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "failure.html").write_text(pg.content())
            print(f"screenshot of the failed page: {tmp_path / 'failure.png'}")
        browser.close()


def test_calendar_shows_a_finished_run_and_upcoming_times_then_the_day(server, page):
    run = server.wait_for(lambda: next((r for r in server.runs("job:beat") if r["state"] == "success"), None),
                          what="a finished run of beat")
    page.goto(server.url + "/")
    page.get_by_role("link", name="Calendar").click()
    expect(page).to_have_url(re.compile(r"/calendar$"))
    today = page.locator("td.cal-today")
    expect(today).to_have_count(1)
    expect(today.locator(f'[data-run="{run["run_id"]}"]')).to_contain_text("ok")
    expect(today.locator('[data-due="beat"]')).to_contain_text("due")
    today.locator(".cal-date").click()
    expect(page).to_have_url(re.compile(r"/calendar/day\?date=\d{4}-\d\d-\d\d"))
    row = page.locator('g.tl-row[data-job="beat"]')
    expect(row.locator(f'a.tl-bar[data-run="{run["run_id"]}"]')).to_have_count(1)
    assert row.locator(".tl-due").count() > 0
    expect(page.locator("svg.timeline line.tl-now")).to_have_count(1)
