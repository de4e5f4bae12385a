"""The calendar in a real browser: Debian's Chromium, driven by Playwright, against a real server.

A job due every few seconds gives both a finished run and upcoming due
times today. A failing test leaves a screenshot and the page's HTML in its
tmp folder.
"""

import re

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect


@pytest.fixture
def server():
    with served({"beat": """
        program: {type: no-op}
        schedule: {type: interval, interval: 3s}
    """}) as srv:
        yield srv


@pytest.fixture
def page(request, tmp_path, server):
    with chromium() as browser, logged_in_page(browser, server, request, tmp_path) as pg:
        yield pg


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
    assert row.locator(".tl-due, .tl-due-band").count() > 0
    expect(page.locator("svg.timeline line.tl-now")).to_have_count(1)
