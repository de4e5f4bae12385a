"""The Sanity page: what the sanity checker finds (checked as the page is asked for),
and the latest outcomes of the sanity actions."""

from apsis_lite.engine.sanity_checks import KIND_WORDS
from apsis_lite.web.backend import backend
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import page


@bp.get("/sanity")
def sanity_page():
    checker = backend().sanity
    report = checker.check()
    return page("sanity.html", active="sanity", report=report, kind_words=KIND_WORDS,
                outcomes=list(checker.actions.recent), configured=len(checker.actions.actions),
                interval=backend().config.sanity_interval)
