"""FastAPI integration of the pure-Python comparison package.

The metrics middleware is a Starlette BaseHTTPMiddleware, as in the
published package. The exception handler reports in a fire-and-forget
asyncio task and responds with 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from purepython_monlight.error_client import ErrorClient
from purepython_monlight.metrics_client import MetricsClient

logger = logging.getLogger(__name__)

_report_tasks: set[asyncio.Task[None]] = set()


class MonlightMiddleware(BaseHTTPMiddleware):
    """Records http_requests_total and http_request_duration_seconds for every request."""

    def __init__(self, app: Any, metrics_client: MetricsClient) -> None:
        super().__init__(app)
        self.metrics_client = metrics_client

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            duration = time.perf_counter() - start
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or request.url.path
            labels = {"method": request.method, "endpoint": endpoint, "status": str(status)}
            self.metrics_client.counter("http_requests_total", labels=labels)
            self.metrics_client.histogram("http_request_duration_seconds", duration, labels=labels)


async def MonlightExceptionHandler(request: Request, exc: Exception) -> JSONResponse:
    """Report the exception in the background and respond with 500."""
    error_client: Optional[ErrorClient] = getattr(request.app.state, "monlight_error_client", None)
    if error_client is not None:
        context = {
            "request_url": str(request.url),
            "request_method": request.method,
            "request_headers": dict(request.headers),
        }
        task = asyncio.get_running_loop().create_task(error_client.report_error(exc, request_context=context))
        _report_tasks.add(task)
        task.add_done_callback(_report_tasks.discard)
    return JSONResponse(status_code=500, content={"detail": "Internal server error"})


def setup_monlight(
    app: Any,
    *,
    error_tracker_url: Optional[str] = None,
    metrics_collector_url: Optional[str] = None,
    api_key: str,
    project: str = "default",
    environment: str = "prod",
    flush_interval: float = 10.0,
) -> dict[str, Any]:
    """Install the exception handler and the middleware for the URLs given."""
    clients: dict[str, Any] = {"error_client": None, "metrics_client": None}
    if error_tracker_url:
        error_client = ErrorClient(error_tracker_url, api_key, project=project, environment=environment)
        app.state.monlight_error_client = error_client
        app.add_exception_handler(Exception, MonlightExceptionHandler)
        clients["error_client"] = error_client
    if metrics_collector_url:
        metrics_client = MetricsClient(metrics_collector_url, api_key, flush_interval=flush_interval)
        app.add_middleware(MonlightMiddleware, metrics_client=metrics_client)
        metrics_client.start()
        clients["metrics_client"] = metrics_client
    return clients
