"""HTTP plumbing shared by the served verifiers and the OpenAI-compatible generation backend:
bounded retries with backoff, clear errors, API keys.

Errors name the URL and the failure (connection, timeout, HTTP status, malformed JSON) and
never contain an API key. Keys come from the environment or from Colab secrets
(``google.colab.userdata``), never from code or config values.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["VerifierHTTPError", "VerifierUnavailableError", "post_json", "resolve_api_key"]

logger = logging.getLogger(__name__)


class VerifierHTTPError(RuntimeError):
    """A request to a verifier server failed after its retries.

    ``kind`` is one of ``"connect"`` (server not reachable), ``"timeout"``, ``"status"``
    (HTTP error status, in ``status``), ``"json"`` (body is not JSON) or ``"schema"``
    (JSON without the expected fields). ``retryable`` is False for a 4xx answer (the request
    itself was refused; retrying will not help).
    """

    def __init__(self, message: str, *, url: str, kind: str, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.url, self.kind, self.status, self.retryable = url, kind, status, retryable


class VerifierUnavailableError(VerifierHTTPError):
    """No item of a ``score`` call could be scored because the server at ``url`` could not be reached."""


def post_json(
    client: Any,
    url: str,
    payload: dict,
    *,
    retries: int = 2,
    backoff_s: float = 0.5,
    headers: dict | None = None,
) -> Any:
    """POST ``payload`` as JSON to ``url`` and return the decoded JSON body.

    Tries ``1 + retries`` times; between tries sleeps ``backoff_s * 2**attempt`` seconds.
    Retried: connection errors, timeouts (the client's timeout, in seconds), 429 and 5xx
    answers, and bodies that are not JSON. Not retried: other 4xx answers.

    Raises :class:`VerifierHTTPError` naming ``url`` after the last try.
    """
    import httpx

    last: VerifierHTTPError | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            resp = client.post(url, json=payload, headers=headers or {})
        except httpx.TimeoutException as exc:
            last = VerifierHTTPError(f"timed out after {_timeout_of(client)} s calling {url} ({type(exc).__name__})", url=url, kind="timeout")
        except httpx.TransportError as exc:
            last = VerifierHTTPError(f"cannot reach the server at {url}: {type(exc).__name__}: {exc}", url=url, kind="connect")
        else:
            if resp.status_code == 429 or resp.status_code >= 500:
                last = VerifierHTTPError(
                    f"{url} answered HTTP {resp.status_code}: {resp.text[:200]!r}", url=url, kind="status", status=resp.status_code
                )
            elif resp.status_code >= 400:
                raise VerifierHTTPError(
                    f"{url} refused the request with HTTP {resp.status_code}: {resp.text[:300]!r}",
                    url=url,
                    kind="status",
                    status=resp.status_code,
                    retryable=False,
                )
            else:
                try:
                    return resp.json()
                except ValueError:
                    last = VerifierHTTPError(f"{url} answered malformed JSON: {resp.text[:200]!r}", url=url, kind="json")
        logger.info("verifier request %d/%d failed: %s", attempt + 1, retries + 1, last)
    assert last is not None
    raise last


def _timeout_of(client: Any) -> Any:
    t = getattr(client, "timeout", None)
    return getattr(t, "read", t)


def resolve_api_key(env_name: str | None) -> str | None:
    """The API key named ``env_name``: from ``os.environ``, else from Colab secrets, else ``None``.

    The value is returned, never logged or printed. ``None`` for ``env_name`` means no key
    (a local server that needs none).
    """
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value:
        return value
    try:  # Colab secrets (the key icon in the sidebar); absent outside Colab
        from google.colab import userdata  # type: ignore

        return userdata.get(env_name) or None
    except Exception:
        return None
