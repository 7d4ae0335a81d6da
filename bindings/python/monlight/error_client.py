"""Error client for the monlight error tracker.

This module turns an exception and its request context into a
monlight_report: type, message, formatted traceback, URL, method, headers,
user and extra data. The engine then builds the tracker's JSON body from
the report, removes PII headers and applies the tracker's limits. It sends
the body from the calling thread (``report_error_sync``) or from its
background thread (``await report_error``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import traceback
from typing import Any, Mapping, Optional

from monlight import _engine
from monlight._engine import ffi, lib

logger = logging.getLogger(__name__)

# Nesting depth of ``extra`` past which values are replaced by "<too deep>".
# Real data rarely nests this deep, and the copy stays far below Python's
# recursion limit.
EXTRA_MAX_DEPTH = 64

_FIELD_NAMES = {
    lib.MONLIGHT_FIELD_EXCEPTION_TYPE: "exception_type",
    lib.MONLIGHT_FIELD_MESSAGE: "message",
    lib.MONLIGHT_FIELD_TRACEBACK: "traceback",
    lib.MONLIGHT_FIELD_REQUEST_URL: "request_url",
    lib.MONLIGHT_FIELD_REQUEST_METHOD: "request_method",
    lib.MONLIGHT_FIELD_USER_ID: "user_id",
    lib.MONLIGHT_FIELD_EXTRA_JSON: "extra",
}


class ErrorClient:
    """Client for the monlight error tracker.

    Reporting is fire-and-forget: neither ``report_error`` nor
    ``report_error_sync`` raises into the application, whatever the server
    or the input does. Failures are logged as warnings on the
    ``monlight.error_client`` logger. A report that fails with a retryable
    error (no connection, 429, 503) is retried in the background with backoff.

    The headers authorization, cookie, set-cookie and x-api-key, plus
    ``excluded_headers``, are removed (compared without case) before a
    report leaves the process.

    Args:
        base_url: URL of the error tracker, such as "http://localhost:5010".
        api_key: API key, sent as the X-API-Key header.
        project: Project name that the tracker groups errors under.
        environment: Environment name sent with every report.
        timeout: Seconds that one HTTP request may take, connection included.
        excluded_headers: More header names to remove from reports.

    Raises:
        ValueError: ``base_url`` is not an http:// or https:// URL with a host,
            or ``api_key`` is empty or contains spaces or control characters.
            An invalid ``timeout`` is only logged, and the default is used.

    The attributes keep the values given (``base_url`` without a trailing
    slash); changing them afterwards does not reconfigure the client.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        project: str = "default",
        environment: str = "prod",
        timeout: float = 5.0,
        excluded_headers: Optional[set[str]] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if isinstance(base_url, str) else base_url
        self.api_key = api_key
        self.project = project
        self.environment = environment
        self.timeout = timeout
        self._wait_limit = _engine.DEFAULT_TIMEOUT

        options = _engine.Options("ErrorClient", logger)
        options.set_string(lib.MONLIGHT_OPT_BASE_URL, "base_url", base_url)
        options.set_string(lib.MONLIGHT_OPT_API_KEY, "api_key", api_key)
        options.set_string(lib.MONLIGHT_OPT_PROJECT, "project", str(project))
        options.set_string(lib.MONLIGHT_OPT_ENVIRONMENT, "environment", str(environment))
        if options.set_number(lib.MONLIGHT_OPT_TIMEOUT, "timeout", timeout):
            self._wait_limit = float(timeout)
        if isinstance(excluded_headers, str):
            excluded_headers = {excluded_headers}  # one name, not a set of its letters
        for header in excluded_headers or ():
            options.add_excluded_header(header)
        self._client = options.create(lib.monlight_error_client_new, "monlight_error_client")
        self._finalizer = _engine.attach_finalizer(self, lib.monlight_error_client_free, self._client)

    def __repr__(self) -> str:
        return f"ErrorClient(base_url={_engine.url_for_display(self.base_url)!r}, project={self.project!r})"

    async def report_error(
        self,
        exception: BaseException,
        request_context: Optional[dict[str, Any]] = None,
    ) -> None:
        """Report an exception from the engine's background thread, without blocking the loop.

        The coroutine resumes when the tracker has stored the report or its
        delivery has failed, and after ``timeout`` seconds at most. A report
        that is still queued then, or waiting for a retry because the tracker
        is down, stays with the engine, which goes on delivering it.
        Failures are logged, never raised. Cancelling the coroutine does not
        cancel the delivery.

        Args:
            exception: The exception to report.
            request_context: Optional keys ``request_url``, ``request_method``,
                ``request_headers`` (a mapping), ``user_id`` (sent as a string)
                and ``extra`` (any value that JSON can encode; other values are
                sent as their repr() and cycles are cut).
        """
        try:
            report = self._build_report(exception, request_context)
            waiter = _engine.ReportWaiter(asyncio.get_running_loop())
            status = lib.monlight_error_client_enqueue(self._client, report, _engine.REPORT_DONE_CALLBACK,
                                                       waiter.handle)
        except Exception:
            logger.warning("failed to report %s to the error tracker", _describe(exception), exc_info=True)
            return
        if status != _engine.OK and not waiter.finished:
            # Not queued, so the done callback will never come.
            waiter.abandon()
            self._log_not_sent(status, exception)
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout=self._wait_limit)
        except asyncio.TimeoutError:
            pass  # still queued or waiting for a retry; the engine goes on delivering it

    def report_error_sync(
        self,
        exception: BaseException,
        request_context: Optional[dict[str, Any]] = None,
    ) -> None:
        """Report an exception from this thread, waiting at most ``timeout`` seconds.

        When the tracker cannot be reached or responds with 429 or 503, the
        report is handed to the background thread for retries, and this call
        returns.
        Failures are logged, never raised. Takes the same arguments as
        ``report_error``.
        """
        try:
            report = self._build_report(exception, request_context)
            status = lib.monlight_error_client_send(self._client, report)
        except Exception:
            logger.warning("failed to report %s to the error tracker", _describe(exception), exc_info=True)
            return
        if status == _engine.SHUT_DOWN:
            self._log_not_sent(status, exception)

    def _enqueue_without_waiting(
        self,
        exception: BaseException,
        request_context: Optional[dict[str, Any]] = None,
    ) -> None:
        """Queue a report for the background thread and return at once; for callers without asyncio."""
        try:
            report = self._build_report(exception, request_context)
            status = lib.monlight_error_client_enqueue(self._client, report, ffi.NULL, ffi.NULL)
        except Exception:
            logger.warning("failed to report %s to the error tracker", _describe(exception), exc_info=True)
            return
        if status != _engine.OK:
            self._log_not_sent(status, exception)

    def stats(self) -> dict[str, int]:
        """Return the engine's counters for this client.

        - ``delivered``: reports the tracker stored.
        - ``dropped``: reports pushed out of a full queue, or unsent at the exit deadline.
        - ``retried``: send attempts that were repeated.
        - ``failed``: reports the tracker rejected, or lost in a request that
          cannot be retried safely.
        - ``pending``: reports queued or being sent now.
        """
        stat = lib.monlight_error_client_stat
        client = self._client
        return {
            "delivered": int(stat(client, lib.MONLIGHT_STAT_DELIVERED)),
            "dropped": int(stat(client, lib.MONLIGHT_STAT_DROPPED)),
            "retried": int(stat(client, lib.MONLIGHT_STAT_RETRIED)),
            "failed": int(stat(client, lib.MONLIGHT_STAT_FAILED)),
            "pending": int(stat(client, lib.MONLIGHT_STAT_PENDING)),
        }

    # ------------------------------------------------------------ building

    def _build_report(self, exception: BaseException, request_context: Optional[Mapping[str, Any]]) -> Any:
        """Build the engine report for an exception and its request context."""
        report = ffi.gc(lib.monlight_report_new(), lib.monlight_report_free)
        if report == ffi.NULL:
            raise MemoryError("out of memory while creating an error report")

        _set_field(report, lib.MONLIGHT_FIELD_EXCEPTION_TYPE, type(exception).__qualname__)
        _set_field(report, lib.MONLIGHT_FIELD_MESSAGE, _safe_str(exception))
        _set_field(report, lib.MONLIGHT_FIELD_TRACEBACK, _format_traceback(exception))
        if not request_context:
            return report
        if not isinstance(request_context, Mapping):
            logger.warning("request_context must be a dict, got %s; it was not sent",
                           type(request_context).__name__)
            return report

        for key, field in (("request_url", lib.MONLIGHT_FIELD_REQUEST_URL),
                           ("request_method", lib.MONLIGHT_FIELD_REQUEST_METHOD),
                           ("user_id", lib.MONLIGHT_FIELD_USER_ID)):
            value = request_context.get(key)
            if value is not None:
                _set_field(report, field, _safe_str(value))
        headers = request_context.get("request_headers")
        if headers is not None:
            _add_headers(report, headers)
        if "extra" in request_context and request_context["extra"] is not None:
            _set_field(report, lib.MONLIGHT_FIELD_EXTRA_JSON, encode_extra(request_context["extra"]))
        return report

    def _log_not_sent(self, status: int, exception: BaseException) -> None:
        if status == _engine.SHUT_DOWN:
            logger.warning("%s was not reported: the error client is shut down, as it is once the process exits",
                           _describe(exception))
        else:
            logger.warning("%s was not reported: %s", _describe(exception), _engine.status_name(status))


def _set_field(report: Any, field: int, text: str) -> None:
    # surrogatepass keeps every code point; the engine replaces what is not
    # valid UTF-8 with U+FFFD when it writes the body.
    encoded = text.encode("utf-8", "surrogatepass")
    status = lib.monlight_report_set(report, field, encoded, len(encoded))
    if status != _engine.OK:
        raise MemoryError(f"could not set {_FIELD_NAMES[field]} of an error report: {_engine.status_name(status)}")


def _add_headers(report: Any, headers: Any) -> None:
    """Add request headers from a mapping (or a list of pairs) in their order."""
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        pairs = [(_safe_str(name), _safe_str(value)) for name, value in items]
    except (TypeError, ValueError):
        logger.warning("request_headers must be a dict of header names to values, got %s; they were not sent",
                       type(headers).__name__)
        return
    for name, value in pairs:
        name_bytes = name.encode("utf-8", "surrogatepass")
        value_bytes = value.encode("utf-8", "surrogatepass")
        lib.monlight_report_add_header(report, name_bytes, len(name_bytes), value_bytes, len(value_bytes))


def _describe(exception: Any) -> str:
    return f"exception {type(exception).__qualname__}"


def _safe_str(value: Any) -> str:
    """Return str(value), or a placeholder when the object's __str__ raises."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__} object>"


def _format_traceback(exception: BaseException) -> str:
    """Format the traceback as Python prints it, chained exceptions included."""
    try:
        return "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    except Exception:
        return ""


# ------------------------------------------------------------------ extra


def encode_extra(extra: Any) -> str:
    """Return ``extra`` as JSON text, replacing what JSON cannot encode.

    Objects of other types become their repr(), NaN and infinities their
    names, a reference back to a dict or list that contains it "<cycle>",
    and values nested deeper than EXTRA_MAX_DEPTH "<too deep>". A warning
    names the first problem. The replacement copy always encodes, so the
    report is never lost to its ``extra``.
    """
    try:
        return json.dumps(extra, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        problem = str(exc) or type(exc).__name__
    logger.warning("extra could not be encoded as JSON (%s); unsupported values were replaced", problem)
    return json.dumps(_json_safe(extra, set(), 0), ensure_ascii=False, allow_nan=False)


def _json_safe(value: Any, containers_on_path: set[int], depth: int) -> Any:
    """Return a copy of value that json.dumps can encode (see encode_extra)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        # Python refuses to print ints of more than 4300 digits (the
        # default int_max_str_digits); 12,000 bits stay well under that.
        return value if value.bit_length() <= 12000 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= EXTRA_MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, (dict, list, tuple)):
        identity = id(value)
        if identity in containers_on_path:
            return "<cycle>"
        containers_on_path.add(identity)
        try:
            if isinstance(value, dict):
                return {_json_key(key): _json_safe(item, containers_on_path, depth + 1)
                        for key, item in value.items()}
            return [_json_safe(item, containers_on_path, depth + 1) for item in value]
        finally:
            containers_on_path.discard(identity)
    return _safe_repr(value)


def _json_key(key: Any) -> Any:
    # json.dumps accepts these key types itself and converts them to text.
    if key is None or isinstance(key, (str, bool, int)):
        return key
    if isinstance(key, float) and math.isfinite(key):
        return key
    return _safe_repr(key)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__} object>"
