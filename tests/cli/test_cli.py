"""Tests of the monlight command against the contract receiver.

The command is the one part of monlight that reports failure loudly: exit
status 0 only when the service stored what was sent, 1 when it was not
delivered, 2 for bad usage, always with one line saying why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "tests" / "receiver"))
from harness import Receiver  # noqa: E402

MONLIGHT = REPOSITORY / "build" / "monlight"


@pytest.fixture(scope="module")
def receiver():
    with Receiver(api_key="cli-test-key") as running:
        yield running


@pytest.fixture(autouse=True)
def clean_receiver(receiver):
    receiver.control(reset=True, clear=True)


def run(*arguments: str, url: str | None = None, key: str = "cli-test-key",
        timeout: float = 30) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MONLIGHT_")}
    if url:
        environment["MONLIGHT_ERROR_URL"] = url
        environment["MONLIGHT_METRICS_URL"] = url
    environment["MONLIGHT_API_KEY"] = key
    return subprocess.run([str(MONLIGHT), *arguments], env=environment, capture_output=True,
                          text=True, timeout=timeout)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_counter_delivers_exactly_one_metric(receiver) -> None:
    result = run("counter", "deploys_total", "--label", "env=prod", url=receiver.url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""
    (metric,) = receiver.metrics()
    assert metric["name"] == "deploys_total"
    assert metric["type"] == "counter"
    assert metric["value"] == 1
    assert metric["labels"] == {"env": "prod"}
    assert receiver.rejected() == []
    assert receiver.violations() == []


def test_histogram_and_gauge_values(receiver) -> None:
    assert run("histogram", "backup_seconds", "42.5", "--label", "host=db1",
               url=receiver.url).returncode == 0
    assert run("gauge", "queue_depth", "-3", url=receiver.url).returncode == 0

    values = {metric["name"]: metric["value"] for metric in receiver.metrics()}
    assert values == {"backup_seconds": 42.5, "queue_depth": -3}


def test_closed_port_fails_quickly_with_reason() -> None:
    started = time.monotonic()
    result = run("--timeout", "2", "counter", "x", url=closed_port_url())
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert elapsed < 2.5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "not delivered" in lines[0]
    assert "Couldn't connect" in lines[0] or "connect" in lines[0].lower()


def test_slow_service_is_bounded_by_timeout(receiver) -> None:
    receiver.control(delay=5)
    started = time.monotonic()
    result = run("--timeout", "1", "counter", "slow_total", url=receiver.url)

    assert result.returncode == 1
    assert time.monotonic() - started < 3
    assert "timed out" in result.stderr.lower()


def test_error_with_traceback_file_groups_by_last_frame(receiver, tmp_path) -> None:
    traceback = tmp_path / "err.txt"
    traceback.write_text(
        "Traceback (most recent call last):\n"
        '  File "/srv/jobs/nightly.py", line 30, in main\n'
        '  File "/srv/jobs/nightly.py", line 12, in parse\n'
        "ValueError: bad row\n")

    for _ in range(2):
        result = run("error", "--type", "ValueError", "--message", "bad row",
                     "--traceback-file", str(traceback), "--user", "42", url=receiver.url)
        assert result.returncode == 0, result.stderr

    first, second = receiver.errors()
    assert first["status"] == 201
    assert second["status"] == 200
    assert first["frame"]["line"] == "12"
    assert first["report"]["user_id"] == "42"


def test_wrong_key_exits_1_without_the_key(receiver) -> None:
    result = run("counter", "x", url=receiver.url, key="wrong-key-999")

    assert result.returncode == 1
    assert "401" in result.stderr
    assert "wrong-key-999" not in result.stderr


def test_check_reports_both_services(receiver) -> None:
    good = run("check", url=receiver.url)
    bad = run("check", url=receiver.url, key="nope")

    assert good.returncode == 0, good.stderr
    assert good.stdout.count("API key accepted") == 2
    assert bad.returncode == 1
    assert bad.stderr.count("API key rejected") == 2


@pytest.mark.parametrize("arguments, message", [
    (["--dry-run", "counter"], "unknown option '--dry-run'"),
    (["counter", "x", "--labl", "a=b"], "unknown option '--labl'"),
    (["check", "extra"], "unexpected argument 'extra'"),
    (["counter"], "NAME is required"),
    (["gauge", "g"], "VALUE is required"),
    (["counter", "x", "nan"], "invalid VALUE 'nan'"),
    (["counter", "x", "--label", "novalue"], "invalid label 'novalue'"),
    (["error", "--message", "m"], "--type is required"),
    (["error", "--type", "T", "--message", "m", "--extra", "{bad"], "invalid --extra"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    ([], "no command given"),
])
def test_bad_usage_exits_2(receiver, arguments, message) -> None:
    result = run(*arguments, url=receiver.url)

    assert result.returncode == 2
    assert message in result.stderr
    assert receiver.records() == []


def test_missing_configuration_names_the_variable() -> None:
    result = run("counter", "x", url=None)
    assert result.returncode == 2
    assert "MONLIGHT_METRICS_URL" in result.stderr

    result = run("counter", "x", url="notaurl")
    assert result.returncode == 2
    assert "MONLIGHT_METRICS_URL or --metrics-url" in result.stderr


def test_help_and_version() -> None:
    assert "usage: monlight" in run("--help").stdout
    assert run("--version").stdout.startswith("monlight ")
