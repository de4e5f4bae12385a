"""Sessions in a real browser (Debian's Chromium through Playwright): a page left open
is logged out after the idle timeout, its polls notwithstanding; a page of another
site that posts to the server does not log the user out."""

import http.server
import re
import threading

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect

IDLE = 5  # seconds: the runs list polls every 2 s, the heartbeat every 5 s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "apsis-lite.yaml"
    config.write_text(f"session_idle_timeout: {IDLE}s\n")
    with served({"alpha": "program: {type: no-op}\n"}, ["--config", str(config)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server, request, tmp_path):
    with logged_in_page(browser, server, request, tmp_path) as pg:
        yield pg


def test_a_page_left_open_is_logged_out_after_the_idle_timeout(server, page):
    page.goto(server.url + "/")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # Nobody touches it; its polls go on, and the first one after the timeout sends it to the login page.
    expect(page).to_have_url(re.compile(r"/login\?next=.*ended=idle"), timeout=(IDLE + 8) * 1000)
    expect(page.locator(".message.error")).to_contain_text(
        f"Your session has ended: nothing was done for {IDLE}.0 s")


class AnotherSite(http.server.BaseHTTPRequestHandler):
    """A page on another site (``localhost`` is not the site ``127.0.0.1``) that makes the
    browser post to the scheduler as soon as it loads."""

    target = ""

    def do_GET(self):
        body = (f'<form id="f" method="post" action="{self.target}"><input name="tz" value="UTC"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["/logout", "/ui/zone"])
def test_a_page_of_another_site_cannot_log_the_user_out(server, page, path):
    page.goto(server.url + "/jobs")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    handler = type("Handler", (AnotherSite,), {"target": server.url + path})
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with page.expect_response(lambda r: r.url == server.url + path) as refused:
            page.goto(f"http://localhost:{other.server_port}/")
        answer = refused.value
        assert answer.status == 401 and answer.header_value("set-cookie") is None
    finally:
        other.shutdown()
        other.server_close()
    page.goto(server.url + "/jobs")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page).to_have_url(server.url + "/jobs")
