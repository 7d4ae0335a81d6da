"""Metrics client of the pure-Python comparison package.

Each recorded metric becomes a dict with its own formatted UTC timestamp
and is appended, under a threading.Lock, to a list. flush() swaps the
list out, encodes it with json and POSTs it with a new httpx client.
The collector accepts at most 1000 metrics per request, so the list is
sent in slices of 1000; the published documentation does not say how
that package splits a larger buffer.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from typing import Any, Optional

import httpx

logger = logging.getLogger(__name__)

BATCH_MAX = 1000
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class MetricsClient:
    """Buffers metrics in memory and POSTs them as batches every flush_interval seconds."""

    def __init__(self, base_url: str, api_key: str, flush_interval: float = 10.0, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.flush_interval = flush_interval
        self.timeout = timeout
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _record(self, name: str, metric_type: str, value: float, labels: Optional[dict[str, str]]) -> None:
        metric: dict[str, Any] = {
            "name": name,
            "type": metric_type,
            "value": value,
            "timestamp": datetime.now(timezone.utc).strftime(TIMESTAMP_FORMAT),
        }
        if labels:
            metric["labels"] = labels
        with self._lock:
            self._buffer.append(metric)

    def counter(self, name: str, labels: Optional[dict[str, str]] = None, value: float = 1) -> None:
        self._record(name, "counter", value, labels)

    def histogram(self, name: str, value: float, labels: Optional[dict[str, str]] = None) -> None:
        self._record(name, "histogram", value, labels)

    def gauge(self, name: str, value: float, labels: Optional[dict[str, str]] = None) -> None:
        self._record(name, "gauge", value, labels)

    def start(self) -> None:
        """Start the daemon thread that flushes every flush_interval seconds; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="monlight-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def flush(self) -> None:
        """POST everything buffered now; a failed batch is logged and dropped."""
        with self._lock:
            metrics, self._buffer = self._buffer, []
        if not metrics:
            return
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        try:
            with httpx.Client(timeout=self.timeout) as client:
                for start in range(0, len(metrics), BATCH_MAX):
                    body = json.dumps(metrics[start:start + BATCH_MAX])
                    response = client.post(f"{self.base_url}/api/metrics", content=body, headers=headers)
                    if response.status_code != 202:
                        logger.warning("metrics collector responded %d: %s", response.status_code,
                                       response.text[:200])
        except Exception:
            logger.warning("failed to send %d metrics; they were dropped", len(metrics), exc_info=True)

    def shutdown(self) -> None:
        """Stop the flush thread and send what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)
            self._thread = None
        self.flush()
