"""Serve app.py with uvicorn on 127.0.0.1 and a free port, then check what the clients delivered.

Usage: python serve.py PORT_FILE

The port is written to PORT_FILE once uvicorn listens. On SIGTERM or
SIGINT uvicorn stops, and the end of the application's lifespan shuts
the metrics client down, which sends what it still buffers. The clients'
stats are printed then. The exit status is 1 when a client delivered
nothing, or has failed, dropped or pending items.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app import app, clients  # noqa: E402


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to main().

    Recent uvicorn releases (0.55 here) raise a caught SIGTERM again once
    they have shut down, which would end this process before it prints the
    stats.
    """

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # recent uvicorn releases
        yield


def write_port_when_started(server: uvicorn.Server, port_file: Path) -> None:
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        return  # the main thread reports the failure
    port = server.servers[0].sockets[0].getsockname()[1]
    temporary = port_file.with_name(port_file.name + ".tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, port_file)


def problems_in_stats() -> list[str]:
    problems = []
    for name in ("error_client", "metrics_client"):
        stats = clients[name].stats()
        print(f"python demo: {name}: " + ", ".join(f"{key} {value}" for key, value in stats.items()), flush=True)
        if stats["delivered"] == 0:
            problems.append(f"{name}: nothing delivered")
        for counter in ("dropped", "failed", "pending"):
            if stats[counter]:
                problems.append(f"{name}: {stats[counter]} {counter}")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python serve.py PORT_FILE", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="python demo: %(name)s %(levelname)s %(message)s")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = QuietServer(config)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: setattr(server, "should_exit", True))
    threading.Thread(target=write_port_when_started, args=(server, Path(sys.argv[1])), daemon=True).start()
    server.run()  # returns after SIGTERM or SIGINT, once the lifespan has ended

    # The error client sends from its background thread; give a report that
    # is still in flight a moment before the stats are read.
    deadline = time.monotonic() + 5
    while clients["error_client"].stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    problems = problems_in_stats()
    for problem in problems:
        print(f"python demo: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
