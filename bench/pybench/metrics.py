"""The metrics figures: record calls, memory per buffered metric, flush and threads."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import monlight
import monlight._native
import purepython_monlight

from pybench.alternatives import prometheus_metrics
from pybench.common import (API_KEY, BENCH_DIR, COUNTER_NAME, HISTOGRAM_NAME, LABEL_SETS, LABELS, METHODS,
                            Context, make_row)
from pybench.timing import interleave, median, paired_ratio


def _time_counter(counter: Callable[..., Any], count: int) -> float:
    labels = LABELS
    started = time.perf_counter_ns()
    for _ in range(count):
        counter(COUNTER_NAME, labels)
    return (time.perf_counter_ns() - started) / count


def _time_histogram(histogram: Callable[..., Any], count: int) -> float:
    labels = LABELS
    started = time.perf_counter_ns()
    for _ in range(count):
        histogram(HISTOGRAM_NAME, 0.0421, labels)
    return (time.perf_counter_ns() - started) / count


def _time_prometheus_counter(counter: Any, count: int) -> float:
    labels = LABELS
    started = time.perf_counter_ns()
    for _ in range(count):
        counter.labels(**labels).inc()
    return (time.perf_counter_ns() - started) / count


def _time_prometheus_histogram(histogram: Any, count: int) -> float:
    labels = LABELS
    started = time.perf_counter_ns()
    for _ in range(count):
        histogram.labels(**labels).observe(0.0421)
    return (time.perf_counter_ns() - started) / count


def figure_record(context: Context, kind: str) -> dict[str, Any]:
    """Measure the ns per counter() or histogram() call with 3 labels, reusing one labels dict."""
    product = monlight.MetricsClient(context.sink_url, API_KEY)
    pure = purepython_monlight.MetricsClient(context.sink_url, API_KEY)
    prometheus_counter, prometheus_histogram = prometheus_metrics()
    count = context.count(40_000)

    def run_product() -> float:
        product.flush()  # empties the buffer; not timed
        if kind == "counter":
            return _time_counter(product.counter, count)
        return _time_histogram(product.histogram, count)

    def run_pure() -> float:
        pure._buffer.clear()
        if kind == "counter":
            return _time_counter(pure.counter, count)
        return _time_histogram(pure.histogram, count)

    def run_prometheus() -> float:
        if kind == "counter":
            return _time_prometheus_counter(prometheus_counter, count)
        return _time_prometheus_histogram(prometheus_histogram, count)

    samples = interleave(11, {"product": run_product, "purepython": run_pure, "prometheus_client": run_prometheus})
    breakdown = _counter_breakdown(product, count) if kind == "counter" else None
    product.shutdown()
    return make_row(kind, f"`{kind}()` with 3 labels", "ns/call", "lower", 4.0, samples,
                second_name="prometheus_client", calls_per_round=count, breakdown=breakdown,
                note="one labels dict reused; prometheus_client: .labels(**labels)."
                     + ("inc()" if kind == "counter" else "observe(v)"))


def _counter_breakdown(product: Any, count: int) -> dict[str, Any]:
    """Time the parts of one product counter() call separately, in ns per call (best of 5).

    The parts use the binding's private names (the name and label caches
    and the cffi function). When the binding changes them, this diagnostic
    returns the error instead of the times.
    """
    try:
        from monlight import metrics_client as binding

        record_json = binding._record_json
        names, label_cache = binding._names, binding._labels
        name_bytes, name_length = names[COUNTER_NAME]
        labels_bytes, labels_length = label_cache[tuple(LABELS.items())]
        client = product._client
        counter_type = binding._COUNTER
        noop = monlight._native.lib.monlight_version
    except (ImportError, AttributeError, KeyError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}

    def empty_loop() -> None:
        for _ in range(count):
            pass

    def cffi_noop() -> None:
        for _ in range(count):
            noop()

    def engine_call() -> None:
        for _ in range(count):
            record_json(client, counter_type, name_bytes, name_length, 1, labels_bytes, labels_length)

    def python_lookups() -> None:
        labels = LABELS
        for _ in range(count):
            names[COUNTER_NAME]
            label_cache[tuple(labels.items())]

    def whole_call() -> None:
        counter, labels = product.counter, LABELS
        for _ in range(count):
            counter(COUNTER_NAME, labels)

    parts = {"empty loop": empty_loop, "cffi call of a no-op C function": cffi_noop,
             "cffi call of record_json, arguments prepared": engine_call,
             "name and label cache lookups in Python": python_lookups, "whole counter() call": whole_call}
    result = {}
    for description, loop in parts.items():
        best = float("inf")
        for _ in range(5):
            product.flush()
            started = time.perf_counter_ns()
            loop()
            best = min(best, (time.perf_counter_ns() - started) / count)
        result[description] = best
    return result


# ------------------------------------------------------------------ memory


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(implementation: str, count: int, sink_url: str) -> None:
    """Record count metrics in this fresh process and print the RSS growth as JSON.

    Each call builds its labels dict, as application code does, cycling
    over four label sets.
    """
    if implementation == "product":
        client: Any = monlight.MetricsClient(sink_url, API_KEY)
    else:
        client = purepython_monlight.MetricsClient(sink_url, API_KEY)
    counter = client.counter
    for index in range(1000):  # warm-up: caches, the first batch, allocator pools
        counter(COUNTER_NAME, {"method": METHODS[index & 3], "endpoint": "/users/{id}", "status": "200"})
    if implementation == "product":
        client.flush()
    else:
        client._buffer.clear()

    gc.collect()
    before = _resident_bytes()
    for index in range(count):
        counter(COUNTER_NAME, {"method": METHODS[index & 3], "endpoint": "/users/{id}", "status": "200"})
    gc.collect()
    after = _resident_bytes()

    buffered = client.stats()["pending"] if implementation == "product" else len(client._buffer)
    print(json.dumps({"growth": after - before, "recorded": count, "buffered": buffered}), flush=True)
    os._exit(0)  # skip delivery at exit: only the memory matters here


def figure_memory(context: Context) -> dict[str, Any]:
    """Measure the RSS growth per buffered metric over 200k records, in a fresh subprocess each time."""
    count = context.count(200_000)
    script = BENCH_DIR / "bench_python.py"
    raw: dict[str, list[dict[str, int]]] = {"product": [], "purepython": []}

    def measure(implementation: str) -> float:
        completed = subprocess.run(
            [sys.executable, str(script), "memory-child", implementation, str(count), context.sink_url],
            check=True, capture_output=True, text=True, timeout=120,
        )
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        raw[implementation].append(result)
        return result["growth"] / max(1, result["buffered"])

    samples = interleave(3, {"product": lambda: measure("product"), "purepython": lambda: measure("purepython")})
    product_buffered = median(result["buffered"] for result in raw["product"])
    return make_row("memory", "memory per buffered metric (RSS growth / metrics buffered)", "bytes", "lower", 5.0,
                samples, recorded=count, runs=raw,
                note=f"{count} metrics recorded; the product holds at most its max_buffered default "
                     f"(100000) and dropped the oldest, so it buffered {product_buffered:.0f}; the figure "
                     "divides by the metrics buffered")


# ------------------------------------------------------------------- flush


def figure_flush(context: Context) -> dict[str, Any]:
    """Measure the client CPU time of one flush() of 10,000 buffered metrics to the sink."""
    product = monlight.MetricsClient(context.sink_url, API_KEY)
    pure = purepython_monlight.MetricsClient(context.sink_url, API_KEY)
    count = context.count(10_000)
    wall: dict[str, list[float]] = {"product": [], "purepython": []}

    def run(name: str, client: Any) -> float:
        counter = client.counter
        for index in range(count):
            counter(COUNTER_NAME, LABEL_SETS[index & 3])
        gc.collect()
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        client.flush()
        wall[name].append((time.perf_counter() - wall_started) * 1e3)
        return (time.process_time() - cpu_started) * 1e3

    rounds = 9
    samples = interleave(rounds, {"product": lambda: run("product", product),
                                  "purepython": lambda: run("purepython", pure)})
    delivered = product.stats()["delivered"]
    product.shutdown()
    return make_row("flush", f"`flush()` of {count} metrics, client CPU", "ms", "lower", 5.0, samples,
                wall_ms={name: median(values) for name, values in wall.items()},
                product_delivered=delivered, product_expected=rounds * count,
                note="time.process_time() around flush(), in the client process only; POSTs of 1000 "
                     "metrics to the sink over loopback")


# ----------------------------------------------------------------- threads


def _throughput(loop: Callable[[int], None], threads: int, total: int) -> float:
    """Run total calls split over threads at once; return calls per second."""
    barrier = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=lambda: (barrier.wait(), loop(total // threads))) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return total / (time.perf_counter() - started)


def figure_threads(context: Context) -> dict[str, Any]:
    """Measure counter() called from 1, 2, 4 and 8 threads at once, as total calls per second."""
    product = monlight.MetricsClient(context.sink_url, API_KEY)
    pure = purepython_monlight.MetricsClient(context.sink_url, API_KEY)
    prometheus_counter, _ = prometheus_metrics()
    total = context.count(48_000) // 8 * 8

    def product_loop(count: int) -> None:
        counter, labels = product.counter, LABELS
        for _ in range(count):
            counter(COUNTER_NAME, labels)

    def pure_loop(count: int) -> None:
        counter, labels = pure.counter, LABELS
        for _ in range(count):
            counter(COUNTER_NAME, labels)

    def prometheus_loop(count: int) -> None:
        counter, labels = prometheus_counter, LABELS
        for _ in range(count):
            counter.labels(**labels).inc()

    # A C call that does nothing, through the same cffi module: it shows
    # the cost of cffi releasing and retaking the GIL around each call
    # when other threads wait for it, without the engine's own lock.
    noop = monlight._native.lib.monlight_version

    def cffi_noop_loop(count: int) -> None:
        for _ in range(count):
            noop()

    def reset() -> None:
        product.flush()
        pure._buffer.clear()

    loops = {"product": product_loop, "purepython": pure_loop, "prometheus_client": prometheus_loop,
             "cffi_noop": cffi_noop_loop}
    thread_counts = (1, 2, 4, 8)

    def measure(name: str, threads: int) -> float:
        if name in ("product", "purepython"):
            reset()
        return _throughput(loops[name], threads, total)

    # Every (implementation, thread count) pair runs once per round, so
    # that the scaling of one implementation compares rates measured
    # within seconds of each other.
    runs = {f"{name}/{threads}": (lambda name=name, threads=threads: measure(name, threads))
            for threads in thread_counts for name in loops}
    samples = interleave(5, runs)
    product.shutdown()

    by_threads = {name: {threads: median(samples[f"{name}/{threads}"]) for threads in thread_counts}
                  for name in loops}
    # "Scales" for an interpreter with a GIL means no collapse: in every
    # round, the total rate with N threads stays near that round's
    # single-thread rate. A convoy shows in some rounds only (when the
    # other core is idle), so the worst round decides.
    scaling = {threads: [many / single for many, single in zip(samples[f"product/{threads}"], samples["product/1"])]
               for threads in thread_counts[1:]}
    return {
        "key": "threads",
        "title": "`counter()` from 8 threads, total throughput",
        "unit": "calls/s",
        "better": "higher",
        "target": 1.0,
        "product": by_threads["product"][8],
        "alternative": by_threads["purepython"][8],
        "ratio": paired_ratio(samples["product/8"], samples["purepython/8"]),
        "second": by_threads["prometheus_client"][8],
        "second_name": "prometheus_client",
        "scaling_floor": 0.8,
        "product_worst_vs_single": min(min(ratios) for ratios in scaling.values()),
        "details": {"by_threads": by_threads, "product_scaling": scaling, "samples": samples,
                    "calls_per_configuration": total, "switch_interval_s": sys.getswitchinterval()},
    }
