"""The pages in a real browser: Debian's Chromium, driven by Playwright, against a real server.

One browser and one server serve the whole module. A failing test leaves a
screenshot and the page's HTML in its tmp folder.
"""

import re
import socket

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    job = """
        program: {type: no-op}
        metadata: {description: "A job for the browser tests."}
    """
    # A fixed port, so that a restarted server is found again by the open page.
    with served({"alpha/load": job, "beta/report": job}, ["--port", str(free_port())]) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server, request, tmp_path):
    with logged_in_page(browser, server, request, tmp_path) as pg:
        pg.on("dialog", lambda dialog: dialog.accept())  # the confirmations
        yield pg


def submit(server, **body):
    return server.post("/api/v1/runs", body)


def test_typing_a_filter_changes_the_list_and_the_url(server, page):
    a = submit(server, job_id="alpha/load")
    b = submit(server, job_id="beta/report")
    server.wait_run(a["run_id"])
    server.wait_run(b["run_id"])
    page.goto(server.url + "/runs")
    rows = page.locator("#runs-results tr[data-run]")
    expect(page.locator(f'tr[data-run="{b["run_id"]}"]')).to_be_visible()
    page.locator("#q").press_sequentially("alpha", delay=30)
    expect(page.locator(f'tr[data-run="{b["run_id"]}"]')).to_have_count(0, timeout=5000)
    expect(page.locator(f'tr[data-run="{a["run_id"]}"]')).to_be_visible()
    assert all("alpha/load" in t for t in rows.locator(".col-job").all_inner_texts())
    expect(page).to_have_url(re.compile(r"[?&]q=alpha"))
    # A bad term says what is wrong instead of a list.
    page.locator("#q").fill("state:bogus")
    expect(page.locator("#runs-results .message.error")).to_contain_text("unknown state 'bogus'")
    # The filter survives the live refresh of the list (polls every 2 s).
    page.locator("#q").fill("beta")
    expect(page.locator(f'tr[data-run="{b["run_id"]}"]')).to_be_visible()
    page.wait_for_timeout(2500)
    expect(page.locator(f'tr[data-run="{a["run_id"]}"]')).to_have_count(0)
    assert page.locator("#q").input_value() == "beta"


def test_stop_a_running_sleep_from_its_page(server, page):
    run = submit(server, program="sleep 300")
    server.wait_run(run["run_id"], states=("running",))
    page.goto(f"{server.url}/runs/{run['run_id']}")
    state = page.locator("#run-summary .big-state .state")
    expect(state).to_have_text("running")
    page.get_by_role("button", name="Stop").click()
    # Ended by the stop's own signal: a success, as in apsis.
    expect(state).to_have_text("success", timeout=5000)
    expect(page.locator("#run-summary")).to_contain_text("killed by SIGTERM")
    assert server.get(f"/api/v1/runs/{run['run_id']}")["state"] == "success"


def test_rerun_from_the_list_appears_grouped_under_the_original(server, page):
    run = submit(server, program="echo first")
    server.wait_run(run["run_id"])
    page.goto(server.url + "/?q=" + run["job_id"])
    group = page.locator(f'tbody[data-group="{run["run_id"][1:]}"]')
    expect(group.locator("tr.original")).to_contain_text("success")
    group.get_by_role("button", name="Rerun").click()
    rerun_row = group.locator("tr.rerun")
    expect(rerun_row).to_have_count(1, timeout=5000)
    expect(rerun_row).to_be_visible()
    new = [r for r in server.runs(f"job:{run['job_id']}") if r["rerun_of"] == run["run_id"]]
    assert len(new) == 1
    expect(rerun_row).to_have_attribute("data-run", new[0]["run_id"])
    expect(rerun_row.locator(".state")).to_have_text("success", timeout=5000)  # live
    # Collapsing the group hides the rerun, and a refresh of the list keeps it so.
    group.locator("[data-toggle-group]").click()
    expect(rerun_row).to_be_hidden()
    page.wait_for_timeout(2500)
    expect(page.locator(f'tbody[data-group="{run["run_id"][1:]}"] tr.rerun')).to_be_hidden()


def test_adhoc_form_runs_a_command_and_its_output_appears_live(server, page):
    page.goto(server.url + "/adhoc")
    page.locator('input[name="command"]').fill("for i in 1 2 3; do echo tick $i; sleep 1; done")
    page.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/runs/r\d+$"))
    output = page.locator("#output")
    expect(output).to_contain_text("tick 1", timeout=5000)
    # Seen while the program is still going: the output is followed live.
    assert "tick 3" not in output.inner_text()
    expect(page.locator("#run-summary .big-state .state")).to_have_text("running")
    expect(output).to_contain_text("tick 3", timeout=8000)
    expect(page.locator("#run-summary .big-state .state")).to_have_text("success", timeout=5000)
    expect(page.locator("#output-tail")).to_contain_text("End of output")
    assert output.inner_text() == "tick 1\ntick 2\ntick 3\n"


def test_pause_all_from_the_header_and_resume_without_a_reload(server, page):
    page.goto(server.url + "/jobs")
    page.evaluate("window.notReloaded = true")
    control = page.locator("#pause-control")
    control.get_by_text("Pause all").first.click()
    control.get_by_label("Reason").fill("database upgrade")
    control.get_by_label("Due runs").select_option("hold")
    control.get_by_role("button", name="Pause all jobs").click()
    banner = page.locator("#pauses .pause-banner")
    expect(banner).to_contain_text("All jobs paused (hold): database upgrade", timeout=5000)
    [pause] = server.get("/api/v1/pauses")["items"]
    assert (pause["reason"], pause["mode"], pause["job_id"]) == ("database upgrade", "hold", None)
    control.get_by_role("button", name="Resume").click()
    expect(banner).to_have_count(0, timeout=5000)
    expect(control.get_by_text("Pause all").first).to_be_visible()
    assert server.get("/api/v1/pauses")["items"] == []
    assert page.evaluate("window.notReloaded") is True


def test_an_unreachable_server_is_reported_and_the_page_recovers(server, page):
    page.goto(server.url + "/runs")
    banner = page.locator("#offline")
    expect(banner).to_be_hidden()
    server.stop()
    try:
        expect(banner).to_be_visible(timeout=8000)
        expect(banner).to_contain_text("Cannot reach")
    finally:
        server.start()
    expect(banner).to_be_hidden(timeout=8000)
    run = submit(server, job_id="alpha/load")
    expect(page.locator(f'tr[data-run="{run["run_id"]}"]')).to_be_visible(timeout=5000)
