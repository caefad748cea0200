"""Turn the fault tests' report rows into the Markdown table of docs/reliability.md.

    ESGD_FAULT_REPORT=/tmp/faults.jsonl .venv/bin/python -m pytest -q tests/faults
    .venv/bin/python scripts/fault_table.py /tmp/faults.jsonl

Each fault test appends one JSON row (tests.service_harness.report_fault): the fault, how
many were injected, what was lost, the recovery time and what it spans, and the test's id.
"""
from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    print("| fault | count | lost | recovery | reproduce |")
    print("|---|---|---|---|---|")
    for r in rows:
        recovery = f"{r['recovery_s']:.2f} s ({r['recovery']})" if r.get("recovery") else f"{r['recovery_s']:.2f} s"
        print(f"| {r['fault']} | {r['count']} | {r['lost']} | {recovery} | `pytest {r['test']}` |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fault_table.py FAULTS.jsonl")
    sys.exit(main(sys.argv[1]))
