"""A pure-Python monlight client, as the benchmarks' point of comparison.

It reimplements the documented behaviour of the published pure-Python
``monlight`` package (httpx for HTTP, metrics buffered as a list of
dicts), with the same public API as the engine-backed package, so that
bench/ can run both with the same calls. It is not part of the product.
"""

from purepython_monlight.error_client import ErrorClient
from purepython_monlight.metrics_client import MetricsClient

__all__ = ["ErrorClient", "MetricsClient"]
