"""The public API matches the published pure-Python package: names, signatures, attributes."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

import monlight
from monlight import ErrorClient, MetricsClient, _engine
from monlight.integrations import fastapi as integration

EMPTY = inspect.Parameter.empty
POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
KEYWORD = inspect.Parameter.KEYWORD_ONLY

# (name, kind, default) of every parameter, as the published package has them.
PUBLISHED_SIGNATURES = {
    "ErrorClient": [
        ("base_url", POSITIONAL, EMPTY), ("api_key", POSITIONAL, EMPTY),
        ("project", POSITIONAL, "default"), ("environment", POSITIONAL, "prod"),
        ("timeout", POSITIONAL, 5.0), ("excluded_headers", POSITIONAL, None),
    ],
    "ErrorClient.report_error": [
        ("self", POSITIONAL, EMPTY), ("exception", POSITIONAL, EMPTY), ("request_context", POSITIONAL, None),
    ],
    "ErrorClient.report_error_sync": [
        ("self", POSITIONAL, EMPTY), ("exception", POSITIONAL, EMPTY), ("request_context", POSITIONAL, None),
    ],
    "MetricsClient": [
        ("base_url", POSITIONAL, EMPTY), ("api_key", POSITIONAL, EMPTY),
        ("flush_interval", POSITIONAL, 10.0), ("timeout", POSITIONAL, 5.0), ("project", POSITIONAL, None),
    ],
    "MetricsClient.counter": [
        ("self", POSITIONAL, EMPTY), ("name", POSITIONAL, EMPTY), ("labels", POSITIONAL, None),
        ("value", POSITIONAL, 1),
    ],
    "MetricsClient.histogram": [
        ("self", POSITIONAL, EMPTY), ("name", POSITIONAL, EMPTY), ("value", POSITIONAL, EMPTY),
        ("labels", POSITIONAL, None),
    ],
    "MetricsClient.gauge": [
        ("self", POSITIONAL, EMPTY), ("name", POSITIONAL, EMPTY), ("value", POSITIONAL, EMPTY),
        ("labels", POSITIONAL, None),
    ],
    "MetricsClient.start": [("self", POSITIONAL, EMPTY)],
    "MetricsClient.flush": [("self", POSITIONAL, EMPTY)],
    "MetricsClient.shutdown": [("self", POSITIONAL, EMPTY)],
    "setup_monlight": [
        ("app", POSITIONAL, EMPTY), ("error_tracker_url", KEYWORD, None),
        ("metrics_collector_url", KEYWORD, None), ("api_key", KEYWORD, EMPTY),
        ("project", KEYWORD, "default"), ("environment", KEYWORD, "prod"), ("flush_interval", KEYWORD, 10.0),
    ],
    "MonlightMiddleware": [("app", POSITIONAL, EMPTY), ("metrics_client", POSITIONAL, EMPTY)],
    "MonlightExceptionHandler": [("request", POSITIONAL, EMPTY), ("exc", POSITIONAL, EMPTY)],
}

OBJECTS = {
    "ErrorClient": ErrorClient,
    "ErrorClient.report_error": ErrorClient.report_error,
    "ErrorClient.report_error_sync": ErrorClient.report_error_sync,
    "MetricsClient": MetricsClient,
    "MetricsClient.counter": MetricsClient.counter,
    "MetricsClient.histogram": MetricsClient.histogram,
    "MetricsClient.gauge": MetricsClient.gauge,
    "MetricsClient.start": MetricsClient.start,
    "MetricsClient.flush": MetricsClient.flush,
    "MetricsClient.shutdown": MetricsClient.shutdown,
    "setup_monlight": integration.setup_monlight,
    "MonlightMiddleware": integration.MonlightMiddleware,
    "MonlightExceptionHandler": integration.MonlightExceptionHandler,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIGNATURES))
def test_signature_matches_published(name: str) -> None:
    parameters = inspect.signature(OBJECTS[name]).parameters.values()
    found = [(parameter.name, parameter.kind, parameter.default) for parameter in parameters]
    assert found == PUBLISHED_SIGNATURES[name]


def test_coroutines_and_functions() -> None:
    assert inspect.iscoroutinefunction(ErrorClient.report_error)
    assert not inspect.iscoroutinefunction(ErrorClient.report_error_sync)
    assert inspect.iscoroutinefunction(integration.MonlightExceptionHandler)


def test_import_paths() -> None:
    from monlight.error_client import ErrorClient as FromModule
    from monlight.metrics_client import MetricsClient as MetricsFromModule

    assert FromModule is ErrorClient
    assert MetricsFromModule is MetricsClient
    assert monlight.__all__ == ["ErrorClient", "MetricsClient", "__version__"]


def test_version_matches_pyproject() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib arrived in Python 3.11")
    import tomllib

    pyproject = tomllib.loads((Path(monlight.__file__).parents[1] / "pyproject.toml").read_text())
    assert monlight.__version__ == pyproject["project"]["version"]


def test_package_is_typed() -> None:
    assert (Path(monlight.__file__).parent / "py.typed").is_file()


def test_public_methods_are_annotated() -> None:
    for name, obj in OBJECTS.items():
        target = obj.__init__ if inspect.isclass(obj) else obj
        hints = inspect.signature(target).parameters
        unannotated = [p for p in hints if p != "self" and hints[p].annotation is EMPTY]
        assert unannotated == [], name


def test_error_client_attributes() -> None:
    client = ErrorClient("http://127.0.0.1:5010///", "key", project="shop", environment="staging", timeout=2.5)
    assert client.base_url == "http://127.0.0.1:5010"
    assert client.api_key == "key"
    assert client.project == "shop"
    assert client.environment == "staging"
    assert client.timeout == 2.5


def test_error_client_defaults() -> None:
    client = ErrorClient("http://127.0.0.1:5010", "key")
    assert client.project == "default"
    assert client.environment == "prod"
    assert client.timeout == 5.0


def test_metrics_client_attributes() -> None:
    client = MetricsClient("http://127.0.0.1:5012/", "key", flush_interval=2.0, timeout=1.0, project="shop")
    assert client.base_url == "http://127.0.0.1:5012"
    assert client.api_key == "key"
    assert client.flush_interval == 2.0
    assert client.timeout == 1.0
    assert client.project == "shop"


@pytest.mark.parametrize("client_class", [ErrorClient, MetricsClient])
@pytest.mark.parametrize("base_url, reason", [
    ("ftp://example.com", "must start with http:// or https://"),
    ("localhost:5010", "must start with http:// or https://"),
    ("http://", "has no host"),
    ("http://exa mple.com", "whitespace or a control character"),
])
def test_invalid_base_url_raises(client_class: type, base_url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        client_class(base_url, "key")
    assert client_class.__name__ in str(caught.value)


@pytest.mark.parametrize("client_class", [ErrorClient, MetricsClient])
def test_base_url_of_wrong_type_raises(client_class: type) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        client_class(None, "key")


@pytest.mark.parametrize("client_class", [ErrorClient, MetricsClient])
@pytest.mark.parametrize("api_key", ["", "two words", "line\nbreak"])
def test_invalid_api_key_raises(client_class: type, api_key: str) -> None:
    with pytest.raises(ValueError, match="invalid api_key") as caught:
        client_class("http://127.0.0.1:5010", api_key)
    if api_key:
        assert api_key not in str(caught.value)


def test_invalid_timeout_warns(monlight_log) -> None:
    monlight_log.expect(r"invalid timeout")
    client = ErrorClient("http://127.0.0.1:5010", "key", timeout=-1)
    assert client.timeout == -1
    assert monlight_log.matching(r"ErrorClient: invalid timeout -1: must be greater than 0; using the default")


def test_none_flush_interval_warns(monlight_log) -> None:
    monlight_log.expect(r"invalid flush_interval")
    MetricsClient("http://127.0.0.1:5012", "key", flush_interval=None)
    assert monlight_log.matching(r"MetricsClient: invalid flush_interval None")


@pytest.mark.parametrize("client_class", [ErrorClient, MetricsClient])
def test_stats_keys_start_at_zero(client_class: type) -> None:
    client = client_class("http://127.0.0.1:5010", "key")
    assert client.stats() == {"delivered": 0, "dropped": 0, "retried": 0, "failed": 0, "pending": 0}


def test_engine_version_is_checked() -> None:
    assert _engine.ENGINE_FOUND_VERSION == _engine.ENGINE_VERSION
    _engine.check_engine_version("0.1.7", expected="0.1.2")
    with pytest.raises(ImportError, match=r"version 0\.2\.0, but this Python package needs engine 0\.1\.0"):
        _engine.check_engine_version("0.2.0", expected="0.1.0")
    with pytest.raises(ImportError, match="run-tests.sh"):
        _engine.check_engine_version("0.1.0", expected="0.1.1")
    with pytest.raises(ImportError, match="reinstall"):
        _engine.check_engine_version("garbage", expected="0.1.0")


def test_repr_hides_url_credentials() -> None:
    from monlight import ErrorClient, MetricsClient

    for client_class in (ErrorClient, MetricsClient):
        client = client_class("http://user:hunter2@127.0.0.1:9/", "key")
        assert "hunter2" not in repr(client)
        assert "127.0.0.1:9" in repr(client)
