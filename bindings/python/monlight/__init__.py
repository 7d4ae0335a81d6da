"""monlight: error tracking and metrics for the monlight services, over the monlight C engine.

A drop-in replacement for the pure-Python ``monlight`` package, with the
same public API::

    from monlight import ErrorClient, MetricsClient

The FastAPI integration is in ``monlight.integrations.fastapi`` (install
the ``fastapi`` extra).
"""

from monlight.error_client import ErrorClient
from monlight.metrics_client import MetricsClient

__version__ = "0.1.0"
__all__ = ["ErrorClient", "MetricsClient", "__version__"]
