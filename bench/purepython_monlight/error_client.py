"""Error client of the pure-Python comparison package.

Each report builds a dict payload, opens a new httpx client, POSTs the
payload as JSON and closes the client again, as the published package
does. Exceptions while reporting are logged as warnings, not raised.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Optional

import httpx

logger = logging.getLogger(__name__)

# Headers that never leave the process, compared in lower case.
PII_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-api-key"})


class ErrorClient:
    """Reports exceptions to a monlight error tracker over httpx."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        project: str = "default",
        environment: str = "prod",
        timeout: float = 5.0,
        excluded_headers: Optional[set[str]] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.project = project
        self.environment = environment
        self.timeout = timeout
        self._excluded = PII_HEADERS | {name.lower() for name in excluded_headers or ()}

    def _build_payload(self, exception: BaseException, request_context: Optional[dict[str, Any]]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "project": self.project,
            "environment": self.environment,
            "exception_type": type(exception).__name__,
            "message": str(exception),
            "traceback": "".join(traceback.format_exception(type(exception), exception, exception.__traceback__)),
        }
        if not request_context:
            return payload
        for key in ("request_url", "request_method"):
            if request_context.get(key) is not None:
                payload[key] = request_context[key]
        if request_context.get("user_id") is not None:
            payload["user_id"] = str(request_context["user_id"])
        headers = request_context.get("request_headers")
        if headers:
            payload["request_headers"] = {
                name: value for name, value in headers.items() if name.lower() not in self._excluded
            }
        if request_context.get("extra") is not None:
            payload["extra"] = request_context["extra"]
        return payload

    def _check(self, response: httpx.Response) -> None:
        if response.status_code not in (200, 201):
            logger.warning("error tracker responded %d: %s", response.status_code, response.text[:200])

    async def report_error(self, exception: BaseException, request_context: Optional[dict[str, Any]] = None) -> None:
        """Send a report from the event loop with a new httpx.AsyncClient."""
        try:
            payload = self._build_payload(exception, request_context)
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(
                    f"{self.base_url}/api/errors", json=payload, headers={"X-API-Key": self.api_key}
                )
            self._check(response)
        except Exception:
            logger.warning("failed to report an error to the error tracker", exc_info=True)

    def report_error_sync(self, exception: BaseException, request_context: Optional[dict[str, Any]] = None) -> None:
        """Send a report from this thread with a new httpx.Client."""
        try:
            payload = self._build_payload(exception, request_context)
            with httpx.Client(timeout=self.timeout) as client:
                response = client.post(
                    f"{self.base_url}/api/errors", json=payload, headers={"X-API-Key": self.api_key}
                )
            self._check(response)
        except Exception:
            logger.warning("failed to report an error to the error tracker", exc_info=True)
