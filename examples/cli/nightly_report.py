"""A small nightly job that fails: the monlight CLI demo reports its crash.

It sums invoice totals and crashes on a malformed record, deep enough in
the call stack that its traceback has real frames for the error tracker
to group by.
"""

import sys

INVOICES = [
    {"id": 1, "total": "12.50"},
    {"id": 2, "total": "7.25"},
    {"id": 3, "total": "n/a"},
]


def parse_total(invoice):
    return float(invoice["total"])


def sum_totals(invoices):
    return sum(parse_total(invoice) for invoice in invoices)


def main():
    skip_bad = "--skip-bad" in sys.argv
    invoices = [i for i in INVOICES if i["total"] != "n/a"] if skip_bad else INVOICES
    print(f"total: {sum_totals(invoices):.2f}")


if __name__ == "__main__":
    main()
