"""Shared by the browser tests: Debian's Chromium (never a downloaded browser),
a real server on its own folders, and a logged-in page that leaves a
screenshot and its HTML in the test's tmp folder when the test fails."""

import contextlib
import shutil

from conftest import Server, _kill_agents, short_tmpdir, write_job

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def chromium():
    """Debian's Chromium under Playwright, for a module's tests; closed afterwards."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = launch(p)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def served(jobs, extra_args=()):
    """A started server over fresh folders holding ``jobs`` ({job id: YAML}); removed afterwards."""
    jobs_dir, data_dir = short_tmpdir("al-bj-"), short_tmpdir("al-bd-")
    for job_id, text in jobs.items():
        write_job(jobs_dir, job_id, text)
    srv = Server(jobs_dir, data_dir, extra_args=list(extra_args))
    srv.start()
    try:
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            _kill_agents(data_dir)
            shutil.rmtree(jobs_dir, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def logged_in_page(browser, server, request, tmp_path):
    """A 1280-px page logged in through a one-time link, as after the desktop start."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(server.login_link())
    failed_before = request.session.testsfailed
    try:
        yield pg
        # The call's report is counted before teardown: a failure shows here.
        if request.session.testsfailed > failed_before:
            pg.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "failure.html").write_text(pg.content())
            print(f"screenshot of the failed page: {tmp_path / 'failure.png'}")
    finally:
        context.close()
