"""The error-report figures: report_error_sync and the event-loop time of await report_error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any, Callable

import monlight
import purepython_monlight

from pybench.common import API_KEY, BENCH_DIR, REQUEST_CONTEXT, Context, make_row
from pybench.timing import StepTimer, interleave, make_exceptions, median


def _time_reports(report: Callable[..., Any], exceptions: list[BaseException]) -> float:
    started = time.perf_counter()
    for exception in exceptions:
        report(exception, REQUEST_CONTEXT)
    return (time.perf_counter() - started) / len(exceptions) * 1e6


def figure_error_sync(context: Context) -> dict[str, Any]:
    """Measure the µs per report_error_sync() to the keep-alive sink, request context included."""
    product = monlight.ErrorClient(context.sink_url, API_KEY, project="bench")
    pure = purepython_monlight.ErrorClient(context.sink_url, API_KEY, project="bench")
    product_exceptions = make_exceptions(context.count(150))
    pure_exceptions = make_exceptions(context.count(15))

    samples = interleave(9, {
        "product": lambda: _time_reports(product.report_error_sync, product_exceptions),
        "purepython": lambda: _time_reports(pure.report_error_sync, pure_exceptions),
    })
    sentry = _sentry_child(context, "sync")
    samples["sentry_sdk"] = sentry["samples"]
    delivered = product.stats()["delivered"]
    return make_row("error_sync", "`report_error_sync`", "µs/call", "lower", 5.0, samples,
                second_name="sentry_sdk", product_delivered=delivered,
                note="sentry_sdk: capture_exception() with defaults and a transport that POSTs each "
                     "envelope to the sink and waits, over one kept-alive connection (own process)")


async def _await_reports(make: Callable[[BaseException], Any], exceptions: list[BaseException]) -> dict[str, float]:
    busy = 0.0
    steps = 0
    cpu_started, wall_started = time.thread_time(), time.perf_counter()
    for exception in exceptions:
        timer = StepTimer(make(exception))
        await timer
        busy += timer.busy
        steps += timer.steps
    count = len(exceptions)
    return {
        "busy_us": busy / count * 1e6,
        "loop_cpu_us": (time.thread_time() - cpu_started) / count * 1e6,
        "wall_us": (time.perf_counter() - wall_started) / count * 1e6,
        "steps": steps / count,
    }


def figure_error_async(context: Context) -> dict[str, Any]:
    """Measure the event-loop time of one await report_error(), the time inside the coroutine's steps."""
    product = monlight.ErrorClient(context.sink_url, API_KEY, project="bench")
    pure = purepython_monlight.ErrorClient(context.sink_url, API_KEY, project="bench")
    product_exceptions = make_exceptions(context.count(100))
    pure_exceptions = make_exceptions(context.count(15))
    extra: dict[str, list[dict[str, float]]] = {"product": [], "purepython": []}

    def run(name: str, client: Any, exceptions: list[BaseException]) -> float:
        result = asyncio.run(_await_reports(lambda exc: client.report_error(exc, REQUEST_CONTEXT), exceptions))
        extra[name].append(result)
        return result["busy_us"]

    samples = interleave(9, {
        "product": lambda: run("product", product, product_exceptions),
        "purepython": lambda: run("purepython", pure, pure_exceptions),
    })
    sentry = _sentry_child(context, "async")
    samples["sentry_sdk"] = sentry["samples"]
    summary = {name: {key: median(result[key] for result in results) for key in results[0]}
               for name, results in extra.items()}
    summary["sentry_sdk"] = sentry["summary"]
    return make_row("error_async", "event-loop time of one `await report_error`", "µs", "lower", 10.0, samples,
                second_name="sentry_sdk", loop=summary,
                note="sum of the time the coroutine runs between its yields (loop_cpu_us: CPU time of "
                     "the loop thread per report, wall_us: time until the await returns); sentry_sdk: "
                     "capture_exception() with a transport that discards the envelope (own process)")


def _sentry_child(context: Context, mode: str) -> dict[str, Any]:
    """Run the sentry_sdk measurements in their own process and return their result.

    sentry_sdk.init() patches httpx, Starlette and the threading and logging
    modules for the whole process, so a separate process keeps those
    patches away from the other columns.
    """
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_python.py"), "sentry-child", mode,
         context.sink_url, str(context.scale)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def sentry_child(mode: str, sink_url: str, scale: float) -> None:
    """Measure sentry_sdk's capture_exception() (mode "sync" or "async") and print JSON."""
    import sentry_sdk

    from pybench.alternatives import DiscardingTransport, PostingTransport, init_sentry, sentry_transport

    context = Context(sink_url, int(sink_url.rsplit(":", 1)[1]), scale)
    exceptions = make_exceptions(context.count(150))
    if mode == "sync":
        init_sentry(context.sink_port, PostingTransport)
        samples = [_time_reports(lambda exc, _context: sentry_sdk.capture_exception(exc), exceptions)
                   for _ in range(5)]
        posted = sentry_transport().posted
        print(json.dumps({"samples": samples, "posted": posted}), flush=True)
        return

    init_sentry(context.sink_port, DiscardingTransport)

    async def capture(exception: BaseException) -> None:
        sentry_sdk.capture_exception(exception)

    results = [asyncio.run(_await_reports(capture, exceptions)) for _ in range(5)]
    summary = {key: median(result[key] for result in results) for key in results[0]}
    print(json.dumps({"samples": [result["busy_us"] for result in results], "summary": summary}), flush=True)
