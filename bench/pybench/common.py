"""Constants, context and the row format shared by the Python figures.

Each figure function returns a dict that report.py turns into a table row,
with these keys:

- key, title, unit;
- better: "lower" or "higher", the direction in which the unit improves;
- target: the ratio the product must reach, alternative / product for
  "lower" units and product / alternative for "higher" ones;
- product, alternative: medians over rounds, and ratio: the median of
  the per-round ratios;
- second, second_name: a popular library doing a comparable job, or None;
- details: raw samples and notes.

Each round runs every implementation once, in an order that rotates, so
that a busy spell of the machine hits all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import monlight
import monlight._native
import purepython_monlight

from pybench.timing import median, paired_ratio

API_KEY = "bench-key"
COUNTER_NAME = "http_requests_total"
HISTOGRAM_NAME = "http_request_duration_seconds"
LABELS = {"method": "GET", "endpoint": "/users/{id}", "status": "200"}
METHODS = ("GET", "POST", "PUT", "DELETE")
LABEL_SETS = [{"method": method, "endpoint": "/users/{id}", "status": "200"} for method in METHODS]
REQUEST_CONTEXT = {
    "request_url": "http://testserver/users/42",
    "request_method": "GET",
    "request_headers": {
        "host": "testserver",
        "user-agent": "bench/1.0",
        "accept": "application/json",
        "authorization": "Bearer not-a-real-token",
    },
}

BENCH_DIR = Path(__file__).resolve().parent.parent
REPOSITORY = BENCH_DIR.parent


@dataclass
class Context:
    sink_url: str
    sink_port: int
    scale: float = 1.0  # below 1 for a quick trial run

    def count(self, full: int) -> int:
        return max(10, int(full * self.scale))


class WarningCounter(logging.Handler):
    """Counts the warnings that both packages log, so that a silently failing run shows up."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}"


WARNINGS = WarningCounter()
logging.getLogger().addHandler(WARNINGS)


def environment() -> dict[str, Any]:
    """Describe the product under test, for results.md."""
    return {
        "monlight_module": monlight.__file__,
        "native_module": monlight._native.__file__,
        "purepython_module": purepython_monlight.__file__,
    }


def make_row(key: str, title: str, unit: str, better: str, target: float, samples: dict[str, list[float]],
         second_name: Optional[str] = None, **details: Any) -> dict[str, Any]:
    row = {
        "key": key,
        "title": title,
        "unit": unit,
        "better": better,
        "target": target,
        "product": median(samples["product"]),
        "alternative": median(samples["purepython"]),
        "ratio": paired_ratio(samples["purepython"], samples["product"]),
        "second": median(samples[second_name]) if second_name else None,
        "second_name": second_name,
        "details": {"samples": samples, **details},
    }
    return row
