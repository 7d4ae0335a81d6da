"""MetricsClient against the contract receiver over real HTTP: payloads, labels, lifecycle, failures."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timezone

import pytest

from monlight import MetricsClient, metrics_client as metrics_module

TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def without_timestamps(metrics: list[dict]) -> list[dict]:
    return [{key: value for key, value in metric.items() if key != "timestamp"} for metric in metrics]


# ---------------------------------------------------------------- payloads


def test_three_types_delivered(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.counter("signups_total", labels={"plan": "pro"})
    client.counter("page_views", labels={"page": "/home"}, value=5)
    client.histogram("response_time_ms", 42.5, labels={"endpoint": "/api/users"})
    client.gauge("active_connections", 15, labels={"service": "api"})
    client.flush()

    assert without_timestamps(receiver.metrics()) == [
        {"name": "signups_total", "type": "counter", "value": 1, "labels": {"plan": "pro"}},
        {"name": "page_views", "type": "counter", "value": 5, "labels": {"page": "/home"}},
        {"name": "response_time_ms", "type": "histogram", "value": 42.5, "labels": {"endpoint": "/api/users"}},
        {"name": "active_connections", "type": "gauge", "value": 15, "labels": {"service": "api"}},
    ]


def test_timestamp_taken_at_record(receiver, make_metrics_client) -> None:
    client = make_metrics_client()
    before = datetime.now(timezone.utc).replace(microsecond=0)

    client.counter("ticks")
    time.sleep(1.1)
    client.flush()

    (metric,) = receiver.metrics()
    assert TIMESTAMP.fullmatch(metric["timestamp"])
    recorded = datetime.strptime(metric["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    # Recorded within a second of `before`, not at the flush 1.1 s later.
    assert 0 <= (recorded - before).total_seconds() <= 1


def test_labels_keep_given_order(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.counter("orders", labels={"status": "200", "method": "GET", "endpoint": "/a"})
    client.counter("orders", labels={"method": "GET", "status": "200", "endpoint": "/a"})
    client.flush()

    (first, second) = receiver.events("metrics")[0]["metrics"]
    assert list(first["labels"]) == ["status", "method", "endpoint"]
    assert list(second["labels"]) == ["method", "status", "endpoint"]


def test_label_values_converted_with_str(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.counter("mixed", labels={"status": 200, "ok": True, "ratio": 1.5, "none": None, 7: "seven"})
    client.counter("mixed", labels={"status": 200.0})
    client.counter("mixed", labels={"status": True})
    client.flush()

    labels = [metric["labels"] for metric in receiver.metrics()]
    assert labels == [
        {"status": "200", "ok": "True", "ratio": "1.5", "none": "None", "7": "seven"},
        {"status": "200.0"},
        {"status": "True"},
    ]


def test_label_text_escaped(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.counter("escaped", labels={"path": 'a"b\\c\n\x01\x7f', "lang": "Ελληνικά", "bad": "x\udcffy"})
    client.flush()

    (metric,) = receiver.metrics()
    # A lone surrogate becomes the three bytes ED B3 BF, each of which the
    # engine replaces with U+FFFD, as it does for labels given as C strings.
    assert metric["labels"] == {"path": 'a"b\\c\n\x01\x7f', "lang": "Ελληνικά", "bad": "x\ufffd\ufffd\ufffdy"}


@pytest.mark.parametrize("labels", [
    {"method": "GET", "endpoint": "/users/{id}", "status": "200"},
    {"path": 'a"b\\c\n\r\t\b\f\x01\x1f\x7f', "lang": "Ελληνικά", "emoji": "\U0001f600"},
    {"": ""},
])
def test_fast_path_writes_general_path_text(labels) -> None:
    # Both paths must write the same bytes, or one label set would become
    # two series on the collector depending on which path recorded it.
    from monlight import _fastpath

    assert _fastpath.labels_json(labels) == metrics_module._labels_json(labels)[0]


def test_fast_path_declines_unusual_input() -> None:
    from monlight import _fastpath

    assert _fastpath.labels_json({"status": 200}) is None
    assert _fastpath.labels_json({"bad": "x\udcffy"}) is None
    assert _fastpath.labels_json({"big": "x" * 5000}) is None


def test_no_labels_sends_none(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.counter("plain")
    client.counter("empty_labels", labels={})
    client.flush()

    assert [("labels" in metric) for metric in receiver.metrics()] == [False, False]


def test_project_added_when_set(receiver, make_metrics_client) -> None:
    with_project = make_metrics_client(project="shop")
    without_project = make_metrics_client()

    with_project.counter("a")
    with_project.flush()
    without_project.counter("b")
    without_project.flush()

    first, second = receiver.metrics()
    assert first["project"] == "shop"
    assert "project" not in second


def test_numeric_values(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.gauge("g", 0)
    client.gauge("g", -3)
    client.gauge("g", 2**40)
    client.gauge("g", 0.1)
    client.gauge("g", True)
    client.flush()

    assert [metric["value"] for metric in receiver.metrics()] == [0, -3, 2**40, 0.1, 1]


# ---------------------------------------------------------- invalid input


def test_nan_and_long_name_rejected(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r'metric "nan_value" rejected: value is not a finite number')
    monlight_log.expect(r'metric "x{60}\.\.\." rejected: name is over 200 bytes')
    client = make_metrics_client()

    client.counter("before")
    client.gauge("nan_value", float("nan"))
    client.counter("x" * 201)
    client.counter("after")
    client.flush()

    assert [metric["name"] for metric in receiver.metrics()] == ["before", "after"]
    assert len(monlight_log.messages()) == 2
    assert client.stats()["dropped"] == 2


def test_name_limit_counts_bytes(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"name is over 200 bytes")
    client = make_metrics_client()

    client.counter("α" * 100)  # 200 bytes: accepted
    client.counter("α" * 101)  # 202 bytes: rejected
    client.flush()

    assert [metric["name"] for metric in receiver.metrics()] == ["α" * 100]


@pytest.mark.parametrize("value", ["12", b"1", None, [1], object()])
def test_non_number_value_warns(receiver, make_metrics_client, monlight_log, value) -> None:
    monlight_log.expect(r"histogram 'latency' dropped: .*")
    client = make_metrics_client()

    client.histogram("latency", value)
    client.histogram("latency", 1.0)
    client.flush()

    assert [metric["value"] for metric in receiver.metrics()] == [1.0]
    assert len(monlight_log.matching("histogram 'latency' dropped")) == 1


def test_huge_int_value_warns(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"gauge 'g' dropped: int too large")
    client = make_metrics_client()

    client.gauge("g", 10**400)
    client.flush()

    assert receiver.metrics() == []


@pytest.mark.parametrize("name", [None, 12, b"bytes", ["list"]])
def test_non_string_name_warns(receiver, make_metrics_client, monlight_log, name) -> None:
    monlight_log.expect(r"counter .* dropped: metric name must be a string")
    client = make_metrics_client()

    client.counter(name)

    assert len(monlight_log.messages()) == 1


def test_bad_labels_warn(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"counter 'c' dropped: labels must be a dict of strings, got list")
    client = make_metrics_client()

    client.counter("c", labels=["a", "b"])
    client.counter("c", labels={"unhashable": ["x"]})
    client.flush()

    assert [metric["labels"] for metric in receiver.metrics()] == [{"unhashable": "['x']"}]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("str fails")

    __repr__ = __str__


def test_unprintable_label_dropped_and_counted(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"counter 'x' dropped: str fails")
    monlight_log.expect(r"counter 'x' dropped: str fails")
    client = make_metrics_client()

    client.counter("x", labels={"a": _Unprintable()})
    client.counter("x", labels={_Unprintable(): "a"})
    client.counter("x", labels={"a": "fine"})
    client.flush()

    assert [metric["labels"] for metric in receiver.metrics()] == [{"a": "fine"}]
    assert client.stats()["dropped"] == 2


def test_empty_name_rejected(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r'metric "" rejected: name is empty')
    client = make_metrics_client()

    client.counter("")

    assert client.stats()["dropped"] == 1


def test_caches_stay_bounded(make_metrics_client) -> None:
    client = make_metrics_client()

    for number in range(metrics_module.CACHE_MAX_ENTRIES + 10):
        client.counter(f"name_{number}", labels={"id": str(number)})

    assert len(metrics_module._names) <= metrics_module.CACHE_MAX_ENTRIES
    assert len(metrics_module._labels) <= metrics_module.CACHE_MAX_ENTRIES


# --------------------------------------------------------------- lifecycle


def test_start_flushes_periodically(receiver, make_metrics_client) -> None:
    client = make_metrics_client(flush_interval=0.2)
    client.start()
    client.start()  # idempotent

    client.counter("periodic")

    receiver.wait_for(lambda: receiver.metrics(), timeout=3, description="the periodic flush")
    assert [metric["name"] for metric in receiver.metrics()] == ["periodic"]


def test_shutdown_flushes_and_is_idempotent(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"the metrics client is shut down")
    client = make_metrics_client()
    client.start()
    client.counter("before_shutdown", value=3)

    client.shutdown()
    client.shutdown()
    client.counter("after_shutdown")
    client.counter("after_shutdown_again")
    client.flush()
    client.start()

    assert [metric["name"] for metric in receiver.metrics()] == ["before_shutdown"]
    assert len(monlight_log.matching(r"metric 'after_shutdown' dropped: the metrics client is shut down")) == 1
    assert len(monlight_log.messages()) == 1


def test_flush_with_nothing_buffered(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    client.flush()

    assert receiver.records() == []


def test_large_batch_split(receiver, make_metrics_client) -> None:
    client = make_metrics_client()

    for number in range(2500):
        client.counter("bulk", value=number)
    client.flush()

    batches = receiver.events("metrics")
    assert [batch["count"] for batch in batches] == [1000, 1000, 500]
    assert sorted(metric["value"] for metric in receiver.metrics()) == list(range(2500))


def test_threads_record_exactly_once(receiver, make_metrics_client) -> None:
    client = make_metrics_client(flush_interval=0.05)
    client.start()
    threads_count, per_thread = 8, 2000
    barrier = threading.Barrier(threads_count)

    def record(thread_number: int) -> None:
        barrier.wait()
        for sequence in range(per_thread):
            client.counter("concurrent", labels={"thread": str(thread_number)}, value=sequence)

    threads = [threading.Thread(target=record, args=(number,)) for number in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    client.shutdown()

    seen = sorted((metric["labels"]["thread"], metric["value"]) for metric in receiver.metrics())
    expected = sorted((str(number), sequence) for number in range(threads_count) for sequence in range(per_thread))
    assert seen == expected
    assert client.stats()["delivered"] == threads_count * per_thread


# ---------------------------------------------------------------- failures


def test_unreachable_server_warns(make_metrics_client, refused_url, monlight_log) -> None:
    monlight_log.expect(r"metrics: sending 1 metrics to .* failed: .*Couldn't connect.*retrying in")
    monlight_log.expect(r"could not be delivered before the shutdown deadline")
    client = make_metrics_client(base_url=refused_url)

    client.counter("lost")
    started = time.monotonic()
    client.flush()

    assert time.monotonic() - started < 2.0
    assert monlight_log.matching(rf"sending 1 metrics to {refused_url}/api/metrics failed")
    stats = client.stats()
    assert stats["retried"] == 1
    assert stats["pending"] == 1


def test_wrong_key_warns(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 401.*not retried")
    client = make_metrics_client(api_key="wrong-key")

    client.counter("a")
    client.flush()

    assert monlight_log.matching(r"failed: HTTP 401")
    assert not any("wrong-key" in message for message in monlight_log.messages())
    assert client.stats()["failed"] == 1


def test_server_error_warns(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 500.*not retried")
    client = make_metrics_client()
    receiver.control(fail_next=1, status=500)

    client.counter("a")
    client.counter("b")
    client.flush()

    assert client.stats() == {"delivered": 0, "dropped": 0, "retried": 0, "failed": 2, "pending": 0}


def test_rate_limit_retried(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 429.*retrying in 1\.0 s")
    client = make_metrics_client()
    receiver.control(fail_next=1, status=429, retry_after=1)

    client.counter("a")
    client.flush()
    time.sleep(1.1)
    client.flush()

    assert [metric["name"] for metric in receiver.metrics()] == ["a"]
    stats = client.stats()
    assert stats["delivered"] == 1
    assert stats["retried"] == 1


def test_timeout_warns(receiver, make_metrics_client, monlight_log) -> None:
    monlight_log.expect(r"metrics: sending 1 metrics to .* failed: .*after the request was sent.*not retried")
    client = make_metrics_client(timeout=0.3)
    receiver.control(delay=1.5)

    client.counter("slow")
    started = time.monotonic()
    client.flush()

    assert time.monotonic() - started < 1.2
    assert client.stats()["failed"] == 1


def test_keep_alive_reuses_connection(keep_alive_receiver) -> None:
    client = MetricsClient(keep_alive_receiver.url, keep_alive_receiver.api_key)
    try:
        for number in range(3):
            client.counter("kept", value=number)
            client.flush()
    finally:
        client.shutdown()

    batches = keep_alive_receiver.events("metrics")
    assert len(batches) == 3
    assert len({batch["conn"] for batch in batches}) == 1


def test_stats_after_delivery(receiver, make_metrics_client) -> None:
    client = make_metrics_client()
    for number in range(5):
        client.counter("n", value=number)

    assert client.stats()["pending"] == 5
    client.flush()
    assert client.stats() == {"delivered": 5, "dropped": 0, "retried": 0, "failed": 0, "pending": 0}
