"""The FastAPI integration with real applications: in-process over httpx's ASGI transport,
and served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from typing import Any, AsyncIterator, Iterator
from unittest.mock import MagicMock

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.routing import Mount

from monlight import ErrorClient, MetricsClient
from monlight.integrations.fastapi import (
    UNMATCHED_ENDPOINT,
    MonlightExceptionHandler,
    MonlightMiddleware,
    setup_monlight,
)


def load_inventory(item_id: int) -> dict:
    return parse_inventory_row(item_id)


def parse_inventory_row(item_id: int) -> dict:
    raise KeyError(f"inventory row {item_id} is missing")


def build_app() -> FastAPI:
    """An application with plain, parametrised, failing, streaming and mounted routes."""
    app = FastAPI()
    app.state.background_done = threading.Event()

    @app.get("/items")
    async def list_items() -> dict:
        return {"items": []}

    @app.post("/items")
    async def create_item() -> dict:
        return {"id": 1}

    @app.get("/users/{id}")
    async def get_user(id: int) -> dict:
        return {"id": id}

    @app.get("/inventory/{item_id}")
    async def inventory(item_id: int) -> dict:
        return load_inventory(item_id)

    @app.get("/missing")
    async def missing() -> dict:
        raise HTTPException(status_code=404, detail="Not found")

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict:
        async def slow_task() -> None:
            await asyncio.sleep(0.3)
            app.state.background_done.set()

        tasks.add_task(slow_task)
        return {"queued": True}

    shop = APIRouter(prefix="/shop")
    nested = APIRouter()

    @shop.get("/carts/{cart_id}")
    async def get_cart(cart_id: int) -> dict:
        return {"cart": cart_id}

    @nested.get("/lines/{line_id}")
    async def get_line(line_id: int) -> dict:
        return {"line": line_id}

    shop.include_router(nested, prefix="/nested")
    app.include_router(shop, prefix="/api/v3")

    orders = FastAPI()

    @orders.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict:
        return {"order": order_id}

    widgets = APIRouter()

    @widgets.get("/widgets/{widget_id}")
    async def get_widget(widget_id: int) -> dict:
        return {"widget": widget_id}

    orders.include_router(widgets, prefix="/inc")

    things = FastAPI()

    @things.get("/things/{thing_id}")
    async def get_thing(thing_id: int) -> dict:
        return {"thing": thing_id}

    middle = FastAPI()
    middle.mount("/v2", things)

    projects = FastAPI()

    @projects.get("/projects/{project_id}")
    async def get_project(project_id: int) -> dict:
        return {"project": project_id}

    async def raw_asgi(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"raw"})

    app.mount("/v1", orders)
    app.mount("/api", middle)
    app.mount("/orgs/{org}", projects)
    app.router.routes.append(Mount("/raw", app=raw_asgi))
    return app


@pytest.fixture
def app() -> FastAPI:
    return build_app()


@contextlib.asynccontextmanager
async def http_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def wait_async(predicate, timeout: float = 5.0) -> None:
    """Wait for a condition without blocking the event loop, which runs the code under test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s")
        await asyncio.sleep(0.02)


def request_metrics(receiver, name: str = "http_requests_total") -> list[dict]:
    return [metric for metric in receiver.metrics() if metric["name"] == name]


def endpoints(receiver) -> list[str]:
    return [metric["labels"]["endpoint"] for metric in request_metrics(receiver)]


# -------------------------------------------------------------- middleware


async def test_middleware_records_both_metrics(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        response = await client.get("/items")
    metrics.flush()

    assert response.json() == {"items": []}
    counter, histogram = receiver.metrics()
    labels = {"method": "GET", "endpoint": "/items", "status": "200"}
    assert counter == {"name": "http_requests_total", "type": "counter", "value": 1, "labels": labels,
                       "timestamp": counter["timestamp"]}
    assert histogram["name"] == "http_request_duration_seconds"
    assert histogram["type"] == "histogram"
    assert list(histogram["labels"].items()) == list(labels.items())
    assert 0 < histogram["value"] < 5


async def test_route_template_labels(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        for user_id in (1, 2, 42):
            await client.get(f"/users/{user_id}")
        await client.post("/items")
    metrics.flush()

    assert endpoints(receiver) == ["/users/{id}"] * 3 + ["/items"]
    assert [metric["labels"]["method"] for metric in request_metrics(receiver)] == ["GET"] * 3 + ["POST"]


async def test_unmatched_paths_share_label(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        for path in ("/wp-admin.php", "/.env", "/no/such/path/123"):
            response = await client.get(path)
            assert response.status_code == 404
    metrics.flush()

    assert endpoints(receiver) == [UNMATCHED_ENDPOINT] * 3
    assert UNMATCHED_ENDPOINT == "<unmatched>"
    assert {metric["labels"]["status"] for metric in request_metrics(receiver)} == {"404"}


async def test_status_labels(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        await client.get("/missing")
        await client.delete("/items")
        await client.get("/users/not-a-number")

    metrics.flush()
    labels = [(metric["labels"]["endpoint"], metric["labels"]["status"]) for metric in request_metrics(receiver)]
    assert labels == [("/missing", "404"), ("/items", "405"), ("/users/{id}", "422")]


async def test_included_router_templates(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        assert (await client.get("/api/v3/shop/carts/4")).json() == {"cart": 4}
        assert (await client.get("/api/v3/shop/nested/lines/5")).json() == {"line": 5}
    metrics.flush()

    assert endpoints(receiver) == ["/api/v3/shop/carts/{cart_id}", "/api/v3/shop/nested/lines/{line_id}"]


async def test_mounted_app_templates(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        assert (await client.get("/v1/orders/9")).json() == {"order": 9}
        assert (await client.get("/api/v2/things/5")).json() == {"thing": 5}
        assert (await client.get("/orgs/acme/projects/3")).json() == {"project": 3}
        assert (await client.get("/v1/inc/widgets/6")).json() == {"widget": 6}
        assert (await client.get("/raw/anything")).text == "raw"
        assert (await client.get("/v1/nothing-here")).status_code == 404
    metrics.flush()

    assert endpoints(receiver) == [
        "/v1/orders/{order_id}",
        "/api/v2/things/{thing_id}",
        "/orgs/{org}/projects/{project_id}",
        "/v1/inc/widgets/{widget_id}",
        "/raw/{path:path}",
        "/v1/{path:path}",
    ]


async def test_background_task_runs(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        response = await client.get("/background")
    metrics.flush()

    assert response.json() == {"queued": True}
    assert app.state.background_done.is_set()
    (duration,) = request_metrics(receiver, "http_request_duration_seconds")
    assert duration["value"] < 0.3  # measured to the last byte, before the 0.3 s task


async def test_exception_recorded_as_500(app, receiver, make_metrics_client) -> None:
    metrics = make_metrics_client()
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        response = await client.get("/inventory/3")
    metrics.flush()

    assert response.status_code == 500
    assert [(metric["labels"]["endpoint"], metric["labels"]["status"]) for metric in request_metrics(receiver)] \
        == [("/inventory/{item_id}", "500")]


async def test_middleware_calls_like_published(app) -> None:
    metrics = MagicMock(spec=MetricsClient)
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        await client.get("/users/7")

    labels = {"method": "GET", "endpoint": "/users/{id}", "status": "200"}
    metrics.counter.assert_called_once_with("http_requests_total", labels=labels)
    ((name,), keywords) = metrics.histogram.call_args
    assert name == "http_request_duration_seconds"
    assert keywords["labels"] == labels
    assert keywords["value"] > 0


async def test_metrics_failure_keeps_request(app, monlight_log) -> None:
    monlight_log.expect(r"failed to record request metrics")
    metrics = MagicMock(spec=MetricsClient)
    metrics.counter.side_effect = RuntimeError("broken metrics client")
    app.add_middleware(MonlightMiddleware, metrics_client=metrics)

    async with http_client(app) as client:
        response = await client.get("/items")

    assert response.status_code == 200
    assert len(monlight_log.matching(r"failed to record request metrics")) == 1


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    metrics = MagicMock(spec=MetricsClient)
    middleware = MonlightMiddleware(inner, metrics_client=metrics)
    await middleware({"type": "websocket", "path": "/ws"}, None, None)
    await middleware({"type": "lifespan"}, None, None)

    assert seen == ["websocket", "lifespan"]
    metrics.counter.assert_not_called()


# ------------------------------------------------------- exception handler


async def test_handler_reports_and_answers_500(app, receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception: 'inventory row 3 is missing'")
    app.state.monlight_error_client = make_error_client()
    app.add_exception_handler(Exception, MonlightExceptionHandler)

    async with http_client(app) as client:
        response = await client.get("/inventory/3?verbose=1", headers={
            "Authorization": "Bearer secret", "Cookie": "session=1", "X-Trace": "t-1"})

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    await wait_async(receiver.errors)
    report = receiver.errors()[0]["report"]
    assert report["exception_type"] == "KeyError"
    assert report["message"] == "'inventory row 3 is missing'"
    assert report["request_url"] == "http://testserver/inventory/3?verbose=1"
    assert report["request_method"] == "GET"
    assert report["request_headers"]["x-trace"] == "t-1"
    assert "authorization" not in report["request_headers"]
    assert "cookie" not in report["request_headers"]
    assert "in load_inventory\n" in report["traceback"]
    assert "in parse_inventory_row\n" in report["traceback"]
    assert receiver.errors()[0]["frame"]["file"] == __file__
    assert len(monlight_log.matching(r"Unhandled exception")) == 1


async def test_handler_without_client_answers_500(app, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception")
    app.add_exception_handler(Exception, MonlightExceptionHandler)

    async with http_client(app) as client:
        response = await client.get("/inventory/1")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}


async def test_handler_calls_report_error(app, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception")
    calls: list[tuple[BaseException, dict]] = []

    class RecordingClient:
        async def report_error(self, exception: BaseException, request_context: dict | None = None) -> None:
            calls.append((exception, request_context))

    app.state.monlight_error_client = RecordingClient()
    app.add_exception_handler(Exception, MonlightExceptionHandler)

    async with http_client(app) as client:
        await client.get("/inventory/2")
        await asyncio.sleep(0.05)

    ((exception, context),) = calls
    assert isinstance(exception, KeyError)
    assert context["request_method"] == "GET"
    assert context["request_url"] == "http://testserver/inventory/2"


async def test_handler_survives_failing_client(app, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception")
    monlight_log.expect(r"failed to report an unhandled exception")

    class FailingClient:
        async def report_error(self, exception: BaseException, request_context: dict | None = None) -> None:
            raise ConnectionError("tracker down")

    app.state.monlight_error_client = FailingClient()
    app.add_exception_handler(Exception, MonlightExceptionHandler)

    async with http_client(app) as client:
        response = await client.get("/inventory/2")
        await asyncio.sleep(0.05)

    assert response.status_code == 500
    assert len(monlight_log.matching(r"failed to report an unhandled exception")) == 1


# ------------------------------------------------------------ setup_monlight


def shut_down(clients: dict) -> None:
    if clients["metrics_client"]:
        clients["metrics_client"].shutdown()


def test_setup_returns_both_clients(app, receiver) -> None:
    clients = setup_monlight(app, error_tracker_url=receiver.url, metrics_collector_url=receiver.url + "/",
                             api_key=receiver.api_key, project="shop", environment="staging", flush_interval=30.0)
    try:
        assert set(clients) == {"error_client", "metrics_client"}
        assert isinstance(clients["error_client"], ErrorClient)
        assert isinstance(clients["metrics_client"], MetricsClient)
        assert app.state.monlight_error_client is clients["error_client"]
        assert clients["error_client"].project == "shop"
        assert clients["error_client"].environment == "staging"
        assert clients["metrics_client"].base_url == receiver.url
        assert clients["metrics_client"].flush_interval == 30.0
        assert clients["metrics_client"].project == "shop"
    finally:
        shut_down(clients)


def test_setup_without_urls_does_nothing(app) -> None:
    clients = setup_monlight(app, api_key="key")

    assert clients == {"error_client": None, "metrics_client": None}
    with TestClient(app) as client:
        assert client.get("/items").json() == {"items": []}


def test_setup_error_tracking_only(app, receiver) -> None:
    clients = setup_monlight(app, error_tracker_url=receiver.url, api_key=receiver.api_key)

    assert isinstance(clients["error_client"], ErrorClient)
    assert clients["metrics_client"] is None


def test_setup_invalid_config_logs_and_disables(app, receiver, monlight_log) -> None:
    monlight_log.expect(r'monlight metrics collection disabled: MetricsClient: invalid base_url')
    monlight_log.expect(r"monlight error tracking disabled: ErrorClient: invalid api_key")

    clients = setup_monlight(app, metrics_collector_url="metrics:5012", api_key="key")
    assert clients == {"error_client": None, "metrics_client": None}

    # An unset key variable must not stop the application from starting.
    clients = setup_monlight(app, error_tracker_url=receiver.url, api_key="")
    assert clients["error_client"] is None
    assert monlight_log.matching(r"disabled") != []


def test_setup_end_to_end(app, receiver, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception")
    clients = setup_monlight(app, error_tracker_url=receiver.url, metrics_collector_url=receiver.url,
                             api_key=receiver.api_key, project="shop")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/users/5").status_code == 200
        response = client.get("/inventory/4")
        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error"}
        receiver.wait_for(lambda: receiver.errors(), description="the error report")

    # Leaving the TestClient ended the lifespan, which shut the metrics client down.
    labels = [(metric["labels"]["endpoint"], metric["labels"]["status"]) for metric in request_metrics(receiver)]
    assert labels == [("/users/{id}", "200"), ("/inventory/{item_id}", "500")]
    assert {metric["project"] for metric in receiver.metrics()} == {"shop"}
    assert receiver.errors()[0]["report"]["project"] == "shop"
    assert clients["metrics_client"].stats()["pending"] == 0


def test_lifespan_shutdown_flushes(receiver) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        events.append("startup")
        yield {"ready": True}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready(request: Any = None) -> dict:
        return {"ok": True}

    clients = setup_monlight(app, metrics_collector_url=receiver.url, api_key=receiver.api_key,
                             flush_interval=60.0)
    with TestClient(app) as client:
        client.get("/ready")
        assert receiver.metrics() == []  # nothing flushed yet: the interval is 60 s

    assert events == ["startup", "shutdown"]
    assert endpoints(receiver) == ["/ready"]
    assert clients["metrics_client"].stats()["delivered"] == 2


def test_on_event_shutdown_still_works(app, receiver) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if not hasattr(app, "on_event"):
            pytest.skip("this FastAPI release has no on_event")
        clients = setup_monlight(app, metrics_collector_url=receiver.url, api_key=receiver.api_key)
        calls: list[str] = []

        @app.on_event("shutdown")
        def shutdown() -> None:
            calls.append("shutdown")
            if clients["metrics_client"]:
                clients["metrics_client"].shutdown()

        with TestClient(app) as client:
            client.get("/items")

    assert calls == ["shutdown"]
    assert endpoints(receiver) == ["/items"]
    assert len(receiver.events("metrics")) == 1


# ------------------------------------------------------------------ uvicorn


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve the app with uvicorn on a free loopback port in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_uvicorn_served_app(app, receiver, monlight_log) -> None:
    monlight_log.expect(r"Unhandled exception")
    generator_finished = threading.Event()
    release = threading.Event()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            for _ in range(500):  # at most 5 s
                if release.is_set():
                    break
                await asyncio.sleep(0.01)
            yield b"second\n"
            generator_finished.set()

        return StreamingResponse(chunks(), media_type="text/plain")

    clients = setup_monlight(app, error_tracker_url=receiver.url, metrics_collector_url=receiver.url,
                             api_key=receiver.api_key, flush_interval=60.0)
    with serve(app) as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            for user_id in (1, 2, 3):
                assert client.get(f"/users/{user_id}").status_code == 200
            # uvicorn closes the connection after an application error, so
            # this request uses a connection of its own.
            assert client.get("/inventory/8", headers={"Connection": "close"}).status_code == 500
            assert client.get("/not-routed").status_code == 404

            with client.stream("GET", "/stream") as response:
                body = response.iter_bytes()
                first = next(body)
                streamed_before_end = not generator_finished.is_set()
                release.set()
                rest = b"".join(body)

            assert client.get("/background").json() == {"queued": True}
            receiver.wait_for(lambda: receiver.errors(), description="the error report")
        assert receiver.metrics() == []  # still buffered until the server stops

    # Stopping uvicorn ended the lifespan, which flushed the metrics.
    assert first == b"first\n"
    assert streamed_before_end
    assert rest == b"second\n"
    assert app.state.background_done.wait(timeout=5)
    assert endpoints(receiver) == ["/users/{id}"] * 3 + ["/inventory/{item_id}", UNMATCHED_ENDPOINT, "/stream",
                                                          "/background"]
    assert receiver.errors()[0]["report"]["exception_type"] == "KeyError"
    assert clients["metrics_client"].stats()["pending"] == 0


# ---------------------------------------------------------------- Starlette


async def test_plain_starlette_app(receiver, make_metrics_client) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    async def static(scope: dict, receive: Any, send: Any) -> None:
        await PlainTextResponse("static file")(scope, receive, send)

    inner = Starlette(routes=[Route("/items/{item_id}", item)])
    app = Starlette(routes=[Route("/items/{item_id}", item), Mount("/inner", app=inner),
                            Mount("/static", app=static)])
    clients = setup_monlight(app, metrics_collector_url=receiver.url, api_key=receiver.api_key)
    metrics = clients["metrics_client"]

    async with http_client(app) as client:
        assert (await client.get("/items/3")).text == "3"
        assert (await client.get("/inner/items/4")).text == "4"
        assert (await client.get("/static/css/site.css")).text == "static file"
        assert (await client.get("/inner/nothing")).status_code == 404
        assert (await client.get("/nothing")).status_code == 404
    metrics.shutdown()

    assert endpoints(receiver) == ["/items/{item_id}", "/inner/items/{item_id}", "/static/{path:path}",
                                   "/inner/{path:path}", UNMATCHED_ENDPOINT]


def test_report_without_event_loop(receiver, make_error_client) -> None:
    # Outside asyncio (an app on trio), the handler queues the report
    # without a coroutine.
    from monlight.integrations import fastapi as integration

    client = make_error_client()
    integration._report_in_background(client, KeyError("no loop"), {"request_method": "GET"})

    receiver.wait_for(lambda: receiver.errors(), description="the queued report")
    report = receiver.errors()[0]["report"]
    assert report["message"] == "'no loop'"
    assert report["request_method"] == "GET"
