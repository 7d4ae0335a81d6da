"""ErrorClient against the contract receiver over real HTTP: fields, context, failures, the event loop."""

from __future__ import annotations

import asyncio
import time
import traceback

import pytest

from monlight import ErrorClient


class Checkout:
    class PaymentError(Exception):
        pass


def charge(amount: int) -> None:
    raise Checkout.PaymentError(f"card declined for {amount}")


def raise_chained() -> None:
    try:
        charge(42)
    except Checkout.PaymentError as exc:
        raise RuntimeError("checkout failed") from exc


def caught(function, *args):
    try:
        function(*args)
    except BaseException as exc:  # noqa: BLE001 - the tests report whatever was raised
        return exc
    raise AssertionError("expected an exception")


def only_report(receiver) -> dict:
    receiver.wait_for(lambda: receiver.errors(), timeout=5, description="an error report")
    errors = receiver.errors()
    assert len(errors) == 1
    return errors[0]["report"]


# ------------------------------------------------------------------ fields


def test_sync_report_fields(receiver, make_error_client) -> None:
    client = make_error_client(project="shop", environment="staging")
    exc = caught(charge, 7)

    client.report_error_sync(exc)

    report = only_report(receiver)
    assert report["project"] == "shop"
    assert report["environment"] == "staging"
    assert report["exception_type"] == "Checkout.PaymentError"
    assert report["message"] == "card declined for 7"
    assert report["traceback"] == "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_traceback_includes_chain(receiver, make_error_client) -> None:
    client = make_error_client()
    exc = caught(raise_chained)

    client.report_error_sync(exc)

    report = only_report(receiver)
    assert report["exception_type"] == "RuntimeError"
    assert "card declined for 42" in report["traceback"]
    assert "The above exception was the direct cause of the following exception" in report["traceback"]
    assert 'in charge\n    raise Checkout.PaymentError' in report["traceback"]


def test_report_groups_by_last_frame(receiver, make_error_client) -> None:
    client = make_error_client()
    client.report_error_sync(caught(charge, 1))
    client.report_error_sync(caught(charge, 2))

    receiver.wait_for(lambda: len(receiver.errors()) == 2, description="two reports")
    first, second = receiver.errors()
    assert first["frame"]["file"] == __file__
    assert first["outcome"] == "created"
    assert second["outcome"] == "incremented"
    assert first["fingerprint"] == second["fingerprint"]


def test_request_context_fields(receiver, make_error_client) -> None:
    client = make_error_client()
    context = {
        "request_url": "http://shop.test/cart?id=3",
        "request_method": "POST",
        "request_headers": {"Content-Type": "application/json", "X-Request-Id": "r-1"},
        "user_id": 42,
        "extra": {"booking_id": 123, "tags": ["a", "b"], "nested": {"ok": True}},
    }

    client.report_error_sync(caught(charge, 1), request_context=context)

    report = only_report(receiver)
    assert report["request_url"] == "http://shop.test/cart?id=3"
    assert report["request_method"] == "POST"
    assert report["request_headers"] == {"Content-Type": "application/json", "X-Request-Id": "r-1"}
    assert report["user_id"] == "42"
    assert report["extra"] == {"booking_id": 123, "tags": ["a", "b"], "nested": {"ok": True}}


def test_context_none_values_omitted(receiver, make_error_client) -> None:
    client = make_error_client()

    client.report_error_sync(caught(charge, 1), request_context={"user_id": None, "request_url": None})

    report = only_report(receiver)
    assert "user_id" not in report
    assert "request_url" not in report


def test_pii_headers_removed(receiver, make_error_client) -> None:
    client = make_error_client(excluded_headers={"X-Session-Token"})
    headers = {
        "Authorization": "Bearer secret",
        "COOKIE": "a=b",
        "Set-Cookie": "c=d",
        "x-api-key": "key",
        "x-session-token": "token",
        "Accept": "text/html",
    }

    client.report_error_sync(caught(charge, 1), request_context={"request_headers": headers})

    report = only_report(receiver)
    assert report["request_headers"] == {"Accept": "text/html"}


def test_headers_as_pairs(receiver, make_error_client) -> None:
    client = make_error_client()

    client.report_error_sync(caught(charge, 1), request_context={"request_headers": [("Accept", "*/*"), ("X-N", 5)]})

    assert only_report(receiver)["request_headers"] == {"Accept": "*/*", "X-N": "5"}


def test_invalid_context_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"request_context must be a dict")
    monlight_log.expect(r"request_headers must be a dict")
    client = make_error_client()

    client.report_error_sync(caught(charge, 1), request_context=["not", "a", "dict"])
    client.report_error_sync(caught(charge, 2), request_context={"request_headers": 12})

    receiver.wait_for(lambda: len(receiver.errors()) == 2, description="two reports")
    assert "request_headers" not in receiver.errors()[1]["report"]
    assert len(monlight_log.matching("request_context must be a dict, got list")) == 1
    assert len(monlight_log.matching("request_headers must be a dict")) == 1


def test_non_utf8_text_repaired(receiver, make_error_client) -> None:
    client = make_error_client()

    client.report_error_sync(ValueError("bad \udcff byte"), request_context={"user_id": "u\x00ser"})

    report = only_report(receiver)
    assert report["message"] == "bad \ufffd\ufffd\ufffd byte"
    assert report["user_id"] == "u\x00ser"


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_unprintable_exception_reported(receiver, make_error_client) -> None:
    client = make_error_client()

    client.report_error_sync(caught(lambda: (_ for _ in ()).throw(UnprintableError())))

    report = only_report(receiver)
    assert report["exception_type"] == "UnprintableError"
    assert report["message"] == "<unprintable UnprintableError object>"


def test_non_exception_reported(receiver, make_error_client) -> None:
    client = make_error_client()

    client.report_error_sync("not an exception")  # type: ignore[arg-type]

    report = only_report(receiver)
    assert report["exception_type"] == "str"
    assert report["message"] == "not an exception"
    assert report["traceback"] == ""


# ------------------------------------------------------------------- extra


def test_extra_unencodable_uses_repr(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra could not be encoded as JSON")
    client = make_error_client()

    class Booking:
        def __repr__(self) -> str:
            return "<Booking 7>"

    extra = {"booking": Booking(), "ratio": float("nan"), "ids": {1, 2} and (1, 2), 3: "three"}
    client.report_error_sync(caught(charge, 1), request_context={"extra": extra})

    report = only_report(receiver)
    assert report["extra"] == {"booking": "<Booking 7>", "ratio": "nan", "ids": [1, 2], "3": "three"}
    assert monlight_log.matching(r"Object of type Booking is not JSON serializable|Out of range float")


def test_extra_cycle_is_cut(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra could not be encoded as JSON \(Circular reference detected\)")
    client = make_error_client()
    extra: dict = {"name": "loop", "items": [1]}
    extra["self"] = extra
    extra["items"].append(extra["items"])

    client.report_error_sync(caught(charge, 1), request_context={"extra": extra})

    assert only_report(receiver)["extra"] == {"name": "loop", "items": [1, "<cycle>"], "self": "<cycle>"}


def test_extra_shared_value_not_cycle(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra could not be encoded as JSON")
    client = make_error_client()
    shared = {"k": 1}
    extra = {"a": shared, "b": shared, "bad": object()}

    client.report_error_sync(caught(charge, 1), request_context={"extra": extra})

    report_extra = only_report(receiver)["extra"]
    assert report_extra["a"] == {"k": 1}
    assert report_extra["b"] == {"k": 1}


def test_extra_too_deep_is_cut(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra could not be encoded as JSON")
    client = make_error_client()
    deep: list = []
    for _ in range(5000):
        deep = [deep]

    client.report_error_sync(caught(charge, 1), request_context={"extra": {"deep": deep}})

    text = str(only_report(receiver)["extra"])
    assert "<too deep>" in text


def test_extra_not_object_wrapped(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra is not a JSON object; sent as extra.value")
    client = make_error_client()

    client.report_error_sync(caught(charge, 1), request_context={"extra": [1, 2]})

    assert only_report(receiver)["extra"] == {"value": [1, 2]}


def test_oversized_report_trimmed(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"error report over 262144 bytes; trimmed to fit")
    client = make_error_client()

    client.report_error_sync(ValueError("x" * 400_000))

    # The traceback of an exception that was never raised is its last line,
    # which repeats the message, so both are trimmed.
    report = only_report(receiver)
    assert report["extra"]["monlight_trimmed"] == ["traceback", "message"]
    assert report["message"].startswith("xxxx")
    assert len(report["message"]) < 262_144


# -------------------------------------------------------------- async path


async def test_async_report_delivered_on_return(receiver, make_error_client) -> None:
    client = make_error_client()

    await client.report_error(caught(charge, 5), request_context={"user_id": "u-5"})

    # The coroutine resumes after the tracker stored the report, and the
    # receiver records before it responds.
    errors = receiver.errors()
    assert len(errors) == 1
    assert errors[0]["report"]["user_id"] == "u-5"
    assert client.stats()["delivered"] == 1


async def test_async_report_keeps_loop_running(receiver, make_error_client) -> None:
    client = make_error_client(timeout=5.0)
    receiver.control(delay=1.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await client.report_error(caught(charge, 1))
    elapsed = time.monotonic() - started
    ticker.cancel()

    assert elapsed >= 0.9
    assert ticks >= 40  # 100 ticks of 10 ms fit in the delay when the loop is free
    assert len(receiver.errors()) == 1


async def test_concurrent_async_reports(receiver, make_error_client) -> None:
    client = make_error_client()
    exceptions = [caught(charge, amount) for amount in range(20)]

    await asyncio.gather(*(client.report_error(exc) for exc in exceptions))

    messages = sorted(error["report"]["message"] for error in receiver.errors())
    assert messages == sorted(f"card declined for {amount}" for amount in range(20))


async def test_async_wait_bounded_by_timeout(receiver, make_error_client, refused_url, monlight_log) -> None:
    monlight_log.expect(r"error report: sending to .* failed: .*retrying in")
    monlight_log.expect(r"could not be delivered before the shutdown deadline")
    client = make_error_client(base_url=refused_url, timeout=0.5)

    started = time.monotonic()
    await client.report_error(caught(charge, 1))
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert client.stats()["pending"] == 1  # still queued for a retry


async def test_async_report_survives_closed_loop(receiver, make_error_client) -> None:
    # A report whose loop closes before delivery ends must not break the
    # engine's callback; the report is still delivered.
    client = make_error_client()
    receiver.control(delay=0.5)

    def run_and_abandon() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(client.report_error(caught(charge, 1)))
        loop.run_until_complete(asyncio.sleep(0.05))
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()

    await asyncio.to_thread(run_and_abandon)
    receiver.wait_for(lambda: receiver.errors(), description="the abandoned report")
    await asyncio.sleep(0.2)
    assert client.stats()["delivered"] == 1


# ---------------------------------------------------------------- failures


def test_unreachable_server_warns(make_error_client, refused_url, monlight_log) -> None:
    monlight_log.expect(r"error report: sending to .* failed: .*retrying in")
    monlight_log.expect(r"could not be delivered before the shutdown deadline")
    client = make_error_client(base_url=refused_url)

    started = time.monotonic()
    client.report_error_sync(caught(charge, 1))

    assert time.monotonic() - started < 2.0
    assert monlight_log.matching(rf"sending to {refused_url}/api/errors failed: .*Couldn't connect")
    stats = client.stats()
    assert stats["retried"] == 1
    assert stats["pending"] == 1


def test_wrong_key_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 401")
    client = make_error_client(api_key="wrong-key")

    client.report_error_sync(caught(charge, 1))

    assert monlight_log.matching(r"failed: HTTP 401: .*Invalid or missing API key")
    assert not any("wrong-key" in message for message in monlight_log.messages())
    assert client.stats()["failed"] == 1
    assert receiver.errors() == []


def test_server_error_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 500")
    client = make_error_client()
    receiver.control(fail_next=1, status=500)

    client.report_error_sync(caught(charge, 1))

    assert monlight_log.matching(r"failed: HTTP 500")
    assert client.stats() == {"delivered": 0, "dropped": 0, "retried": 0, "failed": 1, "pending": 0}


def test_service_unavailable_retried(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 503.*retrying in the background")
    client = make_error_client()
    receiver.control(fail_next=1, status=503, retry_after=0)

    client.report_error_sync(caught(charge, 1))

    receiver.wait_for(lambda: receiver.errors(), timeout=5, description="the retried report")
    stats = client.stats()
    assert stats["delivered"] == 1
    assert stats["retried"] == 1


def test_timeout_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"timed out|Timeout was reached")
    client = make_error_client(timeout=0.3)
    receiver.control(delay=1.5)

    started = time.monotonic()
    client.report_error_sync(caught(charge, 1))

    assert time.monotonic() - started < 1.2
    assert monlight_log.matching(r"error report: sending to .* failed: .*after the request was sent")
    assert client.stats()["failed"] == 1


async def test_async_failure_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"HTTP 500: .*not retried")
    client = make_error_client()
    receiver.control(fail_next=1, status=500)

    await client.report_error(caught(charge, 1))

    assert monlight_log.matching(r"HTTP 500")
    assert client.stats()["failed"] == 1


def test_dropped_connection_warns(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"error report: sending to .* failed")
    client = make_error_client()
    receiver.control(drop_next=1)

    client.report_error_sync(caught(charge, 1))

    assert len(monlight_log.matching(r"error report: sending to .* failed")) == 1


def test_keep_alive_receiver(keep_alive_receiver, monlight_log) -> None:
    client = ErrorClient(keep_alive_receiver.url, keep_alive_receiver.api_key)
    try:
        for amount in range(3):
            client.report_error_sync(caught(charge, amount))
        errors = keep_alive_receiver.errors()
        assert len(errors) == 3
        assert len({error["conn"] for error in errors}) == 1  # one reused connection
    finally:
        client._finalizer()


@pytest.mark.parametrize("method", ["sync", "async"])
def test_stats_count_delivered(receiver, make_error_client, method: str) -> None:
    client = make_error_client()
    for amount in range(3):
        if method == "sync":
            client.report_error_sync(caught(charge, amount))
        else:
            asyncio.run(client.report_error(caught(charge, amount)))

    assert client.stats() == {"delivered": 3, "dropped": 0, "retried": 0, "failed": 0, "pending": 0}


def test_huge_int_in_extra_is_replaced(receiver, make_error_client, monlight_log) -> None:
    monlight_log.expect(r"extra could not be encoded as JSON")
    client = make_error_client()

    client.report_error_sync(ValueError("boom"), {"extra": {"n": 10**5000, "ok": 1}})

    (event,) = receiver.errors()
    assert event["report"]["extra"]["ok"] == 1
    assert event["report"]["extra"]["n"].startswith("<int of ")
