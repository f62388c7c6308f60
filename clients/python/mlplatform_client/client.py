"""The client: one HTTP session to the API (and one address for the serving process), with retries.

Retries are for answers that ask for them, 429 and 503 (honouring ``Retry-After``), and for connection failures.
Every POST, PUT and PATCH carries an ``Idempotency-Key`` (the API keeps the first answer for 24 hours), the same on
each retry, so a retried write never creates anything twice. A 409 ``idempotency_request_in_progress`` (the first
attempt is still running on the server) is waited out the same way.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import requests

from mlplatform_client import errors
from mlplatform_client.config import Settings, load_settings

RETRY_STATUSES = frozenset({429, 503})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_RETRY_WAIT = 60.0
USER_AGENT = "mlplatform-client/0.1.0"


class Client:
    """``Client()`` reads the address and key from the environment or the config file (see ``config``).

    Resource groups: ``client.datasets``, ``client.jobs``, ``client.models``; predictions: ``client.predict``,
    explanations: ``client.explain``.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        serving_url: str | None = None,
        tenant: str | None = None,
        profile: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        settings: Settings | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings or load_settings(
            profile=profile, api_url=api_url, api_key=api_key, serving_url=serving_url, tenant=tenant
        )
        if not self.settings.api_key:
            raise errors.ConfigurationError(
                "no API key: set MLP_API_KEY, pass api_key=, or add one to a profile of the config file"
            )
        self.api_url = self.settings.api_url
        self.serving_url = self.settings.serving_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        from mlplatform_client.resources import DatasetsAPI, JobsAPI, ModelsAPI
        from mlplatform_client.serving import explain, predict

        self.datasets = DatasetsAPI(self)
        self.jobs = JobsAPI(self)
        self.models = ModelsAPI(self)
        self._predict = predict
        self._explain = explain

    def __repr__(self) -> str:  # never the key
        return f"Client(api_url={self.api_url!r}, serving_url={self.serving_url!r})"

    def auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        if self.settings.tenant:
            headers["X-Tenant"] = self.settings.tenant
        return headers

    def predict(self, model: str, body: dict[str, Any], **options: Any):
        """A prediction from the serving process; see :func:`mlplatform_client.serving.predict`."""
        return self._predict(self, model, body, **options)

    def model_card(self, model: str, version: int, *, markdown: bool = False):
        """A version's model card (JSON, or Markdown text); see :meth:`ModelsAPI.card`."""
        return self.models.card(model, version, markdown=markdown)

    def explain(self, model: str, instances: list[Any], *, version: int | None = None, alias: str | None = None):
        """Explanations of the predictions for ``instances``; see :func:`mlplatform_client.serving.explain`."""
        return self._explain(self, model, instances, version=version, alias=alias)

    # --- HTTP -------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
        idempotency_key: str | None = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one request (retried as the module says); an answer of 400 or more raises an ``APIError``."""
        method = method.upper()
        url = (base or self.api_url) + path
        sent_headers = self.auth_headers() | (headers or {})
        if method in WRITE_METHODS:
            sent_headers.setdefault("Idempotency-Key", idempotency_key or f"mlp-{uuid.uuid4()}")
        attempt = 0
        while True:
            if attempt and hasattr(data, "seek"):
                data.seek(0)  # a streamed body is sent again from its start
            try:
                response = self.session.request(
                    method,
                    url,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    json=json,
                    data=data,
                    headers=sent_headers,
                    stream=stream,
                    timeout=timeout or self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.max_retries or not self._may_resend(method, sent_headers):
                    raise errors.TransportError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            wait = retry_after(response)
            if attempt < self.max_retries and self._should_retry(response):
                response.close()
                self._sleep(attempt, wait)
                attempt += 1
                continue
            raise errors.from_response(response, retry_after=wait)

    @staticmethod
    def _may_resend(method: str, headers: dict[str, str]) -> bool:
        """A write is sent again only under its Idempotency-Key (which it always has here)."""
        return method not in WRITE_METHODS or "Idempotency-Key" in headers

    @staticmethod
    def _should_retry(response: requests.Response) -> bool:
        if response.status_code in RETRY_STATUSES:
            return True
        if response.status_code == 409:
            try:
                return response.json()["error"]["code"] == "idempotency_request_in_progress"
            except (ValueError, KeyError, TypeError):
                return False
        return False

    def _sleep(self, attempt: int, wait: float | None) -> None:
        if wait is None:
            wait = self.backoff * 2**attempt * (0.5 + random.random())  # noqa: S311 - jitter, not a secret
        time.sleep(min(wait, MAX_RETRY_WAIT))

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, **options: Any) -> Any:
        response = self.request("POST", path, json=body, **options)
        return response.json() if response.content else None

    def put(self, path: str, body: Any = None, **options: Any) -> Any:
        response = self.request("PUT", path, json=body, **options)
        return response.json() if response.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def paginate(self, path: str, *, page_size: int = 100, **params: Any) -> Iterator[Any]:
        """Every item of a paginated list, page after page (page numbers, so a proxy's host names do not matter)."""
        page = 1
        while True:
            body = self.get(path, page=page, page_size=page_size, **params)
            if isinstance(body, list):  # an unpaginated list
                yield from body
                return
            yield from body.get("results", [])
            if not body.get("next"):
                return
            page += 1


def retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), or None."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
