"""The FastAPI figure: per-request overhead of the metrics middleware."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import monlight
import purepython_monlight

from pybench.common import API_KEY, Context, make_row
from pybench.timing import interleave, median


def _make_app(middleware: Optional[tuple[type, Any]]) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    if middleware is not None:
        middleware_class, metrics_client = middleware
        app.add_middleware(middleware_class, metrics_client=metrics_client)
    return app


async def _drive(app: Any, count: int) -> tuple[float, int]:
    """Call the ASGI app directly count times; return µs per request and the last status."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    started = time.perf_counter()
    for index in range(count):
        path = f"/users/{index & 1023}"
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
        }
        await app(scope, receive, send)
    return (time.perf_counter() - started) / count * 1e6, status


def figure_fastapi(context: Context) -> dict[str, Any]:
    """Measure the per-request overhead of the metrics middleware over a bare FastAPI app, called as ASGI."""
    import monlight.integrations.fastapi as product_fastapi
    import purepython_monlight.integrations.fastapi as pure_fastapi

    product_metrics = monlight.MetricsClient(context.sink_url, API_KEY)
    pure_metrics = purepython_monlight.MetricsClient(context.sink_url, API_KEY)
    apps = {
        "bare": _make_app(None),
        "product": _make_app((product_fastapi.MonlightMiddleware, product_metrics)),
        "purepython": _make_app((pure_fastapi.MonlightMiddleware, pure_metrics)),
    }
    count = context.count(1000)
    loop = asyncio.new_event_loop()
    statuses = {name: loop.run_until_complete(_drive(app, 50))[1] for name, app in apps.items()}

    def run(name: str) -> float:
        return loop.run_until_complete(_drive(apps[name], count))[0]

    per_request = interleave(15, {name: (lambda name=name: run(name)) for name in apps})
    loop.close()
    # Each round's overhead is taken against the same round's bare app.
    samples = {name: [with_middleware - bare for with_middleware, bare in zip(per_request[name], per_request["bare"])]
               for name in ("product", "purepython")}
    recorded = product_metrics.stats()["pending"]
    product_metrics.shutdown()
    return make_row("fastapi", "FastAPI middleware overhead per request", "µs", "lower", 4.0, samples,
                per_request_us={name: median(values) for name, values in per_request.items()},
                statuses=statuses, product_metrics_buffered=recorded,
                note="GET /users/{user_id} called as ASGI, no server; overhead = time with the "
                     "middleware - time of the bare app in the same round")
