#!/usr/bin/env python3
"""Print what arrived at the contract receiver, read from its record file.

`make demo` runs this after the example programs to show, in plain aligned
tables: the error groups by fingerprint, the metrics by name with count,
sum, p50 and p95 and their distinct label sets, and the rejected requests
and protocol violations.

    python3 summary.py RECORD_FILE

Percentiles use the nearest-rank method, as the metrics collector does:
p-th percentile = the value at rank ceil(p/100 * n) in ascending order.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from typing import Iterable, Optional

MESSAGE_WIDTH = 48
FRAME_WIDTH = 48
LABEL_SET_WIDTH = 72
LABEL_SETS_LISTED = 3  # per metric name; the rest are counted


def read_events(path: str) -> list[dict]:
    """Parse a JSON Lines record file, skipping a last line cut short by a concurrent write."""
    events = []
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.endswith("\n"):
                break
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    print(f"summary: skipping line {number} of {path}: {exc}", file=sys.stderr)
    return events


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


def nearest_rank(sorted_values: list[float], percent: float) -> float:
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def format_table(headers: list[str], rows: list[list[str]], numeric: Iterable[int] = ()) -> list[str]:
    """Lay out rows under headers, numeric columns right-aligned, two spaces between columns."""
    right = set(numeric)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def layout(cells: list[str]) -> str:
        parts = [
            str(cell).rjust(width) if index in right else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  " + "  ".join(parts).rstrip()

    return [layout(headers)] + [layout(row) for row in rows]


# ----------------------------------------------------------------- errors


def describe_frame(frame: Optional[dict]) -> str:
    if frame is None:
        return "(whole traceback)"
    return f"{frame['file']}:{frame['line']} ({frame['shape']})"


def summarize_errors(events: list[dict]) -> list[str]:
    errors = [event for event in events if event["kind"] == "error"]
    if not errors:
        return ["Errors: none"]

    # The first report of each fingerprint represents its group.
    groups: dict[str, dict] = {}
    counts: Counter = Counter()
    for event in errors:
        groups.setdefault(event["fingerprint"], event)
        counts[event["fingerprint"]] += 1

    rows = []
    for fingerprint, first in groups.items():
        report = first["report"]
        message_lines = report["message"].splitlines() or [""]
        rows.append([
            str(counts[fingerprint]),
            report["exception_type"],
            shorten(message_lines[0], MESSAGE_WIDTH),
            shorten(describe_frame(first.get("frame")), FRAME_WIDTH),
            fingerprint[:12],
        ])
    title = f"Errors: {len(errors)} reports in {len(groups)} groups"
    return [title] + format_table(["COUNT", "TYPE", "MESSAGE", "FRAME", "FINGERPRINT"], rows, numeric=[0])


# ---------------------------------------------------------------- metrics


def summarize_metrics(events: list[dict]) -> list[str]:
    items = [item for event in events if event["kind"] == "metrics" for item in event["metrics"]]
    if not items:
        return ["Metrics: none"]

    values: dict[str, list[float]] = {}
    types: dict[str, list[str]] = {}
    label_sets: dict[str, list[str]] = {}
    for item in items:
        name = item["name"]
        values.setdefault(name, []).append(item["value"])
        if item["type"] not in types.setdefault(name, []):
            types[name].append(item["type"])
        # Label sets are compared as JSON text in the order sent, because
        # the collector groups by that text and key order is significant.
        labels = json.dumps(item.get("labels") or {}, separators=(",", ":"), ensure_ascii=False)
        if labels not in label_sets.setdefault(name, []):
            label_sets[name].append(labels)

    rows = []
    for name, samples in values.items():
        ordered = sorted(samples)
        rows.append([
            name,
            "/".join(types[name]),
            str(len(samples)),
            format_number(sum(samples)),
            format_number(nearest_rank(ordered, 50)),
            format_number(nearest_rank(ordered, 95)),
            str(len(label_sets[name])),
        ])
    lines = [f"Metrics: {len(items)} items, {len(values)} names"]
    lines += format_table(["NAME", "TYPE", "COUNT", "SUM", "P50", "P95", "LABEL SETS"], rows,
                          numeric=[2, 3, 4, 5, 6])

    lines += ["", "Label sets by metric name"]
    label_rows = []
    for name, sets in label_sets.items():
        listed = [shorten(text, LABEL_SET_WIDTH) for text in sets[:LABEL_SETS_LISTED]]
        if len(sets) > LABEL_SETS_LISTED:
            listed.append(f"(+{len(sets) - LABEL_SETS_LISTED} more)")
        for index, text in enumerate(listed):
            label_rows.append([name if index == 0 else "", text])
    lines += format_table(["NAME", "LABELS (as sent)"], label_rows)
    return lines


# --------------------------------------------------------------- problems


def summarize_problems(events: list[dict]) -> list[str]:
    rejected = Counter(
        (event["path"], event["status"], event.get("injected", False))
        for event in events if event["kind"] == "rejected"
    )
    dropped = Counter(event["path"] for event in events if event["kind"] == "dropped")
    violations = Counter(
        (event["path"], event["violation"], event.get("value", ""))
        for event in events if event["kind"] == "violation"
    )

    lines = [f"Rejected requests: {sum(rejected.values())}"]
    if rejected:
        rows = [
            [path, str(status), "injected" if injected else "", str(count)]
            for (path, status, injected), count in sorted(rejected.items(), key=str)
        ]
        lines += format_table(["PATH", "STATUS", "FAULT", "COUNT"], rows, numeric=[1, 3])
    if dropped:
        lines.append(f"Dropped connections (injected): {sum(dropped.values())}")

    lines.append(f"Protocol violations: {sum(violations.values())}")
    if violations:
        rows = [
            [path, violation, shorten(str(value), 40), str(count)]
            for (path, violation, value), count in sorted(violations.items(), key=str)
        ]
        lines += format_table(["PATH", "VIOLATION", "VALUE", "COUNT"], rows, numeric=[3])
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarize a contract receiver record file.")
    parser.add_argument("record", metavar="RECORD_FILE", help="JSON Lines file written by receiver.py --record")
    args = parser.parse_args(argv)

    try:
        events = read_events(args.record)
    except OSError as exc:
        print(f"summary: cannot read {args.record}: {exc}", file=sys.stderr)
        return 1

    sections = [summarize_errors(events), summarize_metrics(events), summarize_problems(events)]
    print("\n\n".join("\n".join(section) for section in sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
