"""The ``webhook`` action: the run as JSON, POSTed to a URL, retried with backoff."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from apsis_lite.model.actions.base import Action, ActionFailed
from apsis_lite.model.fields import _kind, nonempty_text, positive_duration, string_map
from apsis_lite.model.registry import ACTIONS

DEFAULT_WEBHOOK_TIMEOUT = 10.0

# Longest wait between two webhook attempts.
MAX_RETRY_DELAY = 60.0


def _url(value) -> str:
    url = nonempty_text(value).strip()
    if "{{" in url or "{%" in url:
        return url  # checked when bound
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http or https URL, got {url!r}")
    return url


MAX_WEBHOOK_RETRIES = 100


def _retries(value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEBHOOK_RETRIES:
        raise ValueError(f"expected a whole number from 0 to {MAX_WEBHOOK_RETRIES}, got {_kind(value)}")
    return value


@ACTIONS.register("webhook")
@dataclass(frozen=True, kw_only=True)
class WebhookAction(Action):
    """POST the run and the transition as JSON to ``url``.

    Each attempt gives up after ``timeout`` seconds. A connection error, a
    timeout, HTTP 429 or a 5xx answer is retried ``retries`` times (default:
    ``webhook_retries``), waiting ``webhook_retry_delay``, then twice that,
    and so on; any other 4xx answer is not retried.
    """

    type_name: ClassVar[str] = "webhook"

    url: str
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    retries: int | None = None
    headers: dict = field(default_factory=dict)
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"url": f.take("url", _url),
                "timeout": f.take("timeout", positive_duration, DEFAULT_WEBHOOK_TIMEOUT),
                "retries": f.take("retries", _retries, None),
                "headers": f.take("headers", string_map, {})}

    def _jso(self):
        jso = {"url": self.url, "timeout": self.timeout}
        if self.retries is not None:
            jso["retries"] = self.retries
        if self.headers:
            jso["headers"] = dict(self.headers)
        return jso

    def describe(self):
        return f"webhook to {self.url}"

    def perform(self, event, ctx):
        body = json.dumps(event.to_jso()).encode()
        retries = ctx.config.webhook_retries if self.retries is None else self.retries
        problems = []
        for attempt in range(retries + 1):
            if attempt:
                ctx.sleep(min(ctx.config.webhook_retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY))
            try:
                status = self._post(body)
            except _Retry as exc:
                problems.append(str(exc))
                continue
            tries = f" (attempt {attempt + 1}; before: {', '.join(problems)})" if problems else ""
            return f"delivered: HTTP {status}{tries}"
        raise ActionFailed(f"gave up after {retries + 1} attempt(s): {', '.join(problems)}")

    def _post(self, body) -> int:
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "apsis-lite")
        for name, value in self.headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read(65536)
                return resp.status
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(f"HTTP {exc.code}") from None
            raise ActionFailed(f"HTTP {exc.code} {exc.reason} (not retried)") from None
        except urllib.error.URLError as exc:
            raise _Retry(_reason(exc.reason)) from None
        except (OSError, ValueError) as exc:  # timeouts and resets after connecting
            raise _Retry(_reason(exc)) from None


class _Retry(Exception):
    """A webhook attempt that failed in a way worth trying again."""


def _reason(exc) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
