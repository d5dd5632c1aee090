"""HTTP plumbing shared by the served verifiers, the LLM judge and the OpenAI-compatible generation backend.

* OpenAI-compatible endpoints (``/v1/chat/completions``: the judge, the generation backend) go
  through the ``openai`` client (:func:`openai_client`), which has its own retries and timeout;
  :func:`openai_error` turns its exceptions into one :class:`VerifierHTTPError` naming the URL.
* vLLM's ``/classify`` (the served HuatuoGPT-o1 verifier) is not an OpenAI API: it goes through
  :func:`post_json` (httpx, bounded retries with backoff).
* API keys (:func:`resolve_api_key`) come from the environment or from Colab secrets
  (``google.colab.userdata``), never from code or config values; :func:`bearer_headers` is the
  one place a key becomes an ``Authorization`` header (the ``openai`` client sets its own).

Errors name the URL and the failure (connection, timeout, HTTP status, malformed JSON) and
never contain an API key.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = [
    "VerifierHTTPError",
    "VerifierUnavailableError",
    "post_json",
    "resolve_api_key",
    "bearer_headers",
    "openai_client",
    "openai_error",
]

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


def bearer_headers(env_name: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` for the key named ``env_name`` (:func:`resolve_api_key`);
    ``{}`` when ``env_name`` is ``None`` (a local server that needs no key).

    Raises ``ValueError`` naming the variable (never the value) when ``env_name`` is given but not set.
    """
    key = resolve_api_key(env_name)
    if env_name and not key:
        raise ValueError(f"API key variable {env_name!r} is not set in the environment nor in Colab secrets")
    return {"Authorization": f"Bearer {key}"} if key else {}


def openai_client(base_url: str, *, api_key_env: str | None, timeout_s: float, retries: int, require_key: bool = True) -> Any:
    """An ``openai.OpenAI`` client for an OpenAI-compatible server at ``base_url`` (``.../v1``).

    Its retries are the client's (``max_retries=retries``): connection errors, timeouts and
    408/409/429/5xx answers are tried again with exponential backoff from 0.5 s (the ``openai``
    package's policy); ``timeout_s`` seconds per request. The key named ``api_key_env`` comes from
    the environment or Colab secrets (:func:`resolve_api_key`); with none, the placeholder
    ``"EMPTY"`` is sent (local vLLM, SGLang or ``transformers serve`` ignore it).

    Raises ``ValueError`` naming the variable when ``require_key`` and ``api_key_env`` is given but not set.
    """
    from openai import OpenAI

    key = resolve_api_key(api_key_env)
    if require_key and api_key_env and not key:
        raise ValueError(f"API key variable {api_key_env!r} is not set in the environment nor in Colab secrets")
    return OpenAI(base_url=base_url, api_key=key or "EMPTY", timeout=timeout_s, max_retries=int(retries))


def openai_error(exc: BaseException, url: str, timeout_s: float | None = None) -> "VerifierHTTPError | None":
    """The :class:`VerifierHTTPError` (naming ``url``) for an exception of the ``openai`` client, or
    ``None`` when ``exc`` is not one of its request failures: ``kind`` ``"timeout"``, ``"connect"``,
    ``"status"`` (with the HTTP status; not retryable for a 4xx other than 408/409/429) or
    ``"json"`` (a body that is not JSON)."""
    import json as _json

    import openai

    if isinstance(exc, openai.APITimeoutError):
        return VerifierHTTPError(f"timed out after {timeout_s} s calling {url}", url=url, kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return VerifierHTTPError(f"cannot reach the server at {url}: {exc}", url=url, kind="connect")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in (408, 409, 429) or status >= 500
        verb = "answered" if retryable else "refused the request with"
        body = ""
        try:
            body = exc.response.text[:200]
        except Exception:  # pragma: no cover - a response without a readable body
            pass
        return VerifierHTTPError(f"{url} {verb} HTTP {status}: {body!r}", url=url, kind="status", status=status, retryable=retryable)
    if isinstance(exc, (_json.JSONDecodeError, openai.APIResponseValidationError)):
        return VerifierHTTPError(f"{url} answered malformed JSON: {exc}", url=url, kind="json")
    return None
