"""FastAPI (and Starlette) integration: request metrics and error reports.

``setup_monlight()`` wires both up in one call. The pieces can also be
used on their own::

    app.add_middleware(MonlightMiddleware, metrics_client=metrics_client)
    app.add_exception_handler(Exception, MonlightExceptionHandler)
    app.state.monlight_error_client = error_client

Needs the ``fastapi`` extra (``pip install monlight[fastapi]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Optional, TypedDict

try:
    import anyio.to_thread
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Match, Mount
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"monlight.integrations.fastapi needs FastAPI ({exc}); install it with: pip install 'monlight[fastapi]'"
    ) from exc

from monlight.error_client import ErrorClient
from monlight.metrics_client import MetricsClient

logger = logging.getLogger(__name__)

#: The ``endpoint`` label of requests that matched no route. One fixed value
#: keeps the label set bounded when scanners probe thousands of paths.
UNMATCHED_ENDPOINT = "<unmatched>"

REQUESTS_METRIC = "http_requests_total"
DURATION_METRIC = "http_request_duration_seconds"

# ASGI messages after which a response is complete.
_FINAL_BODY = "http.response.body"
_PATHSEND = "http.response.pathsend"


class MonlightClients(TypedDict):
    """The clients that ``setup_monlight()`` created; None where a URL was not given."""

    error_client: Optional[ErrorClient]
    metrics_client: Optional[MetricsClient]


# ------------------------------------------------------------- middleware


class MonlightMiddleware:
    """ASGI middleware that records two metrics for every HTTP request.

    ``http_requests_total`` (counter) and ``http_request_duration_seconds``
    (histogram, seconds until the last byte of the response was handed to
    the server, so background tasks are not counted) both carry the
    labels ``method``, ``endpoint`` and ``status``. ``endpoint`` is the
    route template (``/users/{id}``, not ``/users/42``), with the mount
    path in front for mounted sub-applications, and UNMATCHED_ENDPOINT
    when no route matched. A request that raises before a response
    starts is recorded with status 500 and the exception propagates.

    It is a plain ASGI middleware, not a BaseHTTPMiddleware, so streaming
    responses stream and background tasks run as without it. Install it
    with ``app.add_middleware(MonlightMiddleware, metrics_client=client)``.
    """

    def __init__(self, app: ASGIApp, metrics_client: MetricsClient) -> None:
        self.app = app
        self.metrics_client = metrics_client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        entry_path = scope.get("path", "")
        entry_root_path = scope.get("root_path", "")
        status = 500
        recorded = False

        async def send_and_observe(message: Message) -> None:
            nonlocal status, recorded
            message_type = message["type"]
            if message_type == "http.response.start":
                status = message["status"]
            await send(message)
            complete = (message_type == _FINAL_BODY and not message.get("more_body", False)) \
                or message_type == _PATHSEND
            if complete and not recorded:
                recorded = True
                self._record(scope, entry_path, entry_root_path, status, time.perf_counter() - start)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            if not recorded:
                recorded = True
                self._record(scope, entry_path, entry_root_path, status, time.perf_counter() - start)

    def _record(self, scope: Scope, entry_path: str, entry_root_path: str, status: int, duration: float) -> None:
        """Record both metrics for one request; never raises into the request."""
        try:
            labels = {
                "method": scope.get("method", ""),
                "endpoint": endpoint_template(scope, entry_path, entry_root_path),
                "status": str(status),
            }
            self.metrics_client.counter(REQUESTS_METRIC, labels=labels)
            self.metrics_client.histogram(DURATION_METRIC, value=duration, labels=labels)
        except Exception:
            logger.warning("failed to record request metrics", exc_info=True)


def endpoint_template(scope: Scope, entry_path: str = "", entry_root_path: str = "") -> str:
    """Return the route template that served a request, for the ``endpoint`` label.

    ``entry_path`` and ``entry_root_path`` are the scope's path and
    root_path as the request entered the application, before any Mount
    changed them. A request that went through a Mount but matched no route
    inside it (a static files app, or a sub-application's 404) is labelled
    with the Mount's template, such as ``/static/{path:path}``.
    """
    route = scope.get("route")
    mounted = scope.get("root_path", "") != entry_root_path
    prefix = ""
    if mounted:
        prefix = _mount_prefix(scope, entry_path, entry_root_path)
        if prefix is None:
            # The mounts could not be walked (an app without .routes between
            # them), so the concrete mount path is used in place of the template.
            prefix = scope.get("root_path", "")[len(entry_root_path):]

    if route is None or isinstance(route, Mount):
        return f"{prefix}/{{path:path}}" if mounted else UNMATCHED_ENDPOINT
    template = _route_template(scope, route)
    if template is None:
        return UNMATCHED_ENDPOINT
    return (prefix + template) or "/"


def _route_template(scope: Scope, route: Any) -> Optional[str]:
    """Return the template of the matched route, with the prefixes of included routers."""
    # NOTE: FastAPI releases that include routers lazily (seen in 0.165)
    # leave the router-local path in scope["route"].path and keep the full
    # template only in this private scope entry. Older releases copy
    # included routes with the prefix applied, so route.path is complete.
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        context_path = getattr(context, "path", None)
        if getattr(context, "original_route", None) is route and isinstance(context_path, str) and context_path:
            return context_path
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


# Mounts nested deeper than this are not searched, which bounds the work
# for a pathological routing tree.
MAX_MOUNT_DEPTH = 8


def _mount_prefix(scope: Scope, entry_path: str, entry_root_path: str) -> Optional[str]:
    """Return the templates of the Mounts that the request went through, or None if not found.

    Starting from the outer router, each level's Mounts are matched again
    against the original path. The Mount whose concrete root_path leads to
    the request's final root_path is the one that served it. This costs a
    few regular expression matches and only happens for mounted requests.
    """
    routes = getattr(scope.get("router"), "routes", None)
    final_root_path = scope.get("root_path", "")
    probe = {
        "type": "http",
        "path": entry_path,
        "root_path": entry_root_path,
        "method": scope.get("method", "GET"),
        "path_params": {},
    }
    prefix = ""
    for _ in range(MAX_MOUNT_DEPTH):
        if probe["root_path"] == final_root_path:
            return prefix
        if routes is None:
            return None
        for candidate in routes:
            if not isinstance(candidate, Mount):
                continue
            match, child_scope = candidate.matches(probe)
            child_root_path = child_scope.get("root_path", "")
            if match is Match.FULL and final_root_path.startswith(child_root_path) \
                    and len(child_root_path) > len(probe["root_path"]):
                # Older Starlette releases also put the remaining path into
                # child_scope["path"]. Merging the child scope covers both.
                probe = {**probe, **child_scope}
                prefix += candidate.path
                routes = getattr(candidate, "routes", None)
                break
        else:
            return None
    return prefix if probe["root_path"] == final_root_path else None


# -------------------------------------------------------- exception handler

# Report tasks in flight. The event loop keeps only weak references to
# tasks, so without this set a task could be collected before it runs.
_report_tasks: set[asyncio.Task[None]] = set()


async def MonlightExceptionHandler(request: Request, exc: Exception) -> JSONResponse:
    """Report an unhandled exception to the error tracker and respond with 500.

    The report carries the request URL, method and headers (PII headers
    are removed by the client). It is sent in the background, so the 500
    response does not wait for it. The error client is read from
    ``request.app.state.monlight_error_client``; without one, nothing is
    reported. Register it with
    ``app.add_exception_handler(Exception, MonlightExceptionHandler)``.

    Returns:
        ``500 {"detail": "Internal server error"}``.
    """
    error_client = getattr(request.app.state, "monlight_error_client", None)
    if error_client is not None:
        try:
            request_context: dict[str, Any] = {
                "request_url": str(request.url),
                "request_method": request.method,
                "request_headers": dict(request.headers),
            }
            _report_in_background(error_client, exc, request_context)
        except Exception:
            logger.warning("failed to report an unhandled exception", exc_info=True)

    logger.exception("Unhandled exception: %s", exc)
    return JSONResponse(status_code=500, content={"detail": "Internal server error"})


def _report_in_background(error_client: Any, exc: Exception, request_context: dict[str, Any]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # Not on asyncio (Starlette on trio): send from the engine's thread
        # without waiting for the outcome.
        if isinstance(error_client, ErrorClient):
            error_client._enqueue_without_waiting(exc, request_context)
        return
    task = loop.create_task(_report_safely(error_client, exc, request_context))
    _report_tasks.add(task)
    task.add_done_callback(_report_tasks.discard)


async def _report_safely(error_client: Any, exc: Exception, request_context: dict[str, Any]) -> None:
    try:
        await error_client.report_error(exc, request_context=request_context)
    except Exception:
        logger.warning("failed to report an unhandled exception", exc_info=True)


# ------------------------------------------------------------------ setup


def setup_monlight(
    app: Any,
    *,
    error_tracker_url: Optional[str] = None,
    metrics_collector_url: Optional[str] = None,
    api_key: str,
    project: str = "default",
    environment: str = "prod",
    flush_interval: float = 10.0,
) -> MonlightClients:
    """Set up error reports and request metrics on a FastAPI or Starlette application.

    With ``error_tracker_url``, an ErrorClient is stored in
    ``app.state.monlight_error_client`` and MonlightExceptionHandler is
    registered for every Exception. With ``metrics_collector_url``, a
    started MetricsClient feeds MonlightMiddleware, and the client is
    shut down (its buffer sent) when the application's lifespan ends, so
    no shutdown hook is needed. A hook that calls
    ``clients["metrics_client"].shutdown()`` itself still works, because
    shutdown is idempotent. Call it before the application starts, as
    Starlette refuses middleware added later.

    Args:
        app: The FastAPI or Starlette application.
        error_tracker_url: URL of the error tracker, or None for no error reports.
        metrics_collector_url: URL of the metrics collector, or None for no metrics.
        api_key: API key of both services.
        project: Project name for error reports and metrics.
        environment: Environment name sent with error reports.
        flush_interval: Seconds between metric flushes.

    Returns:
        ``{"error_client": ErrorClient | None, "metrics_client": MetricsClient | None}``.

    A URL or an API key that the clients reject (see ErrorClient) does not
    stop the application from starting: the error is logged on the
    ``monlight.integrations.fastapi`` logger and that part stays off, its
    entry None.
    """
    result: MonlightClients = {"error_client": None, "metrics_client": None}

    if error_tracker_url:
        try:
            error_client = ErrorClient(base_url=error_tracker_url, api_key=api_key,
                                       project=project, environment=environment)
        except ValueError as exc:
            logger.error("monlight error tracking disabled: %s", exc)
            error_tracker_url = None
    if error_tracker_url:
        app.state.monlight_error_client = error_client
        app.add_exception_handler(Exception, MonlightExceptionHandler)
        result["error_client"] = error_client
        logger.info("monlight error tracking enabled: %s", error_client.base_url)

    if metrics_collector_url:
        try:
            metrics_client = MetricsClient(base_url=metrics_collector_url, api_key=api_key,
                                           flush_interval=flush_interval, project=project)
        except ValueError as exc:
            logger.error("monlight metrics collection disabled: %s", exc)
            metrics_collector_url = None
    if metrics_collector_url:
        app.add_middleware(MonlightMiddleware, metrics_client=metrics_client)
        metrics_client.start()
        _shut_down_with_lifespan(app, metrics_client)
        result["metrics_client"] = metrics_client
        logger.info("monlight metrics collection enabled: %s", metrics_client.base_url)

    return result


def _shut_down_with_lifespan(app: Any, metrics_client: MetricsClient) -> None:
    """Wrap the router's lifespan context so that the metrics client shuts down when it ends.

    The wrapper runs the application's own lifespan (its lifespan= function
    or its on_event handlers) first, so the client still works in a user's
    shutdown hook.
    """
    router = getattr(app, "router", None)
    inner_lifespan = getattr(router, "lifespan_context", None)
    if inner_lifespan is None:
        logger.warning("the application has no router lifespan, so the metrics client is not shut down "
                       "with it; call shutdown() on it when the application stops")
        return

    @contextlib.asynccontextmanager
    async def lifespan_with_monlight(lifespan_app: Any) -> AsyncIterator[Any]:
        try:
            async with inner_lifespan(lifespan_app) as state:
                yield state
        finally:
            # shutdown() waits for the network (within the exit deadline),
            # so it runs on a worker thread instead of blocking the loop.
            await anyio.to_thread.run_sync(metrics_client.shutdown)

    router.lifespan_context = lifespan_with_monlight
