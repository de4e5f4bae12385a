"""The page header's own requests: the zone picker (a cookie), the connection check, the icon."""

from urllib.parse import urlsplit

from flask import current_app, make_response, redirect, render_template, request, send_from_directory

from apsis_lite.errors import BadRequest
from apsis_lite.web.format import valid_zone, zone_names
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import ZONE_COOKIE, page
from apsis_lite.web.request_args import shown
from apsis_lite.web.security import safe_next


@bp.get("/ui/zones")
def zones():
    return page("_zones.html", zones=zone_names())


@bp.post("/ui/zone")
def set_zone():
    name = valid_zone(request.form.get("tz", "").strip())
    if name is None:
        raise BadRequest(f"unknown time zone {shown(request.form.get('tz', ''))}; "
                         "pick one from the list, e.g. Europe/London")
    # Back to the page the picker was on: a path of this site only, never another site.
    try:
        ref = urlsplit(request.referrer or "")
        back = safe_next(ref.path + (f"?{ref.query}" if ref.query else ""))
    except ValueError:  # not a URL (a malformed IPv6 host, say)
        back = "/"
    if request.headers.get("HX-Request"):
        resp = make_response("", 204)
        resp.headers["HX-Refresh"] = "true"
    else:
        resp = redirect(back, 303)
    resp.set_cookie(ZONE_COOKIE, name, max_age=5 * 365 * 86400, samesite="Lax", httponly=True)
    return resp


@bp.get("/ui/ping")
def ping():
    # The health and sanity banners, out of band: they appear and go without a reload.
    return render_template("_health.html", oob=True) + render_template("_sanity.html", oob=True)


@bp.get("/favicon.ico")
def favicon():
    # Browsers ask for it at this path whatever the pages link; it is public, like static/.
    return send_from_directory(current_app.static_folder, "favicon.ico", mimetype="image/x-icon",
                               max_age=86400)
