#!/usr/bin/env python3
"""Start, query and stop the contract receiver (receiver.py) for tests.

Python tests use the `Receiver` class, a context manager that runs the
receiver as a child process on a free loopback port and reads what it
recorded:

    with Receiver(keep_alive=True) as receiver:
        ...  # point the SDK at receiver.url with receiver.api_key
        receiver.wait_for(lambda: receiver.metrics(), timeout=5)

Shell scripts (the Makefile demo, the Lua and Ruby suites) use the CLI,
which starts a detached receiver and stops it by the PID it wrote:

    python3 harness.py start --record R --pid-file P --port-file Q [--keep-alive]
    python3 harness.py stop --pid-file P

Standard library only, like receiver.py, so that any python3 >= 3.9 runs it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

RECEIVER_SCRIPT = Path(__file__).resolve().with_name("receiver.py")
DEFAULT_API_KEY = "test-key"
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 5.0  # seconds for one request to the receiver's own endpoints


class ReceiverError(RuntimeError):
    """The receiver failed to start, or rejected a control request."""


# ------------------------------------------------------- process handling


def build_command(python: str, api_key: str, record: Path, port_file: Path, keep_alive: bool,
                  parent_pid: Optional[int] = None) -> list[str]:
    command = [
        python, str(RECEIVER_SCRIPT), "--port", "0", "--api-key", api_key,
        "--record", str(record), "--port-file", str(port_file),
        "--keep-alive" if keep_alive else "--close",
    ]
    if parent_pid is not None:
        command += ["--parent-pid", str(parent_pid)]
    return command


def log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_until_ready(process: subprocess.Popen, port_file: Path, log_path: Path, timeout: float) -> int:
    """Wait until the receiver has written its port and responds to GET /health. Returns the port.

    Raises ReceiverError with the end of the receiver's log when it exits
    or is not ready within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    port: Optional[int] = None
    last_problem = "the port file was not written"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ReceiverError(
                f"receiver exited with status {process.returncode} before it was ready. "
                f"End of its log {log_path}:\n{log_tail(log_path)}"
            )
        if port is None:
            port = read_port_file(port_file)
        if port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0) as response:
                    if response.status == 200:
                        return port
            except (urllib.error.URLError, OSError) as exc:
                last_problem = f"GET /health failed: {exc}"
        time.sleep(0.02)
    raise ReceiverError(
        f"receiver was not ready within {timeout:g} s ({last_problem}). "
        f"End of its log {log_path}:\n{log_tail(log_path)}"
    )


def read_port_file(port_file: Path) -> Optional[int]:
    try:
        text = port_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Send SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


# --------------------------------------------------------- the test API


class Receiver:
    """A receiver running as a child process, with helpers to read what it recorded.

    Without `record_path`, the files live in a new temporary directory that
    stop() removes; pass a path to keep the record after the test. The
    receiver also stops by itself when this process exits.
    """

    def __init__(self, record_path: Optional[str | os.PathLike] = None, *, api_key: str = DEFAULT_API_KEY,
                 keep_alive: bool = False, python: Optional[str] = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT):
        self.api_key = api_key
        self.keep_alive = keep_alive
        self.python = python or sys.executable
        self.start_timeout = start_timeout
        self._temporary_dir: Optional[Path] = None
        if record_path is None:
            self._temporary_dir = Path(tempfile.mkdtemp(prefix="monlight-receiver-"))
            record_path = self._temporary_dir / "records.jsonl"
        self.record_path = Path(record_path)
        self.log_path = self.record_path.with_name(self.record_path.name + ".log")
        self.port_file = self.record_path.with_name(self.record_path.name + ".port")
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    @property
    def url(self) -> str:
        """Base URL, such as http://127.0.0.1:40123, for the SDK's endpoint settings."""
        if self.port is None:
            raise ReceiverError("the receiver is not running, so it has no URL: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def start(self) -> "Receiver":
        """Start the receiver and wait until it responds to GET /health. Raises ReceiverError."""
        if self.process is not None:
            return self
        command = build_command(self.python, self.api_key, self.record_path, self.port_file,
                                self.keep_alive, parent_pid=os.getpid())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        atexit.register(self.stop)
        try:
            self.port = wait_until_ready(self.process, self.port_file, self.log_path, self.start_timeout)
        except ReceiverError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the receiver by its PID: SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process is not None:
            stop_process(self.process, timeout)
            atexit.unregister(self.stop)
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ---------------------------------------------------------- records

    def records(self) -> list[dict]:
        """Parse the record file: every event so far, oldest first."""
        try:
            text = self.record_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # The receiver writes whole lines, but a read can still overlap a
        # write, so a last line without its newline is left for next time.
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

    def events(self, kind: str) -> list[dict]:
        return [event for event in self.records() if event["kind"] == kind]

    def errors(self) -> list[dict]:
        """Accepted error events; each event's "report" is the body the client sent."""
        return self.events("error")

    def metrics(self) -> list[dict]:
        """Accepted metric items from every batch, in the order they arrived."""
        return [item for event in self.events("metrics") for item in event["metrics"]]

    def rejected(self) -> list[dict]:
        return self.events("rejected")

    def violations(self) -> list[dict]:
        return self.events("violation")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02,
                 description: Optional[str] = None) -> Any:
        """Call `predicate` until it returns a true value, and return that value.

        Raises TimeoutError after `timeout` seconds, with the number of
        events recorded so far.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                condition = description or getattr(predicate, "__name__", "the condition")
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {condition}, "
                    f"with {len(self.records())} events recorded in {self.record_path}"
                )
            time.sleep(interval)

    # ---------------------------------------------------------- control

    def control(self, **settings: Any) -> dict:
        """POST settings to /__control__, e.g. control(fail_next=2, status=503). Returns the fault state.

        Raises ReceiverError with the receiver's detail if it rejects them.
        """
        request = urllib.request.Request(
            f"{self.url}/__control__",
            data=json.dumps(settings).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise ReceiverError(f"control request {settings} was rejected with {exc.code}: {detail}") from None


# ------------------------------------------------------------------ CLI


def start_detached(args: argparse.Namespace) -> int:
    record = Path(args.record)
    port_file = Path(args.port_file)
    log_path = Path(args.log) if args.log else record.with_name(record.name + ".log")
    command = build_command(args.python, args.api_key, record, port_file, args.keep_alive)

    # A new session keeps the receiver running after this command and its
    # shell have exited, and out of the shell's job control signals.
    try:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
    except OSError as exc:
        print(f"harness: cannot start the receiver: {exc}", file=sys.stderr)
        return 1
    try:
        port = wait_until_ready(process, port_file, log_path, args.timeout)
    except ReceiverError as exc:
        stop_process(process, DEFAULT_STOP_TIMEOUT)
        print(f"harness: {exc}", file=sys.stderr)
        return 1

    write_atomically(Path(args.pid_file), f"{process.pid}\n")
    print(f"http://127.0.0.1:{port}", flush=True)
    return 0


def stop_detached(args: argparse.Namespace) -> int:
    pid_file = Path(args.pid_file)
    if not pid_file.exists():
        # Stopping twice, e.g. from a shell trap, is not an error.
        print(f"harness: no PID file {pid_file}, so there is nothing to stop", file=sys.stderr)
        return 0
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        print(f"harness: cannot read a PID from {pid_file}: {exc}", file=sys.stderr)
        return 1

    if not is_receiver_process(pid):
        # The PID file is stale: the receiver is gone and the PID may
        # have been reused by an unrelated process, which must not be signalled.
        print(f"harness: process {pid} is not a running receiver, so {pid_file} is stale and is removed",
              file=sys.stderr)
        pid_file.unlink(missing_ok=True)
        return 0

    os.kill(pid, signal.SIGTERM)
    if not wait_for_exit(pid, args.timeout):
        print(f"harness: receiver {pid} did not exit within {args.timeout:g} s of SIGTERM; sending SIGKILL",
              file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, args.timeout)
    pid_file.unlink(missing_ok=True)
    return 0


def is_receiver_process(pid: int) -> bool:
    """Tell whether `pid` is alive and runs receiver.py (checked through /proc where it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours to stop
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # NOTE: without /proc (macOS) the command line is not checked
    try:
        arguments = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return any(argument.endswith(b"receiver.py") for argument in arguments)


def wait_for_exit(pid: int, timeout: float) -> bool:
    # The detached receiver is not our child, so waitpid() cannot be used.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_receiver_process(pid):
            return True
        time.sleep(0.05)
    return False


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    temporary.write_text(text, encoding="ascii")
    os.replace(temporary, path)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Start or stop a detached contract receiver for shell scripts.")
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("start", help="start a receiver and print its base URL once it responds to GET /health")
    start.add_argument("--record", required=True, metavar="FILE", help="JSON Lines record file to append to")
    start.add_argument("--pid-file", required=True, metavar="FILE", help="file to write the receiver's PID to")
    start.add_argument("--port-file", required=True, metavar="FILE", help="file the receiver writes its port to")
    start.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"key that X-API-Key must equal (default {DEFAULT_API_KEY})")
    start.add_argument("--keep-alive", action="store_true",
                       help="keep connections open between requests (default: close after each response)")
    start.add_argument("--log", metavar="FILE", help="receiver log file (default: the record file's name plus .log)")
    start.add_argument("--python", default=sys.executable, help="interpreter that runs receiver.py (default: this one)")
    start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, metavar="SECONDS",
                       help=f"give up if the receiver is not ready within this time (default {DEFAULT_START_TIMEOUT:g})")

    stop = commands.add_parser("stop", help="stop the receiver whose PID is in the PID file")
    stop.add_argument("--pid-file", required=True, metavar="FILE", help="file written by start")
    stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT, metavar="SECONDS",
                      help=f"send SIGKILL if the receiver has not exited this long after SIGTERM (default {DEFAULT_STOP_TIMEOUT:g})")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "start":
        return start_detached(args)
    return stop_detached(args)


if __name__ == "__main__":
    sys.exit(main())
