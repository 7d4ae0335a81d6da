"""Metrics client for the monlight metrics collector.

``counter()``, ``histogram()`` and ``gauge()`` hand each metric to the
engine, which timestamps it, appends it to its buffer and returns. The
buffer is sent in batches by the engine's background thread (after
``start()``) or by ``flush()``. To keep a record call cheap, this module
encodes each metric name and the JSON text of each distinct label set
once, and reuses them from two bounded caches.
"""

from __future__ import annotations

import logging
import threading
from json.encoder import encode_basestring  # the C-accelerated string encoder of json.dumps
from typing import Any, Mapping, Optional

from monlight import _engine
from monlight._engine import lib

logger = logging.getLogger(__name__)

# Entries each cache keeps before it is emptied and refilled. Real
# applications use a few dozen names and label sets; the bound only
# matters when an application puts unbounded values into labels.
CACHE_MAX_ENTRIES = 4096
CACHE_MAX_ENTRY_BYTES = 4096

_COUNTER = lib.MONLIGHT_COUNTER
_HISTOGRAM = lib.MONLIGHT_HISTOGRAM
_GAUGE = lib.MONLIGHT_GAUGE
_TYPE_NAMES = {_COUNTER: "counter", _HISTOGRAM: "histogram", _GAUGE: "gauge"}

_record_json = lib.monlight_metrics_client_record_json

# The record call that holds the GIL (monlight/_fastpath.c), given the
# engine function's address. Without the compiled module, every record
# takes the cffi path below.
try:
    from monlight import _fastpath

    _fast_record = _fastpath.record
    _RECORD_JSON_ADDRESS = int(_engine.ffi.cast("uintptr_t", _engine.ffi.addressof(
        lib, "monlight_metrics_client_record_json")))
except ImportError:  # pragma: no cover - the package always builds it
    _fast_record = None
    _RECORD_JSON_ADDRESS = 0

# The engine escapes DEL in JSON strings but Python's encoder does not, so
# it is escaped here. The label text is then byte for byte what the engine
# writes for the same labels.
_DEL_ESCAPE = str.maketrans({"\x7f": "\\u007f"})


def _quote_json_string(text: str) -> str:
    return encode_basestring(text).translate(_DEL_ESCAPE)


def _utf8(text: str) -> bytes:
    """Encode text as UTF-8, replacing lone surrogates with U+FFFD as the engine does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")


class _NameCache(dict):
    """Metric name -> (UTF-8 bytes, length). Names that are not strings raise TypeError."""

    def __missing__(self, name: Any) -> tuple[bytes, int]:
        if not isinstance(name, str):
            raise TypeError(f"metric name must be a string, got {type(name).__name__}")
        # surrogatepass keeps a lone surrogate as invalid UTF-8, so that the
        # engine rejects the name with a warning instead of renaming the metric.
        encoded = name.encode("utf-8", "surrogatepass")
        entry = (encoded, len(encoded))
        if len(self) >= CACHE_MAX_ENTRIES:
            self.clear()
        self[name] = entry
        return entry


class _LabelsCache(dict):
    """tuple(labels.items()) -> (JSON text of the labels object, its length).

    Only label sets whose keys and values are all of type str are cached
    under their items. Other values are converted with str() first (see
    _labels_json), because keys that compare equal, such as 1, 1.0 and
    True, would otherwise share one entry with different text.
    """

    def __missing__(self, items: tuple[tuple[Any, Any], ...]) -> tuple[bytes, int]:
        for key, value in items:
            if type(key) is not str or type(value) is not str:
                raise TypeError("label keys and values are not all plain strings")
        text = ",".join(f"{_quote_json_string(key)}:{_quote_json_string(value)}" for key, value in items)
        encoded = _utf8("{" + text + "}")
        entry = (encoded, len(encoded))
        # Huge label sets are not kept, so that the cache's memory stays
        # bounded by its entry count times a small size.
        if len(encoded) <= CACHE_MAX_ENTRY_BYTES:
            if len(self) >= CACHE_MAX_ENTRIES:
                self.clear()
            self[items] = entry
        return entry


_names = _NameCache()
_labels = _LabelsCache()


def _labels_json(labels: Any) -> tuple[bytes, int]:
    """Return the cached JSON text of any labels mapping, converting keys and values with str()."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a dict of strings, got {type(labels).__name__}")
    items = tuple((key if type(key) is str else str(key), value if type(value) is str else str(value))
                  for key, value in labels.items())
    if not items:
        return b"", 0
    return _labels[items]


def _describe(value: Any) -> str:
    """Return repr(value) for a warning, shortened, or a placeholder when repr() itself fails."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an object's own __repr__ may raise anything
        return f"<unprintable {type(value).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


def _message_of(error: BaseException) -> str:
    """Return str(error), or its type name when str() itself fails."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - an exception's own __str__ may raise anything
        return f"{type(error).__name__} (its message could not be read)"


def _metric_value(value: Any) -> float:
    """Convert a metric value to float; raise TypeError or ValueError for a non-number."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"value must be a number, got {type(value).__name__} {value!r:.40}")
    return float(value)


class MetricsClient:
    """Client for the monlight metrics collector.

    Metrics are buffered by the engine and sent as batch POSTs every
    ``flush_interval`` seconds once ``start()`` has been called, on
    ``flush()``, on ``shutdown()`` and when the process exits. A batch
    that fails with a retryable error (no connection, 429, 503) is kept
    and retried with backoff; other failures are logged and counted.
    Every method is thread-safe and none raises into the application:
    problems are logged as warnings on the ``monlight.metrics_client``
    logger.

    Args:
        base_url: URL of the metrics collector, such as "http://localhost:5012".
        api_key: API key, sent as the X-API-Key header.
        flush_interval: Seconds between automatic flushes after ``start()``.
        timeout: Seconds that one HTTP request may take, connection included.
        project: Project name added to every metric, or None to send none.

    Raises:
        ValueError: ``base_url`` is not an http:// or https:// URL with a host,
            or ``api_key`` is empty or contains spaces or control characters.
            An invalid ``flush_interval`` or ``timeout`` is only logged, and
            the default is used.

    The attributes keep the values given (``base_url`` without a trailing
    slash); changing them afterwards does not reconfigure the client.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        flush_interval: float = 10.0,
        timeout: float = 5.0,
        project: Optional[str] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if isinstance(base_url, str) else base_url
        self.api_key = api_key
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.project = project
        self._warned_shut_down = False
        self._dropped_lock = threading.Lock()
        self._dropped_here = 0

        options = _engine.Options("MetricsClient", logger)
        options.set_string(lib.MONLIGHT_OPT_BASE_URL, "base_url", base_url)
        options.set_string(lib.MONLIGHT_OPT_API_KEY, "api_key", api_key)
        if project is not None:
            options.set_string(lib.MONLIGHT_OPT_PROJECT, "project", str(project))
        options.set_number(lib.MONLIGHT_OPT_FLUSH_INTERVAL, "flush_interval", flush_interval)
        options.set_number(lib.MONLIGHT_OPT_TIMEOUT, "timeout", timeout)
        self._client = options.create(lib.monlight_metrics_client_new, "monlight_metrics_client")
        self._address = int(_engine.ffi.cast("uintptr_t", self._client))
        self._finalizer = _engine.attach_finalizer(self, lib.monlight_metrics_client_free, self._client)

    def __repr__(self) -> str:
        return f"MetricsClient(base_url={_engine.url_for_display(self.base_url)!r}, project={self.project!r})"

    # ------------------------------------------------------------ recording
    #
    # The three record methods repeat the same few lines instead of calling
    # a shared helper: one Python call less is a measurable part of a
    # record's cost. The compiled fast path handles a str name, a number
    # and a dict of str to str; anything else (or a missing fast path)
    # returns -1 or raises, and takes _record_slowly, which converts,
    # validates, logs, and records through cffi.

    def counter(self, name: str, labels: Optional[dict[str, str]] = None, value: float = 1) -> None:
        """Record a counter increment (the collector sums them).

        Args:
            name: Metric name, 1 to 200 bytes of UTF-8, such as "signups_total".
            labels: Label names and values, sent in the order given. Values
                that are not strings are converted with str().
            value: The increment; any finite number.
        """
        try:
            status = _fast_record(_RECORD_JSON_ADDRESS, self._address, _COUNTER, name, value, labels)
        except Exception:
            status = -1
        if status:
            if status < 0:
                status = self._record_slowly(_COUNTER, name, value, labels)
            if status:
                self._report_status(status, name)

    def histogram(self, name: str, value: float, labels: Optional[dict[str, str]] = None) -> None:
        """Record one observation of a distribution, such as a duration in seconds.

        Args:
            name: Metric name, 1 to 200 bytes of UTF-8.
            value: The observed value; any finite number.
            labels: Label names and values, sent in the order given.
        """
        try:
            status = _fast_record(_RECORD_JSON_ADDRESS, self._address, _HISTOGRAM, name, value, labels)
        except Exception:
            status = -1
        if status:
            if status < 0:
                status = self._record_slowly(_HISTOGRAM, name, value, labels)
            if status:
                self._report_status(status, name)

    def gauge(self, name: str, value: float, labels: Optional[dict[str, str]] = None) -> None:
        """Record the current value of something that goes up and down.

        Args:
            name: Metric name, 1 to 200 bytes of UTF-8.
            value: The current value; any finite number.
            labels: Label names and values, sent in the order given.
        """
        try:
            status = _fast_record(_RECORD_JSON_ADDRESS, self._address, _GAUGE, name, value, labels)
        except Exception:
            status = -1
        if status:
            if status < 0:
                status = self._record_slowly(_GAUGE, name, value, labels)
            if status:
                self._report_status(status, name)

    def _record_slowly(self, metric_type: int, name: Any, value: Any, labels: Any) -> int:
        """Record a metric that the fast path could not: convert, validate, warn. Never raises."""
        type_name = _TYPE_NAMES[metric_type]
        try:
            if not isinstance(name, str):
                raise TypeError(f"metric name must be a string, got {type(name).__name__}")
            name_bytes, name_length = _names[name]
            number = _metric_value(value)
            labels_bytes, labels_length = _labels_json(labels) if labels else (b"", 0)
        except Exception as exc:  # noqa: BLE001 - a label's own __str__ may raise anything
            self._count_dropped()
            logger.warning("%s %s dropped: %s", type_name, _describe(name), _message_of(exc))
            return _engine.OK
        try:
            return _record_json(self._client, metric_type, name_bytes, name_length, number,
                                labels_bytes, labels_length)
        except Exception:
            self._count_dropped()
            logger.warning("%s %s dropped: the engine call failed", type_name, _describe(name),
                           exc_info=True)
            return _engine.OK

    def _count_dropped(self) -> None:
        # Metrics rejected here never reach the engine, whose counter
        # stats() adds this one to.
        with self._dropped_lock:
            self._dropped_here += 1

    def _report_status(self, status: int, name: Any) -> None:
        # The engine has already logged rejected metrics; only a record
        # after shutdown() is silent there, and it is logged once here.
        if status == _engine.SHUT_DOWN and not self._warned_shut_down:
            self._warned_shut_down = True
            logger.warning("metric %r dropped: the metrics client is shut down, and metrics "
                           "recorded after shutdown() are not sent (logged once per client)", name)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the background thread that flushes every flush_interval seconds.

        Calling it again does nothing. After ``shutdown()`` it does nothing
        either: a shut-down client stays shut down.
        """
        lib.monlight_metrics_client_start(self._client)

    def flush(self) -> None:
        """Send everything buffered now from this thread, waiting at most ``timeout`` per batch.

        Batches that fail with a retryable error stay buffered for the next
        flush. Failures are logged as warnings, never raised.
        """
        lib.monlight_metrics_client_flush(self._client)

    def shutdown(self) -> None:
        """Stop the flush thread and send what is buffered, within the engine's exit deadline.

        The deadline is 3 seconds; what cannot be delivered by then is
        dropped and counted in ``stats()["dropped"]``. Calling it again
        does nothing, and metrics recorded afterwards are dropped.
        """
        _engine.call_serialized(lib.monlight_metrics_client_shutdown, self._client)

    def stats(self) -> dict[str, int]:
        """Return the engine's counters for this client.

        - ``delivered``: metrics the collector accepted.
        - ``dropped``: metrics rejected at record time, over a buffer cap, or
          unsent at the exit deadline.
        - ``retried``: metrics in send attempts that were repeated.
        - ``failed``: metrics the collector rejected, or lost in a request
          that cannot be retried safely.
        - ``pending``: metrics buffered or being sent now.
        """
        stat = lib.monlight_metrics_client_stat
        client = self._client
        return {
            "delivered": int(stat(client, lib.MONLIGHT_STAT_DELIVERED)),
            "dropped": int(stat(client, lib.MONLIGHT_STAT_DROPPED)) + self._dropped_here,
            "retried": int(stat(client, lib.MONLIGHT_STAT_RETRIED)),
            "failed": int(stat(client, lib.MONLIGHT_STAT_FAILED)),
            "pending": int(stat(client, lib.MONLIGHT_STAT_PENDING)),
        }

