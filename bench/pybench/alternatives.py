"""The popular libraries used as second columns: prometheus_client and sentry_sdk."""

from __future__ import annotations

import http.client
from typing import Any

import prometheus_client
import sentry_sdk
from sentry_sdk.transport import Transport

LABEL_NAMES = ("method", "endpoint", "status")


def prometheus_metrics() -> tuple[Any, Any]:
    """Return a labelled Counter and Histogram in a registry of their own."""
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("http_requests_total", "Requests.", LABEL_NAMES, registry=registry)
    histogram = prometheus_client.Histogram("http_request_duration_seconds", "Durations.", LABEL_NAMES,
                                            registry=registry)
    return counter, histogram


class PostingTransport(Transport):
    """Serialises each envelope and POSTs it from the calling thread over one kept-alive connection.

    sentry_sdk's own HttpTransport hands envelopes to a worker thread. This
    one waits for the response, which makes capture_exception comparable
    with report_error_sync.
    """

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        dsn = self.parsed_dsn
        self.path = f"/api/{dsn.project_id}/envelope/"
        self.connection = http.client.HTTPConnection(dsn.host, dsn.port, timeout=5)
        self.posted = 0

    def capture_envelope(self, envelope: Any) -> None:
        body = envelope.serialize()
        self.connection.request("POST", self.path, body=body,
                                headers={"Content-Type": "application/x-sentry-envelope"})
        response = self.connection.getresponse()
        response.read()
        self.posted += 1


class DiscardingTransport(Transport):
    """Drops every envelope: what remains is the cost of building the event."""

    def capture_envelope(self, envelope: Any) -> None:
        return None


def init_sentry(sink_port: int, transport: type) -> None:
    """Initialise sentry_sdk with its defaults and the given transport class."""
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{sink_port}/1", transport=transport)


def sentry_transport() -> Any:
    return sentry_sdk.get_client().transport
