"""The test suite's time as the Markdown tables of docs/testing.md, from pytest's JUnit XML:
the N slowest tests and the sum per file, with the run's wall time beside the sum of test times.

    python -m pytest --durations=0 --junitxml=fast.xml        # nothing else running
    python benchmarks/durations_table.py fast.xml [--top 25]

JUnit records each test's setup, call and teardown together (one time per test), so the first table
is per test, not per phase. Under pytest-xdist the sum of test times is what the workers spent
together; the wall time (the ``time`` of the XML's test suite) is what a user waits for.
"""

from __future__ import annotations

import argparse
import collections
import sys
import xml.etree.ElementTree as ET


def read(path: str) -> tuple[list[tuple[float, str, str]], float, dict]:
    """(seconds, file, test) per test case, the suite's wall time, and its counts."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise SystemExit(f"durations_table: {path} is not a readable JUnit XML file ({e})")
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise SystemExit(f"durations_table: {path} holds no <testsuite>")
    cases = []
    for tc in suite.iter("testcase"):
        file = tc.get("file") or tc.get("classname", "").replace(".", "/") + ".py"
        cases.append((float(tc.get("time", 0)), file, tc.get("name", "")))
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return cases, float(suite.get("time", 0)), counts


def tables(cases, wall: float, counts: dict, top: int = 25, width: int = 100) -> str:
    out = [f"{counts['tests']} tests ({counts['skipped']} skipped, {counts['failures']} failed, "
           f"{counts['errors']} errors); wall time {wall:.0f} s, sum of test times {sum(c[0] for c in cases):.0f} s", "",
           "| s | test |", "|---:|---|"]
    for s, file, name in sorted(cases, reverse=True)[:top]:
        label = f"{file}::{name}"
        out.append(f"| {s:.1f} | `{label if len(label) <= width else label[:width - 3] + '...'}` |")
    per = collections.Counter()
    n = collections.Counter()
    for s, file, _ in cases:
        per[file] += s
        n[file] += 1
    out += ["", "| file | tests | s |", "|---|---:|---:|"]
    out += [f"| `{f}` | {n[f]} | {s:.1f} |" for f, s in per.most_common()]
    out.append(f"| **sum** | **{sum(n.values())}** | **{sum(per.values()):.0f}** |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("xml", help="pytest's --junitxml output")
    p.add_argument("--top", type=int, default=25, help="how many of the slowest tests to list (default 25)")
    a = p.parse_args(argv)
    if a.top < 1:
        p.error("--top must be >= 1")
    print(tables(*read(a.xml), top=a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
