"""A check that both packages' requests are accepted by the contract receiver."""

from __future__ import annotations

import sys
from typing import Any

import monlight
import purepython_monlight

from pybench.common import COUNTER_NAME, HISTOGRAM_NAME, LABEL_SETS, REPOSITORY, REQUEST_CONTEXT
from pybench.timing import make_exceptions


def contract_check() -> dict[str, Any]:
    """Send 8 metrics and 1 error report through each package to the contract receiver and count what it accepted."""
    sys.path.insert(0, str(REPOSITORY / "tests" / "receiver"))
    from harness import Receiver

    with Receiver(keep_alive=True) as receiver:
        for package in (monlight, purepython_monlight):
            metrics = package.MetricsClient(receiver.url, receiver.api_key)
            for labels in LABEL_SETS:
                metrics.counter(COUNTER_NAME, labels)
                metrics.histogram(HISTOGRAM_NAME, 0.0421, labels)
            metrics.flush()
            errors = package.ErrorClient(receiver.url, receiver.api_key, project="bench")
            errors.report_error_sync(make_exceptions(1)[0], REQUEST_CONTEXT)
            if package is monlight:
                metrics.shutdown()
        try:
            receiver.wait_for(lambda: len(receiver.metrics()) >= 16 and len(receiver.errors()) >= 2, timeout=10)
        except TimeoutError:
            pass
        return {
            "metrics": len(receiver.metrics()),
            "errors": len(receiver.errors()),
            "rejected": len(receiver.rejected()),
            "violations": len(receiver.violations()),
            "passed": len(receiver.metrics()) == 16 and len(receiver.errors()) == 2
            and not receiver.rejected() and not receiver.violations(),
        }
