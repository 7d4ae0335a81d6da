"""Turn the raw results of one `make bench` run into the table and bench/results.md.

    report.py --run-dir build-bench/run --output bench/results.md

It reads what bench/run.sh left in the run directory (python.json,
send_floor.json, record_native.jsonl, callgrind.<mode>.<N> files and
luajit.txt), prints the table and writes the Markdown page. A file that
is missing because its step failed shows as "not measured". Every ratio
is "times better than the alternative", so a bigger number is better for
the product. The send-floor row is the exception: it shows the product's
time as a multiple of the floor, and its target is a maximum.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any, Optional

REPOSITORY = Path(__file__).resolve().parent.parent
CALLGRIND_FUNCTIONS = {"record": "monlight_metrics_client_record", "json": "monlight_metrics_client_record_json"}


# ---------------------------------------------------------------- inputs


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def callgrind_total(path: Path) -> Optional[int]:
    """Return the instructions a callgrind output file collected."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE) or re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def callgrind_functions(path: Path, calls: int, limit: int = 8) -> list[tuple[str, float]]:
    """Return the functions with the most instructions (self cost), per recorded metric."""
    try:
        output = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)], capture_output=True,
                                text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in output.splitlines():
        match = re.match(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(\S+)", line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        function = match.group(2).rsplit(":", 1)[-1]
        rows.append((function, int(match.group(1).replace(",", "")) / calls))
    return rows[:limit]


def callgrind_figures(run_dir: Path) -> dict[str, Any]:
    """Instructions per recorded metric: (Ir(N2) - Ir(N1)) / (N2 - N1), per API function."""
    result: dict[str, Any] = {}
    for mode in CALLGRIND_FUNCTIONS:
        files = [path for path in run_dir.glob(f"callgrind.{mode}.*") if path.suffix[1:].isdigit()]
        files.sort(key=lambda path: int(path.suffix[1:]))
        if len(files) < 2:
            continue
        (small, large) = files[0], files[-1]
        n1, n2 = int(small.suffix[1:]), int(large.suffix[1:])
        ir1, ir2 = callgrind_total(small), callgrind_total(large)
        if ir1 is None or ir2 is None:
            continue
        result[mode] = {
            "per_metric": (ir2 - ir1) / (n2 - n1),
            "n1": n1, "n2": n2, "ir1": ir1, "ir2": ir2,
            "top": callgrind_functions(large, n2),
        }
    return result


def native_timings(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def luajit_rows(path: Path) -> tuple[Optional[str], list[tuple[str, str, float]]]:
    """Parse bindings/lua/bench.lua output: (header line, [(case, path, ns per call)])."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, []
    rows = []
    for line in lines:
        match = re.match(r"^counter, 3 labels, (.+?),\s+(C API|FFI):\s+([\d.]+) ns/call", line)
        if match:
            rows.append((match.group(1), match.group(2), float(match.group(3))))
    return (lines[0] if lines else None), rows


# --------------------------------------------------------------- machine


def load_average(path: Path) -> str:
    """Return the 1-minute load average from a copy of /proc/loadavg, or "unknown"."""
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return "unknown"


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPOSITORY), "status", "--porcelain", "--", "core",
                                  "bindings/python", "bindings/lua"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, changed = "unknown", ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": model,
        "kernel": platform.release(),
        "commit": commit + (" with uncommitted changes in core/ or bindings/" if changed else ""),
    }


# ---------------------------------------------------------------- table


def format_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "calls/s":
        return f"{value / 1000:,.0f}k calls/s"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def python_rows(figures: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for figure in figures:
        if "error" in figure:
            rows.append([figure["key"], "error", "error", "", "", "", f"not measured: {figure['error']}"])
            continue
        unit = figure["unit"]
        product, alternative = figure["product"], figure["alternative"]
        ratio = figure["ratio"]
        if figure["better"] == "lower":
            target = f">= {figure['target']:g}x"
            met = ratio >= figure["target"]
        else:
            target = f"scales: >= {figure['scaling_floor']:g}x of 1 thread in every round"
            met = figure["product_worst_vs_single"] >= figure["scaling_floor"]
        second = format_value(figure["second"], unit) if figure["second"] is not None else "n/a"
        if figure["second"] is not None:
            second += f" ({figure['second_name']})"
        rows.append([figure["title"], format_value(product, unit), format_value(alternative, unit), second,
                     f"{ratio:.1f}x", target, "met" if met else "missed"])
    return rows


def c_rows(callgrind: dict[str, Any], floor: Optional[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for mode, function in CALLGRIND_FUNCTIONS.items():
        if mode not in callgrind:
            rows.append([f"instructions per `{function}`", "not measured", "", "", "", "report", ""])
            continue
        data = callgrind[mode]
        rows.append([f"instructions per `{function}` (3 labels)", f"{data['per_metric']:,.0f} Ir", "", "", "",
                     "report", ""])
    if floor and floor.get("engine_us") and floor.get("bare_us"):
        ratio = median([engine / bare for engine, bare in zip(floor["engine_samples"], floor["bare_samples"])])
        rows.append(["`monlight_error_client_send` vs bare libcurl POST (keep-alive)",
                     f"{floor['engine_us']:.1f} µs", f"{floor['bare_us']:.1f} µs (bare libcurl)", "",
                     f"{ratio:.2f}x of floor", "<= 1.5x of floor", "met" if ratio <= 1.5 else "missed"])
    else:
        rows.append(["`monlight_error_client_send` vs bare libcurl POST", "not measured", "", "", "",
                     "<= 1.5x of floor", ""])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[index]) for row in [header] + rows) for index in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# --------------------------------------------------------------- details


def details_section(python: Optional[dict[str, Any]], callgrind: dict[str, Any], floor: Optional[dict[str, Any]],
                    native: list[dict[str, Any]]) -> str:
    parts = []
    figures = {figure["key"]: figure for figure in (python or {}).get("figures", []) if "error" not in figure}

    for key, figure in figures.items():
        details = figure["details"]
        lines = [f"### {figure['title']}", ""]
        if details.get("note"):
            lines.append(f"- How: {details['note']}.")
        samples = details.get("samples", {})
        for name, values in samples.items():
            shown = ", ".join(f"{value:,.1f}" for value in values)
            lines.append(f"- Rounds, {name} ({figure['unit']}): {shown}")
        if key == "flush":
            wall = details["wall_ms"]
            lines.append(f"- Wall time of flush() (ms, median): product {wall['product']:.2f}, "
                         f"pure-Python {wall['purepython']:.2f}.")
            lines.append(f"- Metrics the sink accepted from the product: {details['product_delivered']} "
                         f"of {details['product_expected']}.")
        if key == "error_async":
            for name, summary in details["loop"].items():
                lines.append(f"- {name}: in-coroutine {summary['busy_us']:.1f} µs, loop-thread CPU "
                             f"{summary['loop_cpu_us']:.1f} µs, await until return {summary['wall_us']:.1f} µs, "
                             f"{summary['steps']:.1f} steps per report.")
        if key == "counter" and details.get("breakdown"):
            breakdown = details["breakdown"]
            if "error" in breakdown:
                lines.append(f"- Breakdown of the product's call not measured: {breakdown['error']}.")
            else:
                lines.append("- Breakdown of the product's call (ns, best of 5): " + "; ".join(
                    f"{part} {value:.0f}" for part, value in breakdown.items()) + ".")
        if key == "threads":
            scaling = details["product_scaling"]
            lines.append("- Product rate with N threads / rate with 1 thread, per round: " + "; ".join(
                f"{threads} threads " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
                for threads, ratios in scaling.items()) + ".")
        if key == "fastapi":
            per_request = details["per_request_us"]
            lines.append("- Per request (µs, median): " + ", ".join(
                f"{name} {value:.1f}" for name, value in per_request.items()))
        if key == "threads":
            by_threads = details["by_threads"]
            lines.append("")
            lines.append("| implementation | 1 thread | 2 threads | 4 threads | 8 threads |")
            lines.append("|---|---|---|---|---|")
            for name, rates in by_threads.items():
                cells = [f"{rates[str(count)] / 1000:,.0f}k" if str(count) in rates else
                         f"{rates[count] / 1000:,.0f}k" for count in (1, 2, 4, 8)]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            engine_rows = [entry for entry in native if entry.get("threads")]
            if engine_rows:
                cells = {entry["threads"]: f"{1e6 / entry['ns_per_call']:,.0f}k" for entry in engine_rows}
                lines.append("| engine alone, C threads (`record_json`) | "
                             + " | ".join(cells.get(count, "") for count in (1, 2, 4, 8)) + " |")
            lines.append("")
            lines.append("Total calls per second, all threads together. `cffi_noop` calls "
                         "`monlight_version()`, a C function that does nothing, through the same cffi "
                         "module: it isolates what releasing and retaking the GIL around every call costs "
                         "once other threads wait for the GIL.")
        parts.append("\n".join(lines))

    if callgrind:
        lines = ["### Instructions per recorded metric (callgrind)", ""]
        for mode, data in callgrind.items():
            function = CALLGRIND_FUNCTIONS[mode]
            lines.append(f"- `{function}`: ({data['ir2']:,} - {data['ir1']:,}) / ({data['n2']:,} - "
                         f"{data['n1']:,}) = {data['per_metric']:,.0f} instructions per metric. Self cost per "
                         "metric of the top functions: " + ", ".join(
                             f"{name} {cost:,.0f}" for name, cost in data["top"]) + ".")
        single = [entry for entry in native if not entry.get("threads")]
        for entry in single:
            lines.append(f"- Wall time in C, `{entry['mode']}` mode, one thread: {entry['ns_per_call']:.0f} ns "
                         f"per call over {entry['calls']:,} calls.")
        parts.append("\n".join(lines))

    if floor:
        parts.append("\n".join([
            "### Error report send against the libcurl floor", "",
            f"- Body: {floor['body_bytes']} bytes, {floor['calls']} calls per round, {floor['rounds']} rounds; "
            f"failures: engine {floor['engine_failures']}, bare {floor['bare_failures']}.",
            "- Rounds, engine (µs): " + ", ".join(f"{value:.1f}" for value in floor["engine_samples"]),
            "- Rounds, bare libcurl (µs): " + ", ".join(f"{value:.1f}" for value in floor["bare_samples"]),
        ]))
    return "\n\n".join(parts)


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="directory with the raw results of bench/run.sh")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    arguments = parser.parse_args()
    run_dir = Path(arguments.run_dir)

    python = load_json(run_dir / "python.json")
    floor = load_json(run_dir / "send_floor.json")
    callgrind = callgrind_figures(run_dir)
    native = native_timings(run_dir / "record_native.jsonl")
    luajit_header, luajit = luajit_rows(run_dir / "luajit.txt")
    host = machine()

    header = ["figure", "product", "pure-Python", "second alternative", "ratio", "target", "met?"]
    rows = python_rows(python["figures"]) if python else [["Python figures", "not measured", "", "", "", "", ""]]
    rows += c_rows(callgrind, floor)
    print(plain_table(header, rows))

    python_version = python["python"] if python else platform.python_version()
    page = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` on {host['date']}: {host['cpus']} CPUs ({host['cpu_model']}), "
        f"Linux {host['kernel']}, Python {python_version}, commit {host['commit']}; 1-minute load average "
        f"{load_average(run_dir / 'loadavg-start')} at the start and {load_average(Path('/proc/loadavg'))} "
        "at the end. "
        "bench/README.md explains each figure; a ratio is how many times better the product is than "
        "the pure-Python alternative (bigger is better), except the last row, which compares with the "
        "transport floor.",
        "",
        markdown_table(header, rows),
    ]
    if luajit:
        page += ["", "## LuaJIT", "", f"`bindings/lua/bench.lua`: {luajit_header}.", ""]
        cases: dict[str, dict[str, float]] = {}
        for case, path, value in luajit:
            cases.setdefault(case, {})[path] = value
        lua_rows = []
        for case, paths in cases.items():
            ratio = paths["C API"] / paths["FFI"] if "FFI" in paths and "C API" in paths else None
            lua_rows.append([case, f"{paths.get('C API', 0):.0f} ns", f"{paths.get('FFI', 0):.0f} ns"
                             if "FFI" in paths else "n/a", f"{ratio:.1f}x" if ratio else ""])
        page.append(markdown_table(["counter(), 3 labels", "C API path", "FFI path", "FFI speed-up"], lua_rows))
        print()
        print(plain_table(["LuaJIT counter(), 3 labels", "C API path", "FFI path", "FFI speed-up"], lua_rows))
    if python:
        contract = python.get("contract", {})
        page += ["", "## Checks", "",
                 f"- Contract receiver (tests/receiver), both packages: {contract.get('metrics')} metrics and "
                 f"{contract.get('errors')} error reports accepted, {contract.get('rejected')} rejected, "
                 f"{contract.get('violations')} contract violations: "
                 f"{'passed' if contract.get('passed') else 'FAILED'}.",
                 f"- Warnings logged by either package during the run: {python['warnings']['count']}"
                 + (f" (first: {python['warnings']['first']})" if python["warnings"]["first"] else "") + ".",
                 f"- Product under test: `{python['environment']['native_module']}`."]
    page += ["", "## Details", "", details_section(python, callgrind, floor, native), ""]
    Path(arguments.output).write_text("\n".join(page), encoding="utf-8")
    print(f"\nbench: wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
