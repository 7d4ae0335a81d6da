"""Use ErrorClient and MetricsClient directly, as a script or a worker would.

Reports one exception synchronously and one from a coroutine, records a
counter, a histogram and a gauge, and flushes. Configuration comes from
MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL, MONLIGHT_API_KEY and
MONLIGHT_PROJECT. Exits 1 when the services did not accept everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from monlight import ErrorClient, MetricsClient


class InvoiceError(Exception):
    pass


def render_invoice(order_id: int) -> str:
    raise InvoiceError(f"order {order_id} has no billing address")


def send_invoice(order_id: int) -> str:
    return render_invoice(order_id)


async def report_from_coroutine(errors: ErrorClient) -> None:
    try:
        await asyncio.sleep(0)
        send_invoice(77)
    except InvoiceError as exc:
        # Resumes once the tracker stored the report; the loop keeps running meanwhile.
        await errors.report_error(exc, request_context={"user_id": 7, "extra": {"queue": "invoices"}})


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="python demo: %(name)s %(levelname)s %(message)s")
    project = os.environ.get("MONLIGHT_PROJECT", "monlight-demo")
    errors = ErrorClient(os.environ["MONLIGHT_ERROR_URL"], os.environ["MONLIGHT_API_KEY"],
                         project=project, environment="demo")
    metrics = MetricsClient(os.environ["MONLIGHT_METRICS_URL"], os.environ["MONLIGHT_API_KEY"], project=project)

    try:
        send_invoice(42)
    except InvoiceError as exc:
        errors.report_error_sync(exc, request_context={"request_method": "JOB", "request_url": "job://invoices"})
    asyncio.run(report_from_coroutine(errors))

    for seconds in (0.12, 0.31, 0.08):
        metrics.histogram("invoice_render_seconds", seconds, labels={"format": "pdf"})
    metrics.counter("invoices_sent_total", labels={"format": "pdf"}, value=3)
    metrics.gauge("invoice_queue_depth", 5, labels={"queue": "invoices"})
    metrics.shutdown()

    error_stats, metric_stats = errors.stats(), metrics.stats()
    print(f"python demo: direct use: error reports delivered {error_stats['delivered']}, "
          f"metrics delivered {metric_stats['delivered']}")
    if error_stats["delivered"] != 2 or metric_stats["delivered"] != 5:
        print(f"python demo: expected 2 error reports and 5 metrics delivered; error client {error_stats}, "
              f"metrics client {metric_stats}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
