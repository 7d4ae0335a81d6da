#!/usr/bin/env python3
"""A local stand-in for the monlight error tracker and metrics collector.

The receiver serves both monlight services on one loopback port
(`/api/errors`, `/api/metrics`, `/health`) and applies their wire contract.
That covers the API key, body limits checked from Content-Length before
the body is read, field validation, fingerprint grouping of errors and
whole-batch rejection of metrics. Every request to the API is appended to
a JSON Lines record file, so that the C, Python, Lua and Ruby test suites
and `make demo` can assert on exactly what a client sent. A control
endpoint without a key (`/__control__`) injects faults: error statuses,
dropped connections, delays and the services' real rate limits.

It uses only the Python standard library and runs on any python3 >= 3.9.
Run `receiver.py --help` for the options; harness.py starts it for tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

LOG = logging.getLogger("receiver")

HOST = "127.0.0.1"
HEALTH_PATH = "/health"
CONTROL_PATH = "/__control__"
RECORDS_PATH = "/__control__/records"

MAX_PROJECT_BYTES = 100
MAX_EXCEPTION_TYPE_BYTES = 200
MAX_METRIC_NAME_BYTES = 200
MAX_BATCH_ITEMS = 1000
MAX_CONTROL_BODY = 65_536
MAX_INJECTED_DELAY = 60.0
METRIC_TYPES = ("counter", "histogram", "gauge")

# [0-9] rather than \d, because \d also matches non-ASCII digits.
TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

# NOTE: the contract names the frame shapes but not the services' exact
# patterns. These accept the documented shapes anywhere in the traceback:
# a Python frame is `File "PATH", line N`, and a JavaScript frame is
# `at ... (FILE:LINE:COL)`, `at FILE:LINE:COL` or `FN@FILE:LINE:COL` at the
# start of a line. FILE is matched greedily, so a URL with a port number
# keeps its port and LINE is the second-to-last number.
PYTHON_FRAME_RE = re.compile(r'File "(?P<file>[^"\n]+)", line (?P<line>[0-9]+)')
JS_FRAME_RE = re.compile(
    r"^[ \t]*(?:"
    r"at (?:[^\n(]*\()?(?P<at_file>[^\s()]+):(?P<at_line>[0-9]+):[0-9]+\)?"
    r"|[^\s@]*@(?P<moz_file>[^\s@]+):(?P<moz_line>[0-9]+):[0-9]+"
    r")",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Service:
    """One of the two monlight services that the receiver imitates."""

    name: str
    path: str
    max_body: int
    rate_limit_per_minute: int


ERRORS = Service("errors", "/api/errors", 262_144, 100)
METRICS = Service("metrics", "/api/metrics", 524_288, 200)
SERVICES = {service.path: service for service in (ERRORS, METRICS)}

REQUIRED_ERROR_FIELDS = ("project", "exception_type", "message", "traceback")


def is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


# A value of the wrong JSON type in one of these fields is dropped, as the
# error tracker treats it as missing. JSON null counts as absent.
OPTIONAL_ERROR_FIELDS: dict[str, Callable[[Any], bool]] = {
    "request_url": lambda value: isinstance(value, str),
    "request_method": lambda value: isinstance(value, str),
    "request_headers": is_string_map,
    "user_id": lambda value: isinstance(value, str),
    "extra": lambda value: isinstance(value, dict),
}


class Rejection(Exception):
    """A rejected request: the HTTP status and the `detail` of its JSON error response."""

    def __init__(self, status: int, detail: str, extra: Optional[dict] = None, headers: Optional[dict] = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra or {}  # more fields of the JSON response body
        self.headers = headers or {}


# ---------------------------------------------------------------- parsing


def utf8_length(text: str) -> int:
    # surrogatepass: JSON can carry a lone surrogate escape ("\ud800"),
    # which plain UTF-8 encoding would raise on.
    return len(text.encode("utf-8", "surrogatepass"))


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_finite_float(text: str) -> float:
    # 1e400 is valid JSON grammar but overflows to infinity, which could
    # not be written back to the record file as JSON.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range for a double")
    return value


def parse_json_body(body: bytes) -> Any:
    """Parse a request body as strict JSON: UTF-8, no NaN or Infinity.

    Raises Rejection(400) with the reason.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(400, f"body is not valid UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=reject_constant, parse_float=parse_finite_float)
    except (ValueError, RecursionError) as exc:
        raise Rejection(400, f"body is not valid JSON: {exc}") from None


# ------------------------------------------------------------ error reports


def find_fingerprint_frame(traceback: str) -> Optional[dict]:
    """Find the frame that groups a traceback: the last Python frame, else the first JavaScript frame.

    Returns {"shape", "file", "line"}, or None when the traceback has
    neither shape.
    """
    python_frames = list(PYTHON_FRAME_RE.finditer(traceback))
    if python_frames:
        last = python_frames[-1]
        return {"shape": "python", "file": last.group("file"), "line": last.group("line")}

    first = JS_FRAME_RE.search(traceback)
    if first is not None:
        if first.group("at_file") is not None:
            file, line = first.group("at_file"), first.group("at_line")
        else:
            file, line = first.group("moz_file"), first.group("moz_line")
        return {"shape": "javascript", "file": file, "line": line}
    return None


def fingerprint_error(project: str, exception_type: str, traceback: str) -> tuple[str, Optional[dict]]:
    """Compute the error tracker's grouping key and the frame it came from.

    The key is the MD5 hex digest of the UTF-8 text
    `project:exception_type:file:line`. A traceback without a recognised
    frame is hashed whole, as `project:exception_type:traceback`.
    """
    frame = find_fingerprint_frame(traceback)
    if frame is None:
        key = f"{project}:{exception_type}:{traceback}"
    else:
        key = f"{project}:{exception_type}:{frame['file']}:{frame['line']}"
    digest = hashlib.md5(key.encode("utf-8", "surrogatepass")).hexdigest()
    return digest, frame


def validate_error_report(report: Any) -> tuple[list[str], list[str]]:
    """Validate an error report against the error tracker's rules.

    Returns (dropped, unknown): the optional fields dropped for having the
    wrong JSON type, and the fields the tracker ignores. Raises
    Rejection(400) naming the first invalid field.
    """
    if not isinstance(report, dict):
        raise Rejection(400, f"body must be a JSON object, got {json_type(report)}")

    for name in REQUIRED_ERROR_FIELDS:
        if name not in report or report[name] is None:
            raise Rejection(400, f"missing required field '{name}'")
        if not isinstance(report[name], str):
            raise Rejection(400, f"field '{name}' must be a string, got {json_type(report[name])}")

    for name, limit in (("project", MAX_PROJECT_BYTES), ("exception_type", MAX_EXCEPTION_TYPE_BYTES)):
        size = utf8_length(report[name])
        if size > limit:
            raise Rejection(400, f"field '{name}' is {size} bytes of UTF-8, max {limit}")

    dropped = [
        name
        for name, is_valid in OPTIONAL_ERROR_FIELDS.items()
        if report.get(name) is not None and not is_valid(report[name])
    ]
    known = set(REQUIRED_ERROR_FIELDS) | set(OPTIONAL_ERROR_FIELDS)
    unknown = [name for name in report if name not in known]
    return dropped, unknown


# ------------------------------------------------------------------ metrics


def validate_metric(index: int, item: Any) -> None:
    """Raise Rejection(400) naming the item and field unless the item is a valid metric."""
    where = f"item {index}"
    if not isinstance(item, dict):
        raise Rejection(400, f"{where}: must be a JSON object, got {json_type(item)}")

    name = item.get("name")
    if not isinstance(name, str):
        raise Rejection(400, f"{where}: field 'name' is required and must be a string")
    size = utf8_length(name)
    if not 1 <= size <= MAX_METRIC_NAME_BYTES:
        raise Rejection(400, f"{where}: field 'name' is {size} bytes of UTF-8, must be 1 to {MAX_METRIC_NAME_BYTES}")

    if item.get("type") not in METRIC_TYPES:
        raise Rejection(400, f"{where}: field 'type' must be one of {', '.join(METRIC_TYPES)}")

    # bool is a subclass of int in Python, but JSON true is not a number.
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejection(400, f"{where}: field 'value' is required and must be a JSON number")

    labels = item.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise Rejection(400, f"{where}: field 'labels' must be a JSON object, got {json_type(labels)}")

    timestamp = item.get("timestamp")
    if timestamp is not None and not is_valid_timestamp(timestamp):
        raise Rejection(400, f"{where}: field 'timestamp' must be a string YYYY-MM-DDTHH:MM:SSZ, got {timestamp!r}")

    project = item.get("project")
    if project is not None and not isinstance(project, str):
        raise Rejection(400, f"{where}: field 'project' must be a string, got {json_type(project)}")


def is_valid_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:  # the shape is right but the date is not, e.g. month 13
        return False
    return True


def validate_metrics_batch(batch: Any) -> None:
    """Raise Rejection(400) unless the batch is an array of 1 to 1000 valid metrics."""
    if not isinstance(batch, list):
        raise Rejection(400, f"body must be a JSON array, got {json_type(batch)}")
    if not 1 <= len(batch) <= MAX_BATCH_ITEMS:
        raise Rejection(400, f"batch has {len(batch)} items, must have 1 to {MAX_BATCH_ITEMS}")
    for index, item in enumerate(batch):
        validate_metric(index, item)


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status that http.HTTPStatus does not list, e.g. 599
        return f"Error {status}"


def json_type(value: Any) -> str:
    """Name the JSON type of a parsed value, for error details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---------------------------------------------------------- shared state


class Recorder:
    """The JSON Lines record file: one event a line, flushed after each write.

    Lines are written with ASCII escapes so that every line is valid UTF-8
    JSON, even when a client sent a lone surrogate escape.
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()  # guards _file and _sequence
        self._file = open(path, "a", encoding="utf-8")
        self._sequence = 0

    def write(self, event: dict) -> None:
        with self._lock:
            self._sequence += 1
            stamped = {"seq": self._sequence, "time": utc_now_text(), **event}
            self._file.write(json.dumps(stamped) + "\n")
            self._file.flush()

    def read_text(self) -> str:
        with self._lock:
            with open(self.path, encoding="utf-8") as source:
                return source.read()

    def clear(self) -> None:
        with self._lock:
            self._file.truncate(0)
            self._file.seek(0)
            self._sequence = 0

    def close(self) -> None:
        with self._lock:
            self._file.close()


def utc_now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RateLimiter:
    """A sliding-window request limit: at most `limit` requests in `window` seconds."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()  # guards _times
        self._times: deque[float] = deque()

    def acquire(self) -> Optional[int]:
        """Count one request. Returns None if allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) < self.limit:
                self._times.append(now)
                return None
            return max(1, math.ceil(self._times[0] + self.window - now))


@dataclass
class FaultDecision:
    """What to do to one API request: `action` is None, "fail" or "drop"."""

    delay: float = 0.0
    action: Optional[str] = None
    status: int = 0
    retry_after: int = 0
    retry_after_header: bool = False


@dataclass
class FaultPlan:
    """Faults injected through the control endpoint.

    Each API request first takes one from delay_next, if it is non-zero.
    It then takes one from drop_next or, when that is zero, from fail_next,
    so a request is delayed, dropped or failed, or delayed and then one of
    the others.
    """

    fail_next: int = 0
    status: int = 503
    retry_after: int = 1
    retry_after_header: bool = False
    drop_next: int = 0
    delay: float = 0.0
    delay_next: int = 0
    rate_limits: dict = field(default_factory=dict)  # service name -> RateLimiter

    def take(self) -> FaultDecision:
        decision = FaultDecision()
        if self.delay_next > 0:
            self.delay_next -= 1
            decision.delay = self.delay
        if self.drop_next > 0:
            self.drop_next -= 1
            decision.action = "drop"
        elif self.fail_next > 0:
            self.fail_next -= 1
            decision.action = "fail"
            decision.status = self.status
            decision.retry_after = self.retry_after
            decision.retry_after_header = self.retry_after_header
        return decision

    def describe(self) -> dict:
        return {
            "fail_next": self.fail_next,
            "status": self.status,
            "retry_after": self.retry_after,
            "retry_after_header": self.retry_after_header,
            "drop_next": self.drop_next,
            "delay": self.delay,
            "delay_next": self.delay_next,
            "rate_limit": {
                name: {"limit": limiter.limit, "window": limiter.window}
                for name, limiter in self.rate_limits.items()
            },
        }


CONTROL_KEYS = (
    "reset", "clear", "fail_next", "status", "retry_after", "retry_after_header",
    "drop_next", "delay", "delay_next", "rate_limit",
)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def configure_faults(plan: FaultPlan, settings: dict) -> FaultPlan:
    """Return a new plan with the control request's settings applied to `plan`.

    All settings are validated before any takes effect. Raises
    ValueError naming the invalid setting.
    """
    unknown = [key for key in settings if key not in CONTROL_KEYS]
    if unknown:
        raise ValueError(f"unknown control keys {unknown}. Known keys: {', '.join(CONTROL_KEYS)}")

    new_plan = FaultPlan() if settings.get("reset") else FaultPlan(**vars(plan))
    apply_fail_settings(new_plan, settings)

    if "drop_next" in settings:
        if not is_count(settings["drop_next"]):
            raise ValueError("'drop_next' must be a non-negative integer")
        new_plan.drop_next = settings["drop_next"]

    if "delay" in settings:
        delay = settings["delay"]
        if not is_seconds(delay) or delay > MAX_INJECTED_DELAY:
            raise ValueError(f"'delay' must be a number of seconds from 0 to {MAX_INJECTED_DELAY:g}")
        new_plan.delay = float(delay)
        new_plan.delay_next = 1
    if "delay_next" in settings:
        if not is_count(settings["delay_next"]):
            raise ValueError("'delay_next' must be a non-negative integer")
        new_plan.delay_next = settings["delay_next"]

    if "rate_limit" in settings:
        new_plan.rate_limits = build_rate_limits(settings["rate_limit"])
    return new_plan


def apply_fail_settings(plan: FaultPlan, settings: dict) -> None:
    """Apply fail_next and its options, resetting any option left out to its default.

    Raises ValueError.
    """
    options = [key for key in ("status", "retry_after", "retry_after_header") if key in settings]
    if "fail_next" not in settings:
        if options:
            raise ValueError(f"{options} apply only together with 'fail_next'")
        return

    fail_next = settings["fail_next"]
    status = settings.get("status", 503)
    retry_after = settings.get("retry_after", 1)
    retry_after_header = settings.get("retry_after_header", False)
    if not is_count(fail_next):
        raise ValueError("'fail_next' must be a non-negative integer")
    if not (is_count(status) and 400 <= status <= 599):
        raise ValueError("'status' must be an HTTP status from 400 to 599")
    if not is_count(retry_after):
        raise ValueError("'retry_after' must be a non-negative integer of seconds")
    if not isinstance(retry_after_header, bool):
        raise ValueError("'retry_after_header' must be true or false")

    plan.fail_next = fail_next
    plan.status = status
    plan.retry_after = retry_after
    plan.retry_after_header = retry_after_header


def build_rate_limits(setting: Any) -> dict:
    """Build the limiters for a `rate_limit` setting. Raises ValueError.

    The setting is an object {"errors": N, "metrics": N, "window": S},
    where a service left out gets no limit and the window defaults to 60 s.
    true sets the services' own limits, and null or false turns limits off.
    """
    if setting is None or setting is False:
        return {}
    if setting is True:
        return {service.name: RateLimiter(service.rate_limit_per_minute, 60.0) for service in SERVICES.values()}
    if not isinstance(setting, dict):
        raise ValueError("'rate_limit' must be an object such as {\"errors\": 100, \"metrics\": 200}, true or null")
    unknown = [key for key in setting if key not in ("errors", "metrics", "window")]
    if unknown:
        raise ValueError(f"unknown 'rate_limit' keys {unknown}. Known keys: errors, metrics, window")
    window = setting.get("window", 60)
    if not is_seconds(window) or window == 0:
        raise ValueError("'rate_limit.window' must be a positive number of seconds")

    limits = {}
    for name in ("errors", "metrics"):
        limit = setting.get(name)
        if limit is None:
            continue
        if not is_count(limit) or limit == 0:
            raise ValueError(f"'rate_limit.{name}' must be a positive integer of requests per window")
        limits[name] = RateLimiter(limit, float(window))
    return limits


class ReceiverState:
    """Everything the request handlers share: options, records, error groups and faults."""

    def __init__(self, api_key: str, keep_alive: bool, recorder: Recorder, idle_timeout: float):
        self.api_key = api_key
        self.keep_alive = keep_alive
        self.recorder = recorder
        self.idle_timeout = idle_timeout
        # One lock guards the fields below it. Nothing else is locked while
        # it is held, except that clear() calls the recorder's own lock.
        self.lock = threading.Lock()
        self.next_connection = 0
        self.error_groups: dict[str, dict] = {}  # fingerprint -> {"id", "count"}
        self.faults = FaultPlan()

    def open_connection(self) -> int:
        with self.lock:
            self.next_connection += 1
            return self.next_connection

    def take_fault(self) -> FaultDecision:
        with self.lock:
            return self.faults.take()

    def apply_control(self, settings: dict) -> dict:
        with self.lock:
            self.faults = configure_faults(self.faults, settings)
            if settings.get("clear"):
                self.error_groups.clear()
                self.recorder.clear()
            return self.faults.describe()

    def describe_faults(self) -> dict:
        with self.lock:
            return self.faults.describe()

    def check_rate_limit(self, service: Service) -> Optional[int]:
        with self.lock:
            limiter = self.faults.rate_limits.get(service.name)
        return limiter.acquire() if limiter else None

    def count_error(self, fingerprint: str) -> dict:
        """Count one occurrence of a fingerprint. Returns its group: id, count and whether it is new."""
        with self.lock:
            group = self.error_groups.get(fingerprint)
            if group is None:
                group = {"id": len(self.error_groups) + 1, "count": 0}
                self.error_groups[fingerprint] = group
            group["count"] += 1
            return {"id": group["id"], "count": group["count"], "created": group["count"] == 1}


# ------------------------------------------------------------------- HTTP


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], state: ReceiverState):
        self.state = state
        super().__init__(address, RequestHandler)


class RequestHandler(BaseHTTPRequestHandler):
    """Serves one client connection, which carries several requests in keep-alive mode."""

    protocol_version = "HTTP/1.1"
    server_version = "monlight-receiver/1"
    server: ReceiverServer

    # ---------------------------------------------------------- plumbing

    body_consumed = False  # whether the current request's body has been read
    body_bytes = 0  # bytes of the current request's body read so far

    def setup(self) -> None:
        # StreamRequestHandler.setup applies self.timeout to the socket, so
        # an idle keep-alive connection or a short body ends the thread.
        self.timeout = self.server.state.idle_timeout
        super().setup()
        self.state = self.server.state
        self.connection_id = self.state.open_connection()

    def log_message(self, format: str, *args: Any) -> None:
        LOG.info("conn=%d %s %s", getattr(self, "connection_id", 0), self.address_string(), format % args)

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_PATCH(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # http.server calls this for malformed requests and unknown methods.
        # Its own version sends HTML, but the services always send JSON.
        self.close_connection = True
        self.send_json(code, {"detail": message or status_phrase(code)})

    def send_json(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
        """Send a JSON response, closing the connection unless it can be kept alive."""
        body = json.dumps(payload).encode("utf-8")
        closing = not self.state.keep_alive or self.close_connection or self.body_unread()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if closing:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def body_unread(self) -> bool:
        # Unread body bytes would be taken for the next request on a kept
        # connection, so a response sent without reading the body must close it.
        if getattr(self, "headers", None) is None or self.body_consumed:
            return False
        if self.headers.get("Transfer-Encoding") is not None:
            return True
        return self.headers.get("Content-Length") is not None and self.declared_length() != 0

    def read_body(self, length: int) -> bytes:
        body = self.rfile.read(length)
        self.body_consumed = True
        if len(body) < length:
            self.close_connection = True
            raise Rejection(400, f"body ended after {len(body)} of {length} bytes given in Content-Length")
        return body

    def recorded_headers(self) -> dict:
        """Copy the request headers for the record, the API key's value replaced by whether it matched."""
        copied: dict[str, Any] = {}
        for name, value in self.headers.items():
            if name.lower() == "x-api-key":
                copied[name] = value == self.state.api_key
            elif name in copied:
                copied[name] = f"{copied[name]}, {value}"
            else:
                copied[name] = value
        return copied

    def key_matches(self) -> bool:
        return self.headers.get("X-API-Key") == self.state.api_key

    # ----------------------------------------------------------- routing

    def dispatch(self) -> None:
        self.body_consumed = False
        self.body_bytes = 0
        path = urlsplit(self.path).path
        try:
            if path == HEALTH_PATH and self.command == "GET":
                self.send_json(200, {"status": "ok"})
            elif path == CONTROL_PATH and self.command == "POST":
                self.handle_control()
            elif path == CONTROL_PATH and self.command == "GET":
                self.send_json(200, {"faults": self.state.describe_faults()})
            elif path == RECORDS_PATH and self.command == "GET":
                self.send_records()
            elif path in SERVICES and self.command == "POST":
                self.handle_api(SERVICES[path])
            elif path in SERVICES or path in (HEALTH_PATH, CONTROL_PATH, RECORDS_PATH):
                self.reject(path, Rejection(405, "Method Not Allowed"))
            else:
                self.reject(path, Rejection(404, "Not Found"))
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as exc:
            LOG.info("conn=%d %s %s: connection lost: %s", self.connection_id, self.command, path, exc)
            self.close_connection = True
        except Exception:
            LOG.exception("conn=%d %s %s: internal error", self.connection_id, self.command, path)
            self.close_connection = True
            self.send_json(500, {"detail": "Internal Server Error"})

    def reject(self, path: str, rejection: Rejection, injected: bool = False) -> None:
        """Record a rejected request, then send its error response."""
        event = {
            "kind": "rejected",
            "path": path,
            "status": rejection.status,
            "detail": rejection.detail,
            "injected": injected,
            "conn": self.connection_id,
            "content_length": self.declared_length(),
            "body_bytes": self.body_bytes,
            "headers": self.recorded_headers(),
        }
        self.state.recorder.write(event)
        LOG.info("conn=%d %s %s rejected with %d: %s%s", self.connection_id, self.command, path,
                 rejection.status, rejection.detail, " (injected fault)" if injected else "")
        self.send_json(rejection.status, {"detail": rejection.detail, **rejection.extra}, rejection.headers)

    # ------------------------------------------------------- control API

    def handle_control(self) -> None:
        try:
            length = self.content_length(MAX_CONTROL_BODY)
            settings = parse_json_body(self.read_body(length))
            if not isinstance(settings, dict):
                raise Rejection(400, "control body must be a JSON object")
            faults = self.state.apply_control(settings)
        except Rejection as rejection:
            LOG.warning("control request rejected with %d: %s", rejection.status, rejection.detail)
            self.send_json(rejection.status, {"detail": rejection.detail})
            return
        except ValueError as exc:
            LOG.warning("control request rejected with 400: %s", exc)
            self.send_json(400, {"detail": str(exc)})
            return
        LOG.info("control %s -> faults %s", json.dumps(settings), json.dumps(faults))
        self.send_json(200, {"faults": faults})

    def send_records(self) -> None:
        body = self.state.recorder.read_text().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(body)))
        if not self.state.keep_alive:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    # ------------------------------------------------------------ the API

    def handle_api(self, service: Service) -> None:
        """Serve one POST to a service: faults, limits, key, rate limit, validation, then store."""
        self.record_violations(service)

        fault = self.state.take_fault()
        if fault.action is not None:
            self.serve_fault(service, fault)
            return

        try:
            length = self.content_length(service.max_body)
            body = self.read_body(length)
            self.body_bytes = len(body)
            if fault.delay:
                time.sleep(fault.delay)
            if not self.key_matches():
                raise Rejection(401, "Invalid or missing API key")
            retry_after = self.state.check_rate_limit(service)
            if retry_after is not None:
                raise Rejection(429, "Rate limit exceeded", {"retry_after": retry_after})
            payload = parse_json_body(body)
            if service is ERRORS:
                self.store_error_report(payload)
            else:
                self.store_metrics(payload)
        except Rejection as rejection:
            self.reject(service.path, rejection)

    def content_length(self, max_body: int) -> int:
        """Read Content-Length and check it against the body limit before the body is read.

        Raises Rejection with 411 when the header is missing, 400 when it
        is not a number and 413 when it is over the limit. HTTP defines 411
        Length Required for the missing header, and it also covers chunked
        bodies, which the services do not accept.
        """
        values = self.headers.get_all("Content-Length") or []
        if not values:
            self.close_connection = True
            raise Rejection(411, "Content-Length header is required")
        if len(set(values)) > 1 or not values[0].strip().isdigit():
            self.close_connection = True
            raise Rejection(400, f"invalid Content-Length {', '.join(values)!r}")
        length = int(values[0])
        if length > max_body:
            self.close_connection = True
            raise Rejection(413, f"body is {length} bytes, max {max_body}")
        return length

    def declared_length(self) -> Optional[int]:
        value = self.headers.get("Content-Length", "").strip()
        return int(value) if value.isdigit() else None

    def record_violations(self, service: Service) -> None:
        """Record what the contract forbids a client to send, and serve the request anyway."""
        base = {"kind": "violation", "path": service.path, "conn": self.connection_id}
        expect = self.headers.get("Expect")
        if expect is not None:
            # http.server has already sent "100 Continue" by now.
            self.state.recorder.write(
                {**base, "violation": "expect", "value": expect, "headers": self.recorded_headers()}
            )
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            self.state.recorder.write(
                {**base, "violation": "content-type", "value": content_type, "headers": self.recorded_headers()}
            )

    def serve_fault(self, service: Service, fault: FaultDecision) -> None:
        """Fail or drop an API request as the control endpoint asked."""
        length = self.declared_length()
        if length is not None and length <= service.max_body:
            self.body_bytes = len(self.rfile.read(length))
            self.body_consumed = True
        if fault.delay:
            time.sleep(fault.delay)

        if fault.action == "drop":
            # Closing without a status line looks to the client like a
            # server or proxy that died mid-request.
            self.state.recorder.write(
                {"kind": "dropped", "path": service.path, "conn": self.connection_id, "body_bytes": self.body_bytes}
            )
            self.close_connection = True
            return

        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if fault.status == 429:
            detail = "Rate limit exceeded"
            extra["retry_after"] = fault.retry_after
        else:
            detail = f"{status_phrase(fault.status)} (injected fault)"
        if fault.retry_after_header:
            headers["Retry-After"] = str(fault.retry_after)
        self.reject(service.path, Rejection(fault.status, detail, extra, headers), injected=True)

    def store_error_report(self, report: Any) -> None:
        # NOTE: the receiver never sends the tracker's third success response,
        # 201 {"status": "reopened"}, because nothing here resolves a group.
        dropped, unknown = validate_error_report(report)
        fingerprint, frame = fingerprint_error(report["project"], report["exception_type"], report["traceback"])
        group = self.state.count_error(fingerprint)
        if group["created"]:
            status = 201
            response_body = {"status": "created", "id": group["id"], "fingerprint": fingerprint}
        else:
            status = 200
            response_body = {"status": "incremented", "id": group["id"], "count": group["count"]}

        # The event is written before the response is sent, so a client
        # that has its response can already find the event in the record.
        self.state.recorder.write({
            "kind": "error",
            "status": status,
            "outcome": response_body["status"],
            "id": group["id"],
            "count": group["count"],
            "fingerprint": fingerprint,
            "frame": frame,
            "report": report,
            "dropped_fields": dropped,
            "unknown_fields": unknown,
            "conn": self.connection_id,
            "body_bytes": self.body_bytes,
            "headers": self.recorded_headers(),
        })
        self.send_json(status, response_body)

    def store_metrics(self, batch: Any) -> None:
        validate_metrics_batch(batch)
        self.state.recorder.write({
            "kind": "metrics",
            "status": 202,
            "count": len(batch),
            "metrics": batch,
            "conn": self.connection_id,
            "body_bytes": self.body_bytes,
            "headers": self.recorded_headers(),
        })
        self.send_json(202, {"status": "accepted", "count": len(batch)})


# ------------------------------------------------------------------- main


def write_port_file(path: str, port: int) -> None:
    """Write the port atomically, so that a reader never sees a partial file."""
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="ascii") as target:
        target.write(f"{port}\n")
    os.replace(temporary, path)


def watch_parent(pid: int, stop: Callable[[], None]) -> None:
    """Call `stop` once process `pid` has exited, so a killed test run leaves no receiver behind."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            LOG.info("parent process %d has exited, stopping", pid)
            stop()
            return
        except PermissionError:  # the process exists but belongs to someone else
            pass


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the monlight error tracker and metrics collector contract on 127.0.0.1 and record every request.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port to listen on, or 0 for a free port (default 0)")
    parser.add_argument("--api-key", required=True, help="the key that X-API-Key must equal")
    parser.add_argument("--record", required=True, metavar="FILE", help="JSON Lines file that events are appended to")
    parser.add_argument("--port-file", metavar="FILE", help="write the bound port to FILE once listening")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--close", dest="keep_alive", action="store_false",
                      help="close the connection after each response, like the services (default)")
    mode.add_argument("--keep-alive", dest="keep_alive", action="store_true",
                      help="keep HTTP/1.1 connections open for further requests, like a reverse proxy")
    parser.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="close a connection that sends nothing for this long (default 60)")
    parser.add_argument("--parent-pid", type=int, metavar="PID", help="stop when process PID exits")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="level of the log written to stderr (default info)")
    parser.set_defaults(keep_alive=False)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s receiver %(levelname)s %(message)s")

    try:
        recorder = Recorder(args.record)
    except OSError as exc:
        print(f"receiver: cannot open record file {args.record}: {exc}", file=sys.stderr)
        return 2
    state = ReceiverState(args.api_key, args.keep_alive, recorder, args.idle_timeout)
    try:
        server = ReceiverServer((HOST, args.port), state)
    except OSError as exc:
        print(f"receiver: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 2

    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"listening on {HOST}:{port}", flush=True)
    LOG.info("listening on %s:%d, %s mode, recording to %s", HOST, port,
             "keep-alive" if args.keep_alive else "close", args.record)

    # shutdown() waits for serve_forever() to return, so it must run on
    # another thread than the one serving, which the signal interrupts.
    def request_stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid, request_stop), daemon=True).start()

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        recorder.close()
        if args.port_file:
            try:
                os.remove(args.port_file)
            except OSError:
                pass
        LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
