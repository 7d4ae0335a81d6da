"""Run the Python figures of `make bench` and write them as JSON.

    bench_python.py run --sink-url URL --output FILE [--only KEY,...] [--scale S]
    bench_python.py memory-child IMPLEMENTATION COUNT SINK_URL
    bench_python.py sentry-child MODE SINK_URL SCALE

bench/run.sh calls `run` with PYTHONPATH set to the freshly built
monlight package and to bench/ (for purepython_monlight and pybench).
The two *-child commands are the subprocesses that `run` starts itself.
A figure that fails is written with its error and the others still run:
a benchmark reports, it does not fail the build.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pybench import common, contract, errors, metrics, web  # noqa: E402

FIGURES: dict[str, Callable[[common.Context], dict[str, Any]]] = {
    "counter": lambda context: metrics.figure_record(context, "counter"),
    "histogram": lambda context: metrics.figure_record(context, "histogram"),
    "memory": metrics.figure_memory,
    "flush": metrics.figure_flush,
    "error_sync": errors.figure_error_sync,
    "error_async": errors.figure_error_async,
    "fastapi": web.figure_fastapi,
    "threads": metrics.figure_threads,
}


def run(arguments: argparse.Namespace) -> int:
    port = int(arguments.sink_url.rsplit(":", 1)[1])
    context = common.Context(arguments.sink_url, port, arguments.scale)
    selected = arguments.only.split(",") if arguments.only else list(FIGURES)
    unknown = [key for key in selected if key not in FIGURES and key != "contract"]
    if unknown:
        print(f"bench_python: unknown figure {', '.join(unknown)}; known: {', '.join(FIGURES)}, contract",
              file=sys.stderr)
        return 2

    output: dict[str, Any] = {"environment": common.environment(), "figures": [], "python": sys.version.split()[0]}
    for key in selected:
        if key == "contract":
            continue
        started = time.perf_counter()
        try:
            row = FIGURES[key](context)
        except Exception as exc:
            traceback.print_exc()
            row = {"key": key, "error": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(f"bench_python: {key} done in {row['seconds']} s", file=sys.stderr, flush=True)
        output["figures"].append(row)

    if "contract" in selected or not arguments.only:
        try:
            output["contract"] = contract.contract_check()
        except Exception as exc:
            traceback.print_exc()
            output["contract"] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    output["warnings"] = {"count": common.WARNINGS.count, "first": common.WARNINGS.first}

    Path(arguments.output).write_text(json.dumps(output, indent=1), encoding="utf-8")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="run the figures and write JSON")
    run_parser.add_argument("--sink-url", required=True, help="base URL of the benchmark sink")
    run_parser.add_argument("--output", required=True, help="JSON file to write")
    run_parser.add_argument("--only", help="comma-separated figure keys (default: all, plus the contract check)")
    run_parser.add_argument("--scale", type=float, default=1.0,
                            help="multiplier for the call counts, such as 0.1 for a quick trial")

    memory_parser = commands.add_parser("memory-child")
    memory_parser.add_argument("implementation", choices=("product", "purepython"))
    memory_parser.add_argument("count", type=int)
    memory_parser.add_argument("sink_url")

    sentry_parser = commands.add_parser("sentry-child")
    sentry_parser.add_argument("mode", choices=("sync", "async"))
    sentry_parser.add_argument("sink_url")
    sentry_parser.add_argument("scale", type=float)

    arguments = parser.parse_args()
    if arguments.command == "run":
        return run(arguments)
    if arguments.command == "memory-child":
        metrics.memory_child(arguments.implementation, arguments.count, arguments.sink_url)
        return 0
    errors.sentry_child(arguments.mode, arguments.sink_url, arguments.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
