"""Fixtures for the monlight Python suite: a contract receiver, client factories and log checks.

Every test that sends data gets its own receiver process (tests/receiver),
so records never leak between tests. The ``monlight_log`` fixture is used
by every test: it fails the test when the SDK logged a warning or an error
that the test did not declare with ``monlight_log.expect(pattern)``.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPOSITORY = PACKAGE_DIR.parents[1]
RECEIVER_DIR = REPOSITORY / "tests" / "receiver"

# The package is tested in place (run-tests.sh builds the extension there),
# ahead of any other monlight installed in the environment.
sys.path.insert(0, str(PACKAGE_DIR))
sys.path.insert(1, str(RECEIVER_DIR))

from harness import Receiver  # noqa: E402

from monlight import ErrorClient, MetricsClient  # noqa: E402



# ---------------------------------------------------------------- logging


class MonlightLog(logging.Handler):
    """Collects WARNING and ERROR records from the ``monlight`` loggers during one test."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.allowed: list[re.Pattern[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def expect(self, pattern: str) -> None:
        """Declare that warnings matching the regular expression are part of this test."""
        self.allowed.append(re.compile(pattern))

    def messages(self, logger_name: str | None = None) -> list[str]:
        return [record.getMessage() for record in list(self.records)
                if logger_name is None or record.name == logger_name]

    def matching(self, pattern: str) -> list[str]:
        return [message for message in self.messages() if re.search(pattern, message)]

    def unexpected(self) -> list[str]:
        return [f"{record.name} {record.levelname}: {record.getMessage()}" for record in list(self.records)
                if not any(pattern.search(record.getMessage()) for pattern in self.allowed)]


@pytest.fixture(autouse=True)
def monlight_log() -> Iterator[MonlightLog]:
    handler = MonlightLog()
    logger = logging.getLogger("monlight")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    unexpected = handler.unexpected()
    if unexpected:
        pytest.fail("the SDK logged unexpected warnings:\n  " + "\n  ".join(unexpected), pytrace=False)


# --------------------------------------------------------------- receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver that closes the connection after each response, like the services."""
    with Receiver(tmp_path / "records.jsonl") as running:
        yield running


@pytest.fixture
def keep_alive_receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver that keeps connections open, like a reverse proxy in front of the services."""
    with Receiver(tmp_path / "records.jsonl", keep_alive=True) as running:
        yield running


# ----------------------------------------------------------------- clients


@pytest.fixture
def make_metrics_client(receiver: Receiver) -> Iterator[Callable[..., MetricsClient]]:
    """Create MetricsClients for the receiver (or another URL); each is shut down after the test."""
    created: list[MetricsClient] = []

    def make(**overrides: Any) -> MetricsClient:
        arguments = {"base_url": receiver.url, "api_key": receiver.api_key, "flush_interval": 60.0}
        arguments.update(overrides)
        client = MetricsClient(**arguments)
        created.append(client)
        return client

    yield make
    for client in created:
        client.shutdown()


@pytest.fixture
def make_error_client(receiver: Receiver) -> Iterator[Callable[..., ErrorClient]]:
    """Create ErrorClients for the receiver (or another URL); each is freed after the test."""
    created: list[ErrorClient] = []

    def make(**overrides: Any) -> ErrorClient:
        arguments = {"base_url": receiver.url, "api_key": receiver.api_key, "project": "python-tests"}
        arguments.update(overrides)
        client = ErrorClient(**arguments)
        created.append(client)
        return client

    yield make
    for client in created:
        client._finalizer()  # frees the engine client, which delivers or drops its queue first


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening, so every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{placeholder.getsockname()[1]}"
