"""The frontier searches' results side by side: for each folder written by ``unetscope shortcut search
--frontier``, the chosen recipe, the best solver alone and the best cache alone on the held-out seeds
(mean SSIM with the reference, its 10th percentile and minimum; time as a fraction of the
reference's, all timed together), as a Markdown table.

    python benchmarks/frontier_table.py results/frontier-default-0.90 results/frontier-default-0.95 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(folder: Path) -> list[str]:
    rec = json.loads((folder / "frontier.json").read_text())
    held = rec.get("held_out")
    if held is None:
        raise SystemExit(f"{folder}: no held-out seeds were measured")

    def cell(key: str, label: str | None) -> str:
        if key not in held or label is None:
            return "-"
        h = held[key]
        return (f"{label}: {h['ssim_mean']:.3f} (p10 {h['ssim_p10']:.3f}, min {h['ssim_min']:.3f}) at "
                f"{h['time_fraction']:.3f} ({1 / h['time_fraction']:.1f}x)")

    ref = rec["reference"]
    s = rec["seeds"]
    return [folder.name, rec["target"], f"{ref['scheduler']}:{ref['steps']}",
            cell("chosen", rec["chosen"]["label"]),
            cell("best solver alone", rec["best_solver"] and rec["best_solver"]["label"]),
            cell("best cache alone", rec["best_cache"] and rec["best_cache"]["label"]),
            f"{s['calibration']}/{s['validation']}/{s['held_out']}",
            f"{rec['evaluations']} ({rec['evaluations_minimum']})", f"{rec['seconds_search']:.0f}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    a = p.parse_args(argv)
    head = ["run", "target", "reference", "chosen (held out: SSIM, time of the reference's)", "best solver alone",
            "best cache alone", "seeds cal/val/held", "evaluations (minimum)", "search s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for f in a.folders:
        if not (f / "frontier.json").is_file():
            print(f"{f}: no frontier.json", file=sys.stderr)
            return 2
        print("| " + " | ".join(row(f)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
