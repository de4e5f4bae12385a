"""The overview, a job's history picture and the dark palette in a real browser (Debian's
Chromium under Playwright) against a real server. One browser and one server for the module."""

import re

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect

EVIL = "evil/<script>x"
JOBS = {
    "fails": "program: {type: shell, command: 'exit 3'}\n",
    "coin": "params: [code]\nprogram: {type: shell, command: 'exit {{ code }}'}\n",
    "sleeper": "program: {type: shell, command: 'sleep 60'}\n",
    "held": "program: {type: no-op}\nschedule: {type: interval, interval: 1h, phase: 17m}\n",
    EVIL: "program: {type: shell, command: 'exit 1'}\n",
}


@pytest.fixture(scope="module")
def server():
    with served(JOBS) as srv:
        runs = {
            "failed": srv.post("/api/v1/runs", {"job_id": "fails"}),
            "coin": [srv.post("/api/v1/runs", {"job_id": "coin", "args": {"code": c}}) for c in "010"],
            "evil": srv.post("/api/v1/runs", {"job_id": EVIL}),
            "running": srv.post("/api/v1/runs", {"job_id": "sleeper"}),
        }
        srv.post("/api/v1/jobs/held/pause", {"reason": "maintenance <b>window</b>", "mode": "hold"})
        for run in [runs["failed"], runs["evil"], *runs["coin"]]:
            srv.wait_run(run["run_id"])
        srv.wait_run(runs["running"]["run_id"], states=("running",))
        srv.runs_made = runs
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server, request, tmp_path):
    with logged_in_page(browser, server, request, tmp_path) as pg:
        yield pg


def test_the_overview_shows_failed_running_paused_and_next_and_its_links_filter_the_list(server, page):
    made = server.runs_made
    page.goto(server.url + "/")
    expect(page).to_have_title(re.compile("^Overview"))
    failed = page.locator("section[aria-labelledby=ov-failed]")
    expect(failed.locator(f'li[data-run="{made["failed"]["run_id"]}"]')).to_contain_text("no success since")
    expect(failed.locator(f'li[data-run="{made["coin"][1]["run_id"]}"]')).to_contain_text("succeeded")  # coin recovered
    running = page.locator("section[aria-labelledby=ov-running]")
    expect(running.locator(f'li[data-run="{made["running"]["run_id"]}"]')).to_contain_text("sleeper")
    expect(page.locator('section[aria-labelledby=ov-paused] li[data-paused="held"]')).to_contain_text(
        "maintenance <b>window</b>")
    expect(page.locator('section[aria-labelledby=ov-due] li[data-due="held"]')).to_be_visible()
    expect(page.locator(".verdict")).to_contain_text("Needs attention")

    page.locator('a[data-count="failure"]').click()
    expect(page).to_have_url(re.compile(r"/runs\?state=failure&since="))
    expect(page.locator("#runs-results tr[data-run]")).to_have_count(3)  # "fails", coin's exit 1, the evil one
    expect(page.locator(f'tr[data-run="{made["failed"]["run_id"]}"]')).to_be_visible()
    page.go_back()
    page.locator('a[data-count="running"]').click()
    expect(page).to_have_url(re.compile(r"/runs\?state=starting&state=running&state=stopping$"))
    expect(page.locator("#runs-results tr[data-run]")).to_have_count(1)
    expect(page.locator(f'tr[data-run="{made["running"]["run_id"]}"]')).to_be_visible()


def test_a_jobs_picture_has_one_mark_per_run_in_outcome_colours(server, page):
    coin = server.runs_made["coin"]
    page.goto(server.url + "/jobs/coin")
    runs = page.locator("#job-history svg a.hist-run")
    expect(runs).to_have_count(3)
    assert [runs.nth(i).get_attribute("data-run") for i in range(3)] == [r["run_id"] for r in coin]
    fills = [runs.nth(i).locator(".hist-mark").evaluate("e => getComputedStyle(e).fill") for i in range(3)]
    assert fills[0] == fills[2] and fills[0] != fills[1]  # success, failure, success
    assert fills[0] == "rgb(31, 157, 85)" and fills[1] == "rgb(217, 45, 32)"
    expect(page.locator("#job-history .rates")).to_contain_text("67% succeeded, last 24 h (2 of 3)")
    # The picture says in words what it shows.
    expect(page.get_by_role("img", name=re.compile("Recent runs of coin"))).to_be_visible()
    page.locator(f'#job-history a.hist-run[data-run="{coin[1]["run_id"]}"]').click()
    expect(page).to_have_url(re.compile(rf"/runs/{coin[1]['run_id']}$"))


def test_dark_mode_changes_the_background_and_states_stay_apart(server, page):
    page.goto(server.url + "/jobs/coin")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert light == "rgb(255, 255, 255)" and dark == "rgb(20, 23, 28)"
    marks = page.locator("#job-history .hist-mark")
    fills = {marks.nth(i).evaluate("e => getComputedStyle(e).fill") for i in range(3)}
    assert len(fills) == 2 and dark not in fills
    page.goto(server.url + "/")
    states = page.locator(".state")
    expect(states.first).to_be_visible()
    colours = set(page.evaluate("""() => ['success', 'failure', 'error', 'running', 'waiting'].map(s => {
        const e = document.createElement('span'); e.className = 'state state-' + s; document.body.append(e);
        const c = getComputedStyle(e).color; e.remove(); return c; })"""))
    assert len(colours) == 5


def test_a_job_id_with_a_script_tag_stays_text(server, page):
    seen = []
    page.on("dialog", lambda d: (seen.append(d.message), d.dismiss()))
    page.goto(server.url + "/")
    evil = page.locator(f'section[aria-labelledby=ov-failed] li[data-run="{server.runs_made["evil"]["run_id"]}"]')
    expect(evil.locator(".ov-job")).to_have_text(EVIL)
    page.goto(server.url + "/jobs/evil/%3Cscript%3Ex")
    expect(page.locator("h1")).to_contain_text(EVIL)
    expect(page.locator("#job-history svg title").first).to_have_text(f"Recent runs of {EVIL}")
    assert page.locator("script:not([src])").count() == 0 and not seen
