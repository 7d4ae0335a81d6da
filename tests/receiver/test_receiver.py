"""Tests of the contract receiver, over real HTTP on 127.0.0.1.

Each test gets a receiver whose faults and records were cleared just
before it. The receiver processes are shared per module, because starting
one costs a Python start-up. SIGALRM bounds the time of every test.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # harness.py sits next to this file, whatever pytest's import mode

from harness import Receiver, ReceiverError  # noqa: E402

TEST_TIME_LIMIT = 30  # seconds per test, enforced by SIGALRM
HTTP_TIMEOUT = 5.0
API_KEY = "rx-test-key-7f3c"
ERRORS_LIMIT = 262_144
METRICS_LIMIT = 524_288
GREEK = "α"  # two bytes of UTF-8

VALID_REPORT = {
    "project": "shop",
    "exception_type": "ValueError",
    "message": "bad input",
    "traceback": 'Traceback (most recent call last):\n  File "/app/shop.py", line 42, in handler\nValueError: bad input\n',
}
VALID_METRIC = {"name": "http_requests_total", "type": "counter", "value": 1}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def time_limit():
    def on_alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {TEST_TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def close_mode_receiver(tmp_path_factory):
    with Receiver(tmp_path_factory.mktemp("close") / "records.jsonl", api_key=API_KEY) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def keep_alive_mode_receiver(tmp_path_factory):
    with Receiver(tmp_path_factory.mktemp("keep") / "records.jsonl", api_key=API_KEY, keep_alive=True) as receiver:
        yield receiver


@pytest.fixture
def receiver(close_mode_receiver):
    close_mode_receiver.control(reset=True, clear=True)
    return close_mode_receiver


@pytest.fixture
def keep_alive_receiver(keep_alive_mode_receiver):
    keep_alive_mode_receiver.control(reset=True, clear=True)
    return keep_alive_mode_receiver


# ----------------------------------------------------------------- helpers


class Response:
    """A response read in full: status, headers (names lower-cased) and parsed JSON body."""

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.raw = body
        self.json = json.loads(body) if body else None

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.raw[:200]!r})"


def encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")


def request(receiver, method, path, body=None, *, key=API_KEY, headers=None, connection=None) -> Response:
    """Send one request with http.client, over `connection` when one is given."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=HTTP_TIMEOUT)
    all_headers = {"Content-Type": "application/json"}
    if key is not None:
        all_headers["X-API-Key"] = key
    all_headers.update(headers or {})
    try:
        conn.request(method, path, body=None if body is None else encode(body), headers=all_headers)
        http_response = conn.getresponse()
        headers = {name.lower(): value for name, value in http_response.getheaders()}
        return Response(http_response.status, headers, http_response.read())
    finally:
        if connection is None:
            conn.close()


def post(receiver, path, body, **options) -> Response:
    return request(receiver, "POST", path, body, **options)


def raw_exchange(receiver, data: bytes) -> Response:
    """Write raw bytes on a new socket and read the response until the server closes it."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Response(int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body)


def raw_post_head(path: str, extra_headers: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\n{extra_headers}\r\n"
    ).encode("latin-1")


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def report_with(**fields) -> dict:
    return {**VALID_REPORT, **fields}


def error_body_of_size(size: int) -> bytes:
    """A valid error report exactly `size` bytes long, padded in the message."""
    without_padding = len(encode(report_with(message="")))
    body = encode(report_with(message="x" * (size - without_padding)))
    assert len(body) == size
    return body


def metrics_body_of_size(size: int) -> bytes:
    """A valid one-item batch exactly `size` bytes long, padded in a label value."""
    def batch(padding):
        return [{**VALID_METRIC, "labels": {"pad": padding}}]

    without_padding = len(encode(batch("")))
    body = encode(batch("x" * (size - without_padding)))
    assert len(body) == size
    return body


# ------------------------------------------------------------ health, auth


def test_health_needs_no_key(receiver):
    response = request(receiver, "GET", "/health", key=None)
    assert response.status == 200
    assert response.json == {"status": "ok"}


@pytest.mark.parametrize("path, body", [("/api/errors", VALID_REPORT), ("/api/metrics", [VALID_METRIC])])
@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_api_rejects_bad_key(receiver, path, body, key):
    response = post(receiver, path, body, key=key)
    assert response.status == 401
    assert isinstance(response.json["detail"], str)
    [event] = receiver.rejected()
    assert event["status"] == 401
    assert event["path"] == path
    assert event["headers"].get("X-API-Key", False) is False


def test_unknown_path_is_404_json(receiver):
    response = post(receiver, "/api/nothing", {})
    assert response.status == 404
    assert response.json == {"detail": "Not Found"}


def test_get_on_api_path_is_405(receiver):
    response = request(receiver, "GET", "/api/errors")
    assert response.status == 405
    assert "detail" in response.json


# -------------------------------------------------------- error validation

ERROR_CASES = [
    # (case id, body, expected status)
    ("valid", VALID_REPORT, 201),
    ("missing project", {k: v for k, v in VALID_REPORT.items() if k != "project"}, 400),
    ("missing exception_type", {k: v for k, v in VALID_REPORT.items() if k != "exception_type"}, 400),
    ("missing message", {k: v for k, v in VALID_REPORT.items() if k != "message"}, 400),
    ("missing traceback", {k: v for k, v in VALID_REPORT.items() if k != "traceback"}, 400),
    ("numeric project", report_with(project=7), 400),
    ("null exception_type", report_with(exception_type=None), 400),
    ("array message", report_with(message=["a"]), 400),
    ("object traceback", report_with(traceback={}), 400),
    ("empty strings", report_with(project="", exception_type="", message="", traceback=""), 201),
    ("project 100 ASCII bytes", report_with(project="p" * 100), 201),
    ("project 101 ASCII bytes", report_with(project="p" * 101), 400),
    ("project 50 Greek chars, 100 bytes", report_with(project=GREEK * 50), 201),
    ("project 51 Greek chars, 102 bytes", report_with(project=GREEK * 51), 400),
    ("exception_type 200 ASCII bytes", report_with(exception_type="E" * 200), 201),
    ("exception_type 201 ASCII bytes", report_with(exception_type="E" * 201), 400),
    ("exception_type 100 Greek chars, 200 bytes", report_with(exception_type=GREEK * 100), 201),
    ("exception_type 101 Greek chars, 202 bytes", report_with(exception_type=GREEK * 101), 400),
    ("long message is fine", report_with(message="m" * 100_000), 201),
    ("body is an array", [VALID_REPORT], 400),
    ("body is a string", "report", 400),
    ("body is not JSON", b"{not json", 400),
    ("body is empty", b"", 400),
    ("body cut inside a UTF-8 character", encode(report_with(message=GREEK))[:-4] + b"\xce", 400),
    ("NaN inside extra", encode(report_with(extra={"x": 1})).replace(b'"x": 1', b'"x": NaN'), 400),
    ("Infinity as extra value", encode(report_with(extra=0)).replace(b'"extra": 0', b'"extra": Infinity'), 400),
    ("number overflowing a double", encode(report_with(extra=0)).replace(b'"extra": 0', b'"extra": 1e400'), 400),
]


@pytest.mark.parametrize("body, expected", [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_error_validation(receiver, body, expected):
    response = post(receiver, "/api/errors", body)
    assert response.status == expected, response
    if expected == 400:
        assert isinstance(response.json["detail"], str)
        assert receiver.errors() == []
    else:
        assert len(receiver.errors()) == 1


def test_optional_field_wrong_type_dropped(receiver):
    report = report_with(
        user_id=42,
        request_url="http://shop/cart",
        request_method=1,
        request_headers={"Accept": "text/html", "X-Retries": 3},
        extra=["not", "an", "object"],
        environment="prod",
    )
    response = post(receiver, "/api/errors", report)
    assert response.status == 201
    [event] = receiver.errors()
    assert sorted(event["dropped_fields"]) == ["extra", "request_headers", "request_method", "user_id"]
    assert event["unknown_fields"] == ["environment"]
    assert event["report"] == report  # the body as sent, for the SDK's own tests


def test_optional_field_right_type_kept(receiver):
    report = report_with(
        user_id="user-42",
        request_url="http://shop/cart",
        request_method="POST",
        request_headers={"Accept": "text/html"},
        extra={"nested": {"list": [1, 2.5, None, True]}},
    )
    response = post(receiver, "/api/errors", report)
    assert response.status == 201
    [event] = receiver.errors()
    assert event["dropped_fields"] == []
    assert event["report"] == report


# ------------------------------------------------------------ fingerprints


def test_error_created_then_incremented(receiver):
    first = post(receiver, "/api/errors", VALID_REPORT)
    second = post(receiver, "/api/errors", report_with(message="another message"))
    third = post(receiver, "/api/errors", VALID_REPORT)
    assert first.status == 201
    assert first.json == {"status": "created", "id": 1, "fingerprint": md5("shop:ValueError:/app/shop.py:42")}
    assert second.status == 200
    assert second.json == {"status": "incremented", "id": 1, "count": 2}
    assert third.json == {"status": "incremented", "id": 1, "count": 3}


def test_error_groups_by_project_and_type(receiver):
    assert post(receiver, "/api/errors", VALID_REPORT).status == 201
    other_project = post(receiver, "/api/errors", report_with(project="admin"))
    other_type = post(receiver, "/api/errors", report_with(exception_type="KeyError"))
    assert other_project.status == 201
    assert other_project.json["id"] == 2
    assert other_type.status == 201
    assert other_type.json["id"] == 3


PYTHON_TRACEBACK = """Traceback (most recent call last):
  File "/app/server.py", line 10, in dispatch
    return handler(request)
  File "/app/views.py", line 77, in handler
    raise ValueError("bad")
ValueError: bad
"""


def test_python_frames_last_wins(receiver):
    response = post(receiver, "/api/errors", report_with(traceback=PYTHON_TRACEBACK))
    assert response.json["fingerprint"] == md5("shop:ValueError:/app/views.py:77")

    # A different caller with the same deepest frame is the same error.
    other_caller = PYTHON_TRACEBACK.replace('"/app/server.py", line 10', '"/app/worker.py", line 3')
    assert post(receiver, "/api/errors", report_with(traceback=other_caller)).status == 200

    other_deepest = PYTHON_TRACEBACK.replace("line 77", "line 78")
    assert post(receiver, "/api/errors", report_with(traceback=other_deepest)).status == 201
    [event, *_] = receiver.errors()
    assert event["frame"] == {"shape": "python", "file": "/app/views.py", "line": "77"}


JS_TRACEBACK = """TypeError: x is undefined
    at handler (/app/routes.js:12:5)
    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)
    at next (/app/node_modules/express/lib/router/route.js:137:13)
"""


def test_javascript_frames_first_wins(receiver):
    response = post(receiver, "/api/errors", report_with(exception_type="TypeError", traceback=JS_TRACEBACK))
    assert response.json["fingerprint"] == md5("shop:TypeError:/app/routes.js:12")

    other_callers = JS_TRACEBACK.replace("route.js:137:13", "route.js:140:1")
    assert post(receiver, "/api/errors", report_with(exception_type="TypeError", traceback=other_callers)).status == 200


@pytest.mark.parametrize("traceback, file, line", [
    ("Error: boom\n    at handler (/srv/app.lua:42:0)\n", "/srv/app.lua", "42"),
    ("Error: boom\n    at /srv/anon.js:7:3\n    at later (/srv/b.js:1:1)\n", "/srv/anon.js", "7"),
    ("handler@/srv/app.js:10:5\nmain@/srv/main.js:2:1\n", "/srv/app.js", "10"),
    ("@http://cdn.example:8080/app.js:33:9\n", "http://cdn.example:8080/app.js", "33"),
    ("    at run (http://cdn.example:8080/app.js:5:2)\n", "http://cdn.example:8080/app.js", "5"),
], ids=["at with function", "at without function", "at-sign shape", "at-sign with URL port", "at with URL port"])
def test_javascript_frame_shapes(receiver, traceback, file, line):
    response = post(receiver, "/api/errors", report_with(exception_type="Error", traceback=traceback))
    assert response.status == 201
    assert response.json["fingerprint"] == md5(f"shop:Error:{file}:{line}")


def test_python_frames_win_over_javascript(receiver):
    mixed = "    at first (/srv/a.js:1:1)\n" + PYTHON_TRACEBACK
    response = post(receiver, "/api/errors", report_with(traceback=mixed))
    assert response.json["fingerprint"] == md5("shop:ValueError:/app/views.py:77")


def test_unrecognised_traceback_hashed_whole(receiver):
    traceback = "app.rb:10:in `handler'\napp.rb:3:in `main'\n"
    response = post(receiver, "/api/errors", report_with(exception_type="RuntimeError", traceback=traceback))
    assert response.json["fingerprint"] == md5(f"shop:RuntimeError:{traceback}")
    [event] = receiver.errors()
    assert event["frame"] is None

    # Any change to the text, here one line number, makes a new group.
    changed = traceback.replace(":3:", ":4:")
    assert post(receiver, "/api/errors", report_with(exception_type="RuntimeError", traceback=changed)).status == 201


# ------------------------------------------------------- metrics validation


def batch_with(**fields) -> list:
    return [{**VALID_METRIC, **fields}]


def without(field: str) -> list:
    return [{k: v for k, v in VALID_METRIC.items() if k != field}]


def metric_with_literal_value(literal: str) -> bytes:
    return encode(batch_with(value=0)).replace(b'"value": 0', b'"value": ' + literal.encode())


METRIC_CASES = [
    ("valid counter", batch_with(), 202),
    ("valid histogram", batch_with(type="histogram", value=0.25), 202),
    ("valid gauge", batch_with(type="gauge", value=-3), 202),
    ("all optional fields", batch_with(labels={"method": "GET"}, timestamp="2026-01-02T03:04:05Z", project="shop"), 202),
    ("null optional fields", batch_with(labels=None, timestamp=None, project=None), 202),
    ("unknown field ignored", batch_with(unit="seconds"), 202),
    ("empty array", [], 400),
    ("1000 items", [VALID_METRIC] * 1000, 202),
    ("1001 items", [VALID_METRIC] * 1001, 400),
    ("object not array", VALID_METRIC, 400),
    ("item not an object", [VALID_METRIC, "metric"], 400),
    ("missing name", without("name"), 400),
    ("empty name", batch_with(name=""), 400),
    ("numeric name", batch_with(name=5), 400),
    ("name 200 ASCII bytes", batch_with(name="n" * 200), 202),
    ("name 201 ASCII bytes", batch_with(name="n" * 201), 400),
    ("name 100 Greek chars, 200 bytes", batch_with(name=GREEK * 100), 202),
    ("name 101 Greek chars, 202 bytes", batch_with(name=GREEK * 101), 400),
    ("missing type", without("type"), 400),
    ("unknown type", batch_with(type="summary"), 400),
    ("type in capitals", batch_with(type="Counter"), 400),
    ("missing value", without("value"), 400),
    ("string value", batch_with(value="1"), 400),
    ("boolean value", batch_with(value=True), 400),
    ("null value", batch_with(value=None), 400),
    ("NaN value", metric_with_literal_value("NaN"), 400),
    ("Infinity value", metric_with_literal_value("Infinity"), 400),
    ("-Infinity value", metric_with_literal_value("-Infinity"), 400),
    ("value overflowing a double", metric_with_literal_value("1e400"), 400),
    ("exponent value", metric_with_literal_value("1.5e3"), 202),
    ("labels an array", batch_with(labels=["a"]), 400),
    ("labels a string", batch_with(labels="a=b"), 400),
    ("timestamp with fraction", batch_with(timestamp="2026-01-02T03:04:05.123Z"), 400),
    ("timestamp with offset", batch_with(timestamp="2026-01-02T03:04:05+00:00"), 400),
    ("timestamp with space", batch_with(timestamp="2026-01-02 03:04:05Z"), 400),
    ("timestamp lower-case z", batch_with(timestamp="2026-01-02T03:04:05z"), 400),
    ("timestamp month 13", batch_with(timestamp="2026-13-02T03:04:05Z"), 400),
    ("timestamp Arabic-Indic digit", batch_with(timestamp="2026-01-02T03:04:0\u0665Z"), 400),
    ("timestamp a number", batch_with(timestamp=1767322000), 400),
    ("numeric project", batch_with(project=1), 400),
    ("one invalid item among valid", [VALID_METRIC, VALID_METRIC, {**VALID_METRIC, "type": "timer"}], 400),
]


@pytest.mark.parametrize("body, expected", [case[1:] for case in METRIC_CASES], ids=[case[0] for case in METRIC_CASES])
def test_metrics_validation(receiver, body, expected):
    response = post(receiver, "/api/metrics", body)
    assert response.status == expected, response
    if expected == 400:
        assert isinstance(response.json["detail"], str)
        assert receiver.metrics() == []  # nothing of a rejected batch is stored
    else:
        assert len(receiver.metrics()) == len(json.loads(encode(body)))


def test_metrics_keep_label_order(receiver):
    labels = {"status": "200", "method": "GET", "endpoint": "/cart"}
    assert post(receiver, "/api/metrics", batch_with(labels=labels)).status == 202
    [item] = receiver.metrics()
    assert list(item["labels"]) == ["status", "method", "endpoint"]


# -------------------------------------------------------------- body limits


@pytest.mark.parametrize("path, body_of_size, limit, accepted", [
    ("/api/errors", error_body_of_size, ERRORS_LIMIT, 201),
    ("/api/metrics", metrics_body_of_size, METRICS_LIMIT, 202),
], ids=["errors", "metrics"])
def test_body_limit_is_inclusive(receiver, path, body_of_size, limit, accepted):
    assert post(receiver, path, body_of_size(limit)).status == accepted
    over = post(receiver, path, body_of_size(limit + 1))
    assert over.status == 413
    assert str(limit) in over.json["detail"]


@pytest.mark.parametrize("path, limit", [("/api/errors", ERRORS_LIMIT), ("/api/metrics", METRICS_LIMIT)])
def test_413_sent_before_body_is_read(receiver, path, limit):
    # Only the head is sent, so the response can depend on Content-Length alone.
    response = raw_exchange(receiver, raw_post_head(path, f"Content-Length: {limit + 1}\r\n"))
    assert response.status == 413
    assert "detail" in response.json
    [event] = receiver.rejected()
    assert event["content_length"] == limit + 1
    assert event["body_bytes"] == 0


def test_limit_counts_utf8_bytes(receiver):
    # 150,000 Greek characters are 300,000 bytes: over the limit in bytes only.
    body = encode(report_with(message=GREEK * 150_000)).replace(b"\\u03b1", GREEK.encode())
    assert len(body.decode("utf-8")) < ERRORS_LIMIT < len(body)
    assert post(receiver, "/api/errors", body).status == 413


def test_missing_content_length_is_411(receiver):
    # Only heads are sent: closing a socket with unread data would reset it
    # and could discard the response before the test reads it.
    chunked = raw_exchange(receiver, raw_post_head("/api/errors", "Transfer-Encoding: chunked\r\n"))
    assert chunked.status == 411
    assert "Content-Length" in chunked.json["detail"]

    no_length = raw_exchange(receiver, raw_post_head("/api/metrics", ""))
    assert no_length.status == 411


def test_invalid_content_length_is_400(receiver):
    response = raw_exchange(receiver, raw_post_head("/api/errors", "Content-Length: ten\r\n"))
    assert response.status == 400


# ----------------------------------------------------- protocol violations


def test_expect_100_continue_recorded_and_served(receiver):
    response = post(receiver, "/api/errors", VALID_REPORT, headers={"Expect": "100-continue"})
    assert response.status == 201
    [violation] = receiver.violations()
    assert violation["violation"] == "expect"
    assert violation["value"] == "100-continue"
    assert violation["path"] == "/api/errors"


def test_wrong_content_type_recorded_and_served(receiver):
    response = post(receiver, "/api/metrics", [VALID_METRIC], headers={"Content-Type": "text/plain"})
    assert response.status == 202
    [violation] = receiver.violations()
    assert violation["violation"] == "content-type"
    assert violation["value"] == "text/plain"


def test_json_content_type_with_charset_is_fine(receiver):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert post(receiver, "/api/metrics", [VALID_METRIC], headers=headers).status == 202
    assert receiver.violations() == []


# ------------------------------------------------------ connection handling


def test_close_mode_closes_each_connection(receiver):
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=HTTP_TIMEOUT)
    try:
        first = post(receiver, "/api/metrics", [VALID_METRIC], connection=connection)
        second = post(receiver, "/api/metrics", [VALID_METRIC], connection=connection)
    finally:
        connection.close()
    assert first.headers["connection"] == "close"
    assert second.headers["connection"] == "close"
    first_event, second_event = receiver.events("metrics")
    assert first_event["conn"] != second_event["conn"]


def test_keep_alive_mode_reuses_connection(keep_alive_receiver):
    connection = http.client.HTTPConnection("127.0.0.1", keep_alive_receiver.port, timeout=HTTP_TIMEOUT)
    try:
        first = post(keep_alive_receiver, "/api/metrics", [VALID_METRIC], connection=connection)
        second = post(keep_alive_receiver, "/api/errors", VALID_REPORT, connection=connection)
    finally:
        connection.close()
    assert first.status == 202
    assert second.status == 201
    assert "connection" not in first.headers
    metrics_event = keep_alive_receiver.events("metrics")[0]
    error_event = keep_alive_receiver.errors()[0]
    assert metrics_event["conn"] == error_event["conn"]


def test_keep_alive_mode_honours_client_close(keep_alive_receiver):
    response = post(keep_alive_receiver, "/api/metrics", [VALID_METRIC], headers={"Connection": "close"})
    assert response.status == 202
    assert response.headers["connection"] == "close"


def test_keep_alive_mode_closes_after_unread_body(keep_alive_receiver):
    # A 413 leaves the body unread, so the connection cannot carry another request.
    response = raw_exchange(keep_alive_receiver, raw_post_head("/api/errors", f"Content-Length: {ERRORS_LIMIT + 1}\r\n"))
    assert response.status == 413
    assert response.headers["connection"] == "close"


def test_keep_alive_survives_400(keep_alive_receiver):
    connection = http.client.HTTPConnection("127.0.0.1", keep_alive_receiver.port, timeout=HTTP_TIMEOUT)
    try:
        rejected = post(keep_alive_receiver, "/api/metrics", [], connection=connection)
        accepted = post(keep_alive_receiver, "/api/metrics", [VALID_METRIC], connection=connection)
    finally:
        connection.close()
    assert rejected.status == 400
    assert accepted.status == 202
    [rejected_event] = keep_alive_receiver.rejected()
    [accepted_event] = keep_alive_receiver.events("metrics")
    assert rejected_event["conn"] == accepted_event["conn"]


# ----------------------------------------------------------- fault injection


def test_fail_next_then_recovers(receiver):
    receiver.control(fail_next=2, status=503)
    first = post(receiver, "/api/errors", VALID_REPORT)
    second = post(receiver, "/api/metrics", [VALID_METRIC])
    third = post(receiver, "/api/errors", VALID_REPORT)
    assert first.status == 503
    assert isinstance(first.json["detail"], str)
    assert second.status == 503
    assert third.status == 201
    rejected = receiver.rejected()
    assert [event["status"] for event in rejected] == [503, 503]
    assert all(event["injected"] for event in rejected)


def test_fail_next_429_without_header(receiver):
    receiver.control(fail_next=1, status=429, retry_after=7)
    response = post(receiver, "/api/metrics", [VALID_METRIC])
    assert response.status == 429
    assert response.json == {"detail": "Rate limit exceeded", "retry_after": 7}
    assert "retry-after" not in response.headers


def test_fail_next_429_with_header(receiver):
    receiver.control(fail_next=1, status=429, retry_after=3, retry_after_header=True)
    response = post(receiver, "/api/errors", VALID_REPORT)
    assert response.status == 429
    assert response.json["retry_after"] == 3
    assert response.headers["retry-after"] == "3"


def test_fail_next_keeps_connection_usable(keep_alive_receiver):
    keep_alive_receiver.control(fail_next=1, status=500)
    connection = http.client.HTTPConnection("127.0.0.1", keep_alive_receiver.port, timeout=HTTP_TIMEOUT)
    try:
        failed = post(keep_alive_receiver, "/api/metrics", [VALID_METRIC], connection=connection)
        accepted = post(keep_alive_receiver, "/api/metrics", [VALID_METRIC], connection=connection)
    finally:
        connection.close()
    assert failed.status == 500
    assert accepted.status == 202


def test_drop_next_closes_without_response(receiver):
    receiver.control(drop_next=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(receiver, "/api/metrics", [VALID_METRIC])
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 202
    [dropped] = receiver.events("dropped")
    assert dropped["path"] == "/api/metrics"
    assert dropped["body_bytes"] == len(encode([VALID_METRIC]))
    assert len(receiver.metrics()) == 1


def test_delay_next_slows_responses(receiver):
    receiver.control(delay=0.4, delay_next=1)
    started = time.monotonic()
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 202
    delayed = time.monotonic() - started
    started = time.monotonic()
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 202
    undelayed = time.monotonic() - started
    assert delayed >= 0.4
    assert undelayed < 0.4


def test_delay_combines_with_fail(receiver):
    receiver.control(delay=0.3, delay_next=1, fail_next=1, status=502)
    started = time.monotonic()
    response = post(receiver, "/api/errors", VALID_REPORT)
    assert response.status == 502
    assert time.monotonic() - started >= 0.3


def test_reset_clears_pending_faults(receiver):
    receiver.control(fail_next=5, drop_next=5, delay=5, delay_next=5)
    state = receiver.control(reset=True)
    assert state["faults"]["fail_next"] == 0
    assert state["faults"]["drop_next"] == 0
    assert state["faults"]["delay_next"] == 0
    assert post(receiver, "/api/errors", VALID_REPORT).status == 201


def test_rate_limit_per_service(receiver):
    receiver.control(rate_limit={"errors": 2, "metrics": 3})
    error_statuses = [post(receiver, "/api/errors", VALID_REPORT).status for _ in range(3)]
    metric_statuses = [post(receiver, "/api/metrics", [VALID_METRIC]).status for _ in range(4)]
    assert error_statuses == [201, 200, 429]
    assert metric_statuses == [202, 202, 202, 429]

    limited = post(receiver, "/api/errors", VALID_REPORT)
    assert limited.json["detail"] == "Rate limit exceeded"
    assert 1 <= limited.json["retry_after"] <= 60
    assert "retry-after" not in limited.headers  # the services send no header


def test_rate_limit_true_uses_service_limits(receiver):
    state = receiver.control(rate_limit=True)
    assert state["faults"]["rate_limit"] == {
        "errors": {"limit": 100, "window": 60.0},
        "metrics": {"limit": 200, "window": 60.0},
    }
    statuses = [post(receiver, "/api/errors", VALID_REPORT).status for _ in range(101)]
    assert statuses[:100].count(429) == 0
    assert statuses[100] == 429


def test_rate_limit_window_slides(receiver):
    receiver.control(rate_limit={"metrics": 1, "window": 0.5})
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 202
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 429
    time.sleep(0.6)
    assert post(receiver, "/api/metrics", [VALID_METRIC]).status == 202


def test_rate_limit_off_by_default(receiver):
    statuses = {post(receiver, "/api/metrics", [VALID_METRIC]).status for _ in range(250)}
    assert statuses == {202}


@pytest.mark.parametrize("settings", [
    {"fail_nxt": 1},
    {"fail_next": -1},
    {"fail_next": 1, "status": 200},
    {"status": 503},
    {"fail_next": 1, "retry_after_header": "yes"},
    {"delay": 61},
    {"delay": -1},
    {"rate_limit": {"errors": 0}},
    {"rate_limit": {"errors": 1, "window": 0}},
    {"rate_limit": [100]},
], ids=str)
def test_control_rejects_invalid_settings(receiver, settings):
    with pytest.raises(ReceiverError, match="400"):
        receiver.control(**settings)


def test_control_rejects_non_object(receiver):
    response = post(receiver, "/__control__", [1], key=None)
    assert response.status == 400


def test_control_shows_faults(receiver):
    receiver.control(fail_next=2, status=503)
    response = request(receiver, "GET", "/__control__", key=None)
    assert response.status == 200
    assert response.json["faults"]["fail_next"] == 2


# --------------------------------------------------------------- the record


def test_record_never_contains_api_key(receiver):
    post(receiver, "/api/errors", VALID_REPORT)
    post(receiver, "/api/metrics", [VALID_METRIC])
    post(receiver, "/api/errors", VALID_REPORT, key="wrong-key")
    text = receiver.record_path.read_text(encoding="utf-8")
    assert API_KEY not in text
    first, second, third = receiver.records()
    assert first["headers"]["X-API-Key"] is True
    assert second["headers"]["X-API-Key"] is True
    assert third["headers"]["X-API-Key"] is False


def test_record_error_event_fields(receiver):
    body = encode(VALID_REPORT)
    post(receiver, "/api/errors", body, headers={"User-Agent": "monlight-test/1"})
    [event] = receiver.errors()
    assert event["kind"] == "error"
    assert event["status"] == 201
    assert event["outcome"] == "created"
    assert event["fingerprint"] == md5("shop:ValueError:/app/shop.py:42")
    assert event["report"] == VALID_REPORT
    assert event["body_bytes"] == len(body)
    assert isinstance(event["conn"], int)
    assert event["headers"]["User-Agent"] == "monlight-test/1"


def test_record_metrics_event_fields(receiver):
    batch = [VALID_METRIC, {**VALID_METRIC, "value": 2, "labels": {"a": "b"}}]
    post(receiver, "/api/metrics", batch)
    [event] = receiver.events("metrics")
    assert event["status"] == 202
    assert event["count"] == 2
    assert event["metrics"] == batch
    assert event["body_bytes"] == len(encode(batch))
    assert receiver.metrics() == batch


def test_record_rejected_event_fields(receiver):
    post(receiver, "/api/metrics", [])
    [event] = receiver.rejected()
    assert event["path"] == "/api/metrics"
    assert event["status"] == 400
    assert "1 to 1000" in event["detail"]
    assert event["body_bytes"] == 2
    assert event["injected"] is False


def test_records_endpoint_matches_file(receiver):
    post(receiver, "/api/errors", VALID_REPORT)
    post(receiver, "/api/metrics", [VALID_METRIC])
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request("GET", "/__control__/records")
        http_response = connection.getresponse()
        text = http_response.read().decode("utf-8")
    finally:
        connection.close()
    assert http_response.status == 200
    assert text == receiver.record_path.read_text(encoding="utf-8")
    assert [json.loads(line)["seq"] for line in text.splitlines()] == [1, 2]


def test_record_survives_lone_surrogate(receiver):
    body = encode(report_with(message="x")).replace(b'"message": "x"', b'"message": "\\ud800"')
    assert post(receiver, "/api/errors", body).status == 201
    [event] = receiver.errors()
    assert event["report"]["message"] == "\ud800"


def test_concurrent_requests_all_recorded(receiver):
    import threading

    statuses = []

    def send_batch():
        statuses.append(post(receiver, "/api/metrics", [VALID_METRIC] * 10).status)

    threads = [threading.Thread(target=send_batch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert statuses == [202] * 20
    assert len(receiver.metrics()) == 200
    assert sorted(event["seq"] for event in receiver.records()) == list(range(1, 21))


# ------------------------------------------------------------------ harness


def test_wait_for_times_out(receiver):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="metrics to arrive"):
        receiver.wait_for(receiver.metrics, timeout=0.2, description="metrics to arrive")
    assert time.monotonic() - started < 2


def test_wait_for_returns_value(receiver):
    post(receiver, "/api/metrics", [VALID_METRIC])
    assert receiver.wait_for(receiver.metrics, timeout=2) == [VALID_METRIC]


def test_receiver_start_failure_is_reported(tmp_path):
    record_dir = tmp_path / "records-dir"
    record_dir.mkdir()
    # A directory cannot be opened as the record file, so the receiver exits.
    broken = Receiver(record_dir, start_timeout=5)
    with pytest.raises(ReceiverError, match="exited with status 2"):
        broken.start()


def test_receiver_stops_cleanly_on_sigterm(tmp_path):
    receiver = Receiver(tmp_path / "records.jsonl").start()
    process = receiver.process
    receiver.stop()
    assert process.returncode == 0
    assert "stopped" in receiver.log_path.read_text(encoding="utf-8")
    assert not receiver.port_file.exists()


def test_harness_cli_start_and_stop(tmp_path):
    record, pid_file, port_file = tmp_path / "r.jsonl", tmp_path / "pid", tmp_path / "port"
    harness = str(HERE / "harness.py")
    started = subprocess.run(
        [sys.executable, harness, "start", "--record", str(record), "--pid-file", str(pid_file),
         "--port-file", str(port_file), "--keep-alive", "--api-key", API_KEY],
        capture_output=True, text=True, timeout=20,
    )
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    pid = int(pid_file.read_text())
    try:
        assert url == f"http://127.0.0.1:{port_file.read_text().strip()}"
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=HTTP_TIMEOUT)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        stopped = subprocess.run([sys.executable, harness, "stop", "--pid-file", str(pid_file)],
                                 capture_output=True, text=True, timeout=20)
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_file.exists()
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"receiver.py" not in Path(f"/proc/{pid}/cmdline").read_bytes()

    again = subprocess.run([sys.executable, harness, "stop", "--pid-file", str(pid_file)],
                           capture_output=True, text=True, timeout=20)
    assert again.returncode == 0


# ------------------------------------------------------------------ summary


def test_summary_tables(receiver):
    post(receiver, "/api/errors", report_with(traceback=PYTHON_TRACEBACK))
    post(receiver, "/api/errors", report_with(traceback=PYTHON_TRACEBACK, message="second\nline two"))
    batch = [{"name": "latency", "type": "histogram", "value": value, "labels": {"route": "/a"}} for value in range(1, 21)]
    batch.append({"name": "latency", "type": "histogram", "value": 0, "labels": {"route": "/b"}})
    post(receiver, "/api/metrics", batch)
    post(receiver, "/api/metrics", [])
    post(receiver, "/api/metrics", [VALID_METRIC], headers={"Expect": "100-continue"})

    result = subprocess.run([sys.executable, str(HERE / "summary.py"), str(receiver.record_path)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Errors: 2 reports in 1 groups" in lines
    [error_row] = [line for line in lines if "ValueError" in line]
    assert error_row.split()[0] == "2"
    assert "/app/views.py:77 (python)" in error_row

    # 21 values 0..20: nearest-rank p50 is the 11th (10), p95 the 20th (19).
    [latency_row] = [line for line in lines if line.split()[:1] == ["latency"] and "histogram" in line]
    assert latency_row.split()[1:7] == ["histogram", "21", "210", "10", "19", "2"]
    assert any('{"route":"/b"}' in line for line in lines)
    assert "Rejected requests: 1" in lines
    assert "Protocol violations: 1" in lines
