"""No page of another site may change anything through a signed-in browser: a POST
to the pages must come from this site (its Origin header names this host)."""

from urllib.parse import urlsplit

from flask import request

from apsis_lite.errors import ApsisError
from apsis_lite.web.pages import bp
from apsis_lite.web.request_args import shown


class CrossSiteRequest(ApsisError):
    """A state-changing request sent by a page of another site."""

    status = 403


def netloc(url: str):
    """The host and port a URL names, or None if it is not a URL."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return None


@bp.before_request
def same_origin_posts():
    # Browsers send Origin with every POST; a page of another site must
    # not be able to stop or start runs through a user's browser.
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin != "null" and netloc(origin) != request.host:
            raise CrossSiteRequest(f"refused a request from another site ({shown(origin)})")
