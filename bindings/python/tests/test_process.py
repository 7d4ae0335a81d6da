"""Process life: delivery at interpreter exit, fork, concurrent shutdown, and garbage collection."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import PACKAGE_DIR
from monlight import MetricsClient, _engine


def run_python(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a Python program that imports this package in place; returns the finished process."""
    environment = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=environment)


# -------------------------------------------------------------------- exit


def test_exit_delivers_buffered_data(receiver) -> None:
    started = time.monotonic()
    result = run_python(f"""
        import logging
        from monlight import ErrorClient, MetricsClient
        logging.basicConfig(level=logging.WARNING)

        started = MetricsClient({receiver.url!r}, {receiver.api_key!r}, flush_interval=60)
        started.start()
        started.counter("exit_started", labels={{"kind": "started"}})
        never_started = MetricsClient({receiver.url!r}, {receiver.api_key!r})
        never_started.gauge("exit_never_started", 3)
        errors = ErrorClient({receiver.url!r}, {receiver.api_key!r})
        errors._enqueue_without_waiting(ValueError("queued at exit"))
        print("recorded", flush=True)
        # No flush() and no shutdown(): the exit hook delivers.
    """)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "recorded\n"
    assert result.stderr == ""
    assert sorted(metric["name"] for metric in receiver.metrics()) == ["exit_never_started", "exit_started"]
    assert [error["report"]["message"] for error in receiver.errors()] == ["queued at exit"]
    assert time.monotonic() - started < 15


def test_exit_warnings_reach_logging(refused_url) -> None:
    started = time.monotonic()
    result = run_python(f"""
        import logging, sys
        from monlight import MetricsClient
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s %(message)s")

        client = MetricsClient({refused_url!r}, "key")
        client.counter("lost_at_exit")
    """)

    assert result.returncode == 0, result.stderr
    assert "monlight.metrics_client metrics: 1 metrics could not be delivered before the shutdown deadline" \
        in result.stdout
    assert "monlight:" not in result.stderr  # nothing went around logging to stderr
    assert time.monotonic() - started < 15  # the 3 s exit deadline, plus start-up


def test_exit_with_recording_daemon_thread(receiver) -> None:
    result = run_python(f"""
        import threading, time
        from monlight import MetricsClient

        client = MetricsClient({receiver.url!r}, {receiver.api_key!r})

        def record_forever():
            while True:
                client.counter("from_daemon")

        threading.Thread(target=record_forever, daemon=True).start()
        time.sleep(0.2)
    """)

    assert result.returncode == 0, result.stderr
    assert "Fatal" not in result.stderr
    assert "Traceback" not in result.stderr
    assert receiver.metrics()  # what was buffered at exit arrived


def test_reports_after_exit_hook(receiver) -> None:
    result = run_python(f"""
        import asyncio, logging, sys
        from monlight import ErrorClient, _engine
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s %(message)s")

        client = ErrorClient({receiver.url!r}, {receiver.api_key!r})
        _engine._shutdown_all_at_exit()  # what the exit hook does
        client.report_error_sync(ValueError("late"))
        asyncio.run(client.report_error(ValueError("late async")))
        print("returned")
    """)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "returned"
    assert lines.count("monlight.error_client exception ValueError was not reported: the error client is shut "
                       "down, as it is once the process exits") == 2
    assert receiver.errors() == []


# -------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_empty(receiver, make_metrics_client) -> None:
    client = make_metrics_client(flush_interval=0.2)
    client.start()
    client.counter("parent_before_fork")

    pid = os.fork()
    if pid == 0:  # child: report the outcome through the exit status only
        status = 1
        try:
            client.counter("child_periodic")  # restarts the flush thread
            deadline = time.monotonic() + 5
            while client.stats()["delivered"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            client.gauge("child_explicit", 1)
            client.flush()
            status = 0 if client.stats()["delivered"] == 2 else 3
        finally:
            os._exit(status)

    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    client.flush()

    names = sorted(metric["name"] for metric in receiver.metrics())
    assert names == ["child_explicit", "child_periodic", "parent_before_fork"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_error_queue_stays_with_parent(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 503.*retrying in the background")
    client = make_error_client()
    receiver.control(fail_next=1, status=503, retry_after=1)
    client.report_error_sync(ValueError("parent"))  # now queued for a retry in 1 s
    loop = asyncio.new_event_loop()
    _engine.ReportWaiter(loop)  # a parent waiter that the child must forget

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            waiters_forgotten = not _engine._pending_waiters
            client.report_error_sync(ValueError("child"))
            status = 0 if waiters_forgotten and client.stats()["delivered"] == 1 else 3
        finally:
            os._exit(status)

    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    receiver.wait_for(lambda: len(receiver.errors()) == 2, timeout=10, description="both reports")
    time.sleep(0.3)
    assert sorted(error["report"]["message"] for error in receiver.errors()) == ["child", "parent"]
    _engine._pending_waiters.clear()
    loop.close()


# ------------------------------------------------------ shutdown and freeing


def test_concurrent_shutdown_returns(receiver) -> None:
    for _ in range(5):
        client = MetricsClient(receiver.url, receiver.api_key, flush_interval=0.01)
        client.start()
        client.counter("stopping")
        barrier = threading.Barrier(3)

        def stop() -> None:
            barrier.wait()
            client.shutdown()

        threads = [threading.Thread(target=stop) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)

    assert len(receiver.metrics()) == 5


def test_dropped_client_delivers(receiver) -> None:
    client = MetricsClient(receiver.url, receiver.api_key)
    client.counter("dropped_reference")

    del client
    gc.collect()

    assert [metric["name"] for metric in receiver.metrics()] == ["dropped_reference"]


def test_free_deferred_on_engine_thread(receiver) -> None:
    # A client collected inside an engine callback is freed later, on an
    # ordinary thread, instead of joining the thread it runs on.
    calls: list[str] = []

    def fake_free(pointer: object) -> None:
        calls.append(str(pointer))

    _engine._callback_state.depth = 1
    try:
        _engine.free_client(fake_free, "deferred")
    finally:
        _engine._callback_state.depth = 0
    assert calls == []

    _engine.free_client(fake_free, "direct")
    assert calls == ["direct", "deferred"]


def test_multiprocessing_children_deliver(receiver) -> None:
    # multiprocessing's children end with os._exit(), which skips atexit;
    # the package delivers from multiprocessing's own exit hook instead.
    result = run_python(f"""
        import multiprocessing
        from monlight import MetricsClient

        metrics = MetricsClient({receiver.url!r}, {receiver.api_key!r}, flush_interval=60)

        def job(number):
            metrics.counter("pool_jobs_total", labels={{"kind": "pool"}})
            return number

        def single():
            metrics.counter("process_jobs_total")

        if __name__ == "__main__":
            context = multiprocessing.get_context("fork")
            with context.Pool(2) as pool:
                assert sum(pool.map(job, range(40))) == sum(range(40))
                pool.close()
                pool.join()
            process = context.Process(target=single)
            process.start()
            process.join()
            print("done", flush=True)
    """)

    assert result.returncode == 0, result.stderr
    names = [metric["name"] for metric in receiver.metrics()]
    assert names.count("pool_jobs_total") == 40
    assert names.count("process_jobs_total") == 1
