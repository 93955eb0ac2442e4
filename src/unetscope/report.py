"""``DIR/report.html``: every experiment of a run directory with its figures, findings and settings.

A single static file with relative links to the figure PNGs: it opens from the file system with no
server.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .errors import UnetscopeError

__all__ = ["write_report", "ReportError"]


class ReportError(UnetscopeError, ValueError):
    """A folder that holds no results to report."""


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.findings { background: #f4f7fb; border-left: 4px solid #4a78b5; padding: .6em 1em; }
figure { display: inline-block; margin: .5em; vertical-align: top; max-width: 520px; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .85em; } td, th { border: 1px solid #ddd; padding: .2em .5em; text-align: left; }
code { background: #f2f2f2; padding: 0 .2em; } nav a { margin-right: 1em; }
"""


def _table(d: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(json.dumps(v, default=float))}</code></td></tr>"
                    for k, v in d.items())
    return f"<table>{cells}</table>"


def write_report(out_dir) -> Path:
    """Render findings and figures of every run in ``out_dir`` and write ``out_dir/report.html``."""
    from .experiments import EXPERIMENTS, ORDER, render
    from .store import ResultStore, safe_run_name

    out_dir = Path(out_dir)
    db = out_dir / "results.sqlite"
    if not db.exists():
        raise ReportError(f"{out_dir} holds no results.sqlite: run `unetscope sweep` or `unetscope reproduce` into it first")
    with ResultStore(db) as store:
        runs = store.runs()
    for r in runs:
        safe_run_name(r["run"])  # names from the database become paths: refuse unsafe ones before writing
    shortcuts = [json.loads((out_dir / "findings" / f"{r['run']}.json").read_text()) for r in runs
                 if r["experiment"] == "shortcut" and (out_dir / "findings" / f"{r['run']}.json").exists()]
    interrupted = [r["run"] for r in runs if r["experiment"] == "shortcut"
                   and not (out_dir / "findings" / f"{r['run']}.json").exists()]
    runs = [r for r in runs if r["experiment"] in EXPERIMENTS]
    if not runs and not shortcuts:
        raise ReportError(f"{db} holds no experiment or shortcut runs yet")
    runs.sort(key=lambda r: (ORDER.index(r["experiment"]) if r["experiment"] in ORDER else 99, r["created"]))
    summaries = [render(out_dir, r["run"]) for r in runs]
    first = summaries[0] if summaries else shortcuts[0]
    m, s = first["model"], first["sampler"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>unetscope report</title><style>{CSS}</style></head><body>",
             "<h1>unetscope report</h1>",
             f"<p>Model <code>{html.escape(str(m['name']))}</code> (K = {m['K']} blocks, {html.escape(str(m['schedule']))} "
             f"schedule, T = {m['T']}); sampler {html.escape(s['method'])} with S = {s['steps']} steps, guidance {s['guidance']}. "
             f"Every number compares an intervened output with the unintervened one from the same noise "
             f"(the method of <i>Unraveling the Temporal Dynamics of the Unet in Diffusion Models</i>).</p>",
             "<nav>" + "".join(f"<a href='#{html.escape(x['run'])}'>{html.escape(x['experiment'])}</a>" for x in summaries)
             + "".join(f"<a href='#{html.escape(x['run'])}'>shortcut {html.escape(str(x.get('name') or ''))}</a>" for x in shortcuts)
             + "</nav>"]
    if interrupted:  # said, not silently left out
        parts.append("<p class='findings'>Interrupted shortcut runs with no summary (run their command again): "
                     + ", ".join(f"<code>{html.escape(r)}</code>" for r in interrupted) + "</p>")
    for x in summaries:
        ev = x["evaluations"]
        parts.append(f"<h2 id='{html.escape(x['run'])}'>{html.escape(x['title'])} "
                     f"<small>(<code>{html.escape(x['experiment'])}</code>; the paper's {html.escape(x['paper'])})</small></h2>")
        parts.append(f"<p class='findings'>{html.escape(x['findings'].get('text', ''))}</p>")
        for f in x["figures"]:
            parts.append(f"<figure><a href='{html.escape(f['file'])}'><img src='{html.escape(f['file'])}' "
                         f"alt='{html.escape(f['caption'])}'></a><figcaption>{html.escape(f['caption'])}</figcaption></figure>")
        if ev:
            parts.append(f"<p>{x['samples']} samples. U-Net evaluations spent: {ev.get('evaluations_spent')}, "
                         f"the minimum for this grid: {ev.get('evaluations_minimum')}, running every plan from x_S: "
                         f"{ev.get('evaluations_naive')}; {ev.get('seconds', 0):.0f} s of sampling.</p>")
        details = {k: v for k, v in x["findings"].items() if k != "text"}
        parts.append(f"<details><summary>Settings and numbers</summary>{_table(x['params'])}<br>{_table(details)}"
                     f"<p>Run <code>{html.escape(x['run'])}</code>, findings in <code>findings/{html.escape(x['run'])}.json</code>.</p></details>")
    for x in shortcuts:
        parts.append(f"<h2 id='{html.escape(x['run'])}'>Shortcut sampler <small>(<code>{html.escape(str(x.get('name') or ''))}</code>; "
                     "the paper's Figs. 11-13, 22)</small></h2>")
        parts.append(f"<p class='findings'>On {x['samples']} samples: measured time saving {x['time_saving']:.1%}, "
                     f"compute saving (executed FLOPs) {x['compute_saving']:.1%}, mean SSIM {x['ssim_mean']:.3f} "
                     f"(mean absolute deviation {x['ssim_mad']:.3f}), mean PSNR {x['psnr_mean']:.2f} dB; "
                     f"{x['nfe_shortcut']} of {x['nfe_baseline']} U-Net evaluations.</p>")
        for f in x["figures"]:
            parts.append(f"<figure><a href='{html.escape(f)}'><img src='{html.escape(f)}' alt='{html.escape(f)}'></a>"
                         f"<figcaption>{html.escape(Path(f).stem.replace('_', ' '))}</figcaption></figure>")
        parts.append(f"<details><summary>Schedule</summary><pre>{html.escape(json.dumps(x['schedule'], indent=1))}</pre></details>")
    parts.append("</body></html>")
    path = out_dir / "report.html"
    tmp = out_dir / "report.html.tmp"  # written last and atomically: a killed report leaves the old one whole
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
